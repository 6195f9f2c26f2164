//! The watcher's own numbers, for Prometheus to scrape: per service, the
//! active member, heartbeat latency and misses, confirmations asked and
//! given, failovers and how long they took, the lease (held, its token, and
//! whether its store answers) and the age of each standby's last sync. Served
//! at `/metrics` (OpenMetrics text) with `/healthz` beside it, which is 200
//! while the watcher holds or stands by for every service and can reach each
//! service's lease store.

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Svc {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Member {
    service: String,
    member: String,
}

/// Where a watcher stands with one service's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This watcher holds the lease.
    Holds,
    /// Another watcher holds it; this one stands by.
    StandsBy { holder: String },
    /// The lease's store did not answer the last attempt.
    Unreachable,
}

/// The watcher's metrics, shared by its services' loops.
pub struct WatchMetrics {
    registry: Registry,
    active: Family<Member, Gauge>,
    heartbeat: Family<Svc, Histogram, fn() -> Histogram>,
    misses: Family<Svc, Counter>,
    asked: Family<Svc, Counter>,
    confirmed: Family<Svc, Counter>,
    failovers: Family<Svc, Counter>,
    failover_seconds: Family<Svc, Histogram, fn() -> Histogram>,
    lease_held: Family<Svc, Gauge>,
    lease_token: Family<Svc, Gauge<f64, AtomicU64>>,
    sync_age: Family<Member, Gauge<f64, AtomicU64>>,
    standing: Mutex<BTreeMap<String, Standing>>,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

fn failover_time() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 10))
}

impl Default for WatchMetrics {
    fn default() -> WatchMetrics {
        let mut registry = Registry::with_prefix("farmctl_watch");
        let m = WatchMetrics {
            active: Family::default(),
            heartbeat: Family::new_with_constructor(latency as fn() -> Histogram),
            misses: Family::default(),
            asked: Family::default(),
            confirmed: Family::default(),
            failovers: Family::default(),
            failover_seconds: Family::new_with_constructor(failover_time as fn() -> Histogram),
            lease_held: Family::default(),
            lease_token: Family::default(),
            sync_age: Family::default(),
            standing: Mutex::new(BTreeMap::new()),
            registry: Registry::default(),
        };
        registry.register("active", "1 for the member this watcher takes as active, 0 for the others", m.active.clone());
        registry.register("heartbeat_seconds", "How long each heartbeat check of the active member took (a missed one counts its deadline)", m.heartbeat.clone());
        registry.register("heartbeat_misses", "Heartbeats of the active member that failed or ran out of time", m.misses.clone());
        registry.register("confirmations_asked", "Clients asked whether they reach the active member", m.asked.clone());
        registry.register("confirmations_given", "Clients that could not reach the active member either", m.confirmed.clone());
        registry.register("failovers", "Failovers done", m.failovers.clone());
        registry.register("failover_seconds", "From the first missed heartbeat to the clients repointed", m.failover_seconds.clone());
        registry.register("lease_held", "1 while this watcher holds the service's lease", m.lease_held.clone());
        registry.register("lease_token", "The fencing token of this watcher's lease (0 when it holds none)", m.lease_token.clone());
        registry.register("last_sync_age_seconds", "Seconds since each standby's last good sync", m.sync_age.clone());
        WatchMetrics { registry, ..m }
    }
}

impl WatchMetrics {
    fn svc(service: &str) -> Svc {
        Svc { service: service.to_string() }
    }

    /// A service begins to be watched: its counters start at 0, so that the
    /// first failover is a step from 0 to 1 for Prometheus, not a new series.
    pub fn begin(&self, service: &str, members: &[String], active: &str) {
        for f in [&self.misses, &self.asked, &self.confirmed, &self.failovers] {
            let _ = f.get_or_create(&Self::svc(service));
        }
        self.set_active(service, members, active);
    }

    /// The service's members, with `active` the one that serves.
    pub fn set_active(&self, service: &str, members: &[String], active: &str) {
        for m in members {
            self.active.get_or_create(&Member { service: service.into(), member: m.clone() }).set(i64::from(m == active));
        }
    }

    pub fn heartbeat(&self, service: &str, took: Duration, ok: bool) {
        self.heartbeat.get_or_create(&Self::svc(service)).observe(took.as_secs_f64());
        if !ok {
            self.misses.get_or_create(&Self::svc(service)).inc();
        }
    }

    pub fn confirmations(&self, service: &str, asked: usize, given: usize) {
        self.asked.get_or_create(&Self::svc(service)).inc_by(asked as u64);
        self.confirmed.get_or_create(&Self::svc(service)).inc_by(given as u64);
    }

    pub fn failover(&self, service: &str, took: Duration) {
        self.failovers.get_or_create(&Self::svc(service)).inc();
        self.failover_seconds.get_or_create(&Self::svc(service)).observe(took.as_secs_f64());
    }

    /// Where this watcher stands with the service's lease, and its token.
    pub fn lease(&self, service: &str, standing: Standing, token: u64) {
        let held = standing == Standing::Holds;
        self.lease_held.get_or_create(&Self::svc(service)).set(i64::from(held));
        self.lease_token.get_or_create(&Self::svc(service)).set(if held { token as f64 } else { 0.0 });
        self.standing.lock().expect("standing").insert(service.to_string(), standing);
    }

    pub fn sync_age(&self, service: &str, standby: &str, age: Duration) {
        self.sync_age.get_or_create(&Member { service: service.into(), member: standby.into() }).set(age.as_secs_f64());
    }

    /// The metrics in OpenMetrics text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }

    /// Whether the watcher is healthy (it holds or stands by for every
    /// service it was started with, and reaches each lease store), and why.
    pub fn health(&self) -> (bool, String) {
        let standing = self.standing.lock().expect("standing");
        let mut ok = !standing.is_empty();
        let mut lines = Vec::new();
        for (service, s) in standing.iter() {
            lines.push(match s {
                Standing::Holds => format!("{service}: holds the lease"),
                Standing::StandsBy { holder } => format!("{service}: stands by; {holder} holds the lease"),
                Standing::Unreachable => {
                    ok = false;
                    format!("{service}: cannot reach its lease store")
                }
            });
        }
        if standing.is_empty() {
            lines.push("no service is watched yet".into());
        }
        (ok, lines.join("\n") + "\n")
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<WatchMetrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req.uri().path(), &metrics)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

fn answer(path: &str, metrics: &WatchMetrics) -> hyper::Response<Full<Bytes>> {
    let (status, kind, body) = match path {
        "/metrics" => (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.text()),
        "/healthz" => {
            let (ok, text) = metrics.health();
            (if ok { 200 } else { 503 }, "text/plain; charset=utf-8", text)
        }
        _ => (404, "text/plain; charset=utf-8", "farmctl watch serves /metrics and /healthz\n".to_string()),
    };
    hyper::Response::builder().status(status).header(hyper::header::CONTENT_TYPE, kind).body(Full::new(Bytes::from(body))).expect("a response builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_each_family_and_healthz_follows_the_lease() {
        let m = WatchMetrics::default();
        assert!(!m.health().0, "nothing watched yet is not healthy");
        m.set_active("web", &["web-c".into(), "web-d".into()], "web-c");
        m.failover("web", Duration::from_millis(1500));
        m.lease("web", Standing::Holds, 42);
        let t = m.text();
        for line in [r#"farmctl_watch_active{service="web",member="web-c"} 1"#, r#"farmctl_watch_active{service="web",member="web-d"} 0"#, r#"farmctl_watch_failovers_total{service="web"} 1"#, r#"farmctl_watch_lease_token{service="web"} 42.0"#] {
            assert!(t.contains(line), "{line} in {t}");
        }
        assert!(m.health().0);
        m.lease("web", Standing::StandsBy { holder: "ops@ws:1".into() }, 0);
        assert!(m.health().0 && m.health().1.contains("stands by"));
        m.lease("web", Standing::Unreachable, 0);
        assert!(!m.health().0);
    }
}
