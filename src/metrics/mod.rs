//! Numbers from outside farmctl, and farmctl's own: what a Prometheus server
//! answers to a rollout's queries (`prometheus`), and the watcher's metrics,
//! served for Prometheus to scrape (`exporter`). I/O, like `transport`, but
//! towards monitoring, never towards a farm host.

pub mod exporter;
pub mod prometheus;
