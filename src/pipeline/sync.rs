//! A service's `sync`: the files copied from the active member to every
//! standby where they differ, under the lease's fencing token, so that a
//! standby taking over holds what the active member held.

use super::look::{now_ms, Log};
use crate::farm::{Farm, Service};
use crate::live::FileState;
use crate::transport::{Host, Pool};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Copies each `sync` path from the active member to every standby where it differs.
pub(super) async fn sync(conns: &mut Pool, farm: &Farm, svc: &Service, active: &str, epoch: u64, last_sync: &mut BTreeMap<String, (Instant, u64)>, log: Log, limit: Duration) {
    let Some(a) = conns.get_within(active, limit).await else { return };
    let Ok(Ok(src)) = tokio::time::timeout(limit, a.read_state(&farm.state_dir, &svc.sync, None)).await else { return };
    for m in svc.members.iter().filter(|m| *m != active) {
        let Some(h) = conns.get_within(m, limit).await else { continue };
        let Ok(Ok(dst)) = tokio::time::timeout(limit, h.read_state(&farm.state_dir, &svc.sync, None)).await else { continue };
        let mut all_good = true;
        for p in &svc.sync {
            let (FileState::Present(s), d) = (&src.files[p], &dst.files[p]) else { continue };
            if matches!(d, FileState::Present(d) if d.sha256 == s.sha256) {
                continue;
            }
            match h.put_file(&farm.state_dir, p, s.content.clone(), Some((&farm.lease_store.fence_key(&svc.name), epoch))).await {
                Ok(()) => log.event(&svc.name, "synced", &format!("{active}:{p} -> {m} (sha256 {})", &s.sha256[..12])),
                Err(e) => {
                    all_good = false;
                    log.event(&svc.name, "sync-failed", &format!("{active}:{p} -> {m}: {e}"));
                }
            }
        }
        if all_good {
            last_sync.insert(m.clone(), (Instant::now(), now_ms()));
        }
    }
}
