//! What `farmctl status` says of each service: the active member and its
//! standbys as this reading finds them, and what the watcher holding the
//! service's lease last wrote with it (its heartbeat, the standbys it sees
//! down, its syncs).

use super::lease::{Holding, Lease};
use super::leases::Leases;
use super::Session;
use std::time::Duration;

/// One service as `farmctl status` shows it.
pub struct ServiceStatus {
    pub name: String,
    pub active: Option<String>,
    /// Whether the active member answered this reading.
    pub active_answers: bool,
    pub clients: usize,
    /// Each standby, and whether it answered this reading.
    pub standbys: Vec<(String, bool)>,
    /// Who holds the watcher's lease, if anyone.
    pub lease: Option<Holding>,
    /// When the watcher last had an answer from the active member (ms since the epoch, its clock).
    pub last_heartbeat_ms: Option<u64>,
    /// The watcher's heartbeat interval, in ms.
    pub heartbeat_every_ms: Option<u64>,
    /// Standbys the watcher last saw not answering their check.
    pub watcher_sees_down: Vec<String>,
    /// (standby, ms since the epoch) of each standby's last good sync.
    pub last_sync: Vec<(String, u64)>,
    /// With `strategy = "address"`: the virtual address, and every member that holds it.
    pub address: Option<(String, Vec<String>)>,
}

impl ServiceStatus {
    /// Whether the service is served: its active member answers.
    pub fn served(&self) -> bool {
        self.active.is_some() && self.active_answers
    }
}

/// Each service's active member (from the clients' files) and its watcher's lease.
pub async fn service_status(session: &mut Session) -> Vec<ServiceStatus> {
    let farm = session.pool.farm.clone();
    // A lease store that cannot be opened shows no holders.
    let leases = Leases::open(&farm, "").await.ok();
    let all: Vec<String> = farm.hosts.keys().cloned().collect();
    session.read(&all).await;
    let answers = |m: &String| session.live.get(m).is_some_and(|r| r.is_ok());
    let mut out = Vec::new();
    for svc in farm.services.values() {
        let (active, clients) = crate::plan::services::active(&farm, &session.live, svc);
        let mut status = ServiceStatus {
            name: svc.name.clone(),
            active_answers: active.as_ref().is_some_and(answers),
            standbys: svc.members.iter().filter(|m| Some(*m) != active.as_ref()).map(|m| (m.clone(), answers(m))).collect(),
            active,
            clients: clients.len(),
            lease: None,
            last_heartbeat_ms: None,
            heartbeat_every_ms: None,
            watcher_sees_down: Vec::new(),
            last_sync: Vec::new(),
            address: svc.address.as_ref().map(|v| (v.cidr(), crate::plan::services::address_holders(&session.live, svc))),
        };
        let held = match &leases {
            Some(l) => l.of(session.pool.clone(), svc, Duration::from_secs(5)).holding().await,
            None => None,
        };
        if let Some(held) = held {
            for word in held.note.split_whitespace() {
                match word.split_once('=') {
                    Some(("beat", t)) => status.last_heartbeat_ms = t.parse().ok(),
                    Some(("every", t)) => status.heartbeat_every_ms = t.parse().ok(),
                    Some(("down", list)) => status.watcher_sees_down = list.split(',').map(str::to_string).collect(),
                    Some((k, t)) if k.starts_with("sync:") => {
                        if let Ok(t) = t.parse() {
                            status.last_sync.push((k[5..].to_string(), t));
                        }
                    }
                    _ => {}
                }
            }
            status.lease = Some(held);
        }
        out.push(status);
    }
    out
}
