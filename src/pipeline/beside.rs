//! The loops that run beside a service's heartbeat, so that neither a slow
//! member nor a slow lease store stretches the beats: the lease's renewal
//! (its token and its loss go to the heartbeat through a [`LeaseView`], and
//! the heartbeat's note for `farmctl status` comes back with it), and
//! the look at the standbys (a member that stops answering or comes back,
//! and, for a service with an address, a standby that must not hold it).

use super::lease::Lease;
use super::look::{check, Log, WATCH_PARALLEL};
use crate::farm::{Farm, Service};
use crate::metrics::exporter::{Standing, WatchMetrics};
use crate::transport::Pool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the lease's loop tells the heartbeat's: the fencing token, or that the
/// lease is lost (another watcher holds it); and what to keep with the lease.
#[derive(Default)]
pub(super) struct LeaseView {
    pub(super) token: u64,
    pub(super) lost: Option<String>,
    pub(super) note: String,
}

/// The member that may hold a service's address. A failover holds it while
/// it moves the address, and the look at the standbys holds it while it
/// takes the address from one: the look can never take it from a member that
/// has just become active.
pub(super) type AddressOwner = Arc<tokio::sync::Mutex<String>>;

/// This watcher, as a lease names its holder: `user@host:pid`.
pub(super) fn holder() -> String {
    let me = crate::apply::LockOwner::this_process("");
    format!("{}@{}:{}", me.user, me.host, me.pid)
}

/// What this watcher keeps with the lease for `farmctl status`: the active
/// member, its last answered beat, standbys seen down, and each standby's last sync.
pub(super) fn lease_note(svc: &Service, active: &str, last_beat_ms: u64, seen: &std::sync::Mutex<BTreeMap<String, bool>>, last_sync: &BTreeMap<String, (Instant, u64)>) -> String {
    let down: Vec<String> = seen.lock().expect("standbys").iter().filter(|(_, up)| !**up).map(|(m, _)| m.clone()).collect();
    std::iter::once(format!("active={active} beat={last_beat_ms} every={}", svc.heartbeat.as_millis()))
        .chain((!down.is_empty()).then(|| format!("down={}", down.join(","))))
        .chain(last_sync.iter().map(|(m, (_, t))| format!("sync:{m}={t}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renews the lease every `every` until interrupted (then releases it) or lost.
pub(super) async fn renew(mut lease: impl Lease, service: String, view: Arc<std::sync::Mutex<LeaseView>>, every: Duration, metrics: Arc<WatchMetrics>, mut interrupted: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *interrupted.borrow() {
            lease.release().await;
            return;
        }
        let note = view.lock().expect("lease view").note.clone();
        match lease.acquire(&note).await {
            Ok(g) => {
                let mut v = view.lock().expect("lease view");
                v.token = v.token.max(g.token);
                metrics.lease(&service, if g.places > 0 { Standing::Holds } else { Standing::Unreachable }, v.token);
            }
            Err(e) => {
                metrics.lease(&service, e.holder().map_or(Standing::Unreachable, |h| Standing::StandsBy { holder: h.to_string() }), 0);
                view.lock().expect("lease view").lost = Some(e.to_string());
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupted.changed() => {}
        }
    }
}

/// Looks at the standbys every few heartbeats, with the heartbeat's own check,
/// and logs a member that stops answering or comes back; what it saw goes
/// into the lease's note for `farmctl status`. It runs beside the
/// heartbeat, so that a hung standby never stretches the active member's beats.
#[allow(clippy::too_many_arguments)]
pub(super) async fn look_after_standbys(farm: Arc<Farm>, svc: Service, active: tokio::sync::watch::Receiver<String>, seen: Arc<std::sync::Mutex<BTreeMap<String, bool>>>, lease: Arc<std::sync::Mutex<LeaseView>>, owner: AddressOwner, log: Log, mut interrupted: tokio::sync::watch::Receiver<bool>) {
    let limit = svc.deadline();
    // A standby that holds the service's address answers at it: every
    // heartbeat, so that a member that comes back loses it at once.
    let every = if svc.address.is_some() { svc.heartbeat } else { (svc.heartbeat * 4).max(Duration::from_secs(2)) };
    let mut conns = Pool::new(farm.clone(), BTreeMap::new(), WATCH_PARALLEL);
    while !*interrupted.borrow() {
        let now_active = active.borrow().clone();
        for m in svc.members.iter().filter(|m| **m != now_active) {
            let up = check(&mut conns, &farm, &svc, m, limit).await;
            let before = seen.lock().expect("standbys").insert(m.clone(), up);
            match (before, up) {
                (Some(false), true) => log.event(&svc.name, "returned", &format!("{m} answers its check again; it is a standby")),
                (Some(true) | None, false) => log.event(&svc.name, "standby-down", &format!("{m} does not answer its check; it cannot take over until it does")),
                _ => {}
            }
            let epoch = lease.lock().expect("lease view").token;
            // Until the lease's loop has its token, nothing is written.
            if let (true, Some(v), true) = (up, &svc.address, epoch > 0) {
                let owner = owner.lock().await;
                if *owner == *m {
                    // It became active since this look began.
                    continue;
                }
                match super::address::drop_from(&mut conns, &svc, m, epoch, limit).await {
                    Ok(true) => log.event(&svc.name, "address-removed", &format!("{m} held {} though it is a standby: removed", v.cidr())),
                    Ok(false) => {}
                    Err(e) => log.event(&svc.name, "address-failed", &format!("cannot make sure standby {m} does not hold {}: {e}", v.cidr())),
                }
            }
        }
        let current = active.borrow().clone();
        seen.lock().expect("standbys").remove(&current);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupted.changed() => {}
        }
    }
}

