//! farmctl: declarative plan/apply for server farms over SSH.
#![recursion_limit = "256"]

/// Writes a line to stderr, ignoring a closed pipe: a reader that went away
/// (`farmctl apply | head`) must never stop an apply half-way.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
// Pure layers: the farm file, observed state, rewriting, planning, views.
pub mod edit;
pub mod import;
pub mod error;
pub mod judge;
pub mod watch;
pub mod farm;
pub mod live;
pub mod plan;
pub mod render;
// The edges: the only layer that touches hosts, and the executor over it.
pub mod apply;
pub mod fanout;
pub mod metrics;
pub mod logging;
pub mod snapshot;
pub mod transport;
pub mod workstation;
// The library pipeline, then the command line on top of it.
pub mod pipeline;
pub mod cli;
pub mod cmd;
