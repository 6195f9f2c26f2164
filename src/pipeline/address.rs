//! `strategy = "address"`: the active member holds the service's virtual
//! address, and clients keep talking to it. The watcher gives the address to
//! the active member when it starts, moves it on a failover (the old member
//! confirmed dead by the clients, and fenced when a fence is set), and takes
//! it from any other member that holds it, such as a member that comes back,
//! before anything else. Every change carries the lease's fencing token, so a
//! watcher whose lease is gone is refused on the member.

use super::look::Log;
use crate::farm::Service;
use crate::transport::{AddressOp, AddressState, Pool, WatcherWriteError};
use std::time::Duration;

/// Why a member's address could not be changed.
#[derive(Debug, thiserror::Error)]
pub(super) enum AddressError {
    #[error("the service has no address")]
    NoAddress,
    #[error("{0} cannot be reached")]
    Unreachable(String),
    #[error("{member} did not answer within {within:?}")]
    Silent { member: String, within: Duration },
    #[error(transparent)]
    Refused(#[from] WatcherWriteError),
    #[error("{0} does not hold the address after taking it")]
    NotTaken(String),
    #[error("{0} still holds the address")]
    StillHeld(String),
}

/// Adds the address to `member` and announces it; `Err` says why not.
pub(super) async fn take(conns: &mut Pool, svc: &Service, member: &str, epoch: u64, limit: Duration) -> Result<String, AddressError> {
    match change(conns, svc, member, epoch, AddressOp::Take, limit).await? {
        AddressState::Held { interface, .. } => Ok(interface),
        AddressState::Free { .. } => Err(AddressError::NotTaken(member.to_string())),
    }
}

/// Removes the address from `member` if it holds it; `Ok(true)` when it did.
pub(super) async fn drop_from(conns: &mut Pool, svc: &Service, member: &str, epoch: u64, limit: Duration) -> Result<bool, AddressError> {
    match change(conns, svc, member, epoch, AddressOp::Drop, limit).await? {
        AddressState::Free { changed } => Ok(changed),
        AddressState::Held { .. } => Err(AddressError::StillHeld(member.to_string())),
    }
}

async fn change(conns: &mut Pool, svc: &Service, member: &str, epoch: u64, op: AddressOp, limit: Duration) -> Result<AddressState, AddressError> {
    let v = svc.address.as_ref().ok_or(AddressError::NoAddress)?;
    let own = conns.farm.hosts[member].address.clone().unwrap_or_else(|| member.to_string());
    let state_dir = conns.farm.state_dir.clone();
    let h = conns.get_within(member, limit).await.ok_or_else(|| AddressError::Unreachable(member.to_string()))?;
    match tokio::time::timeout(limit * 3, h.address(&state_dir, &conns.farm.lease_store.fence_key(&svc.name), epoch, op, &v.cidr(), v.interface.as_deref(), &own)).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            conns.forget(member);
            Err(AddressError::Silent { member: member.to_string(), within: limit * 3 })
        }
    }
}

/// At the start of a watch: no member but `active` holds the address, and
/// `active` does. Logs each change.
pub(super) async fn claim(conns: &mut Pool, svc: &Service, active: &str, epoch: u64, log: Log, limit: Duration) {
    let Some(v) = &svc.address else { return };
    for m in svc.members.iter().filter(|m| *m != active) {
        match drop_from(conns, svc, m, epoch, limit).await {
            Ok(true) => log.event(&svc.name, "address-removed", &format!("{m} held {} though {active} is active: removed", v.cidr())),
            Ok(false) => {}
            Err(e) => log.event(&svc.name, "address-failed", &format!("cannot make sure {m} does not hold {}: {e}", v.cidr())),
        }
    }
    match take(conns, svc, active, epoch, limit).await {
        Ok(i) => log.event(&svc.name, "address", &format!("{active} holds {} on {i}", v.cidr())),
        Err(e) => log.event(&svc.name, "address-failed", &format!("{active} cannot take {}: {e}", v.cidr())),
    }
}

/// A failover: the address goes to `to`, which announces it. The clients
/// confirmed `from` dead; should it still be reachable (cut from the clients
/// alone), it is asked to give the address up at the same time, and a member
/// that comes back loses it before anything else (`beside.rs`).
pub(super) async fn move_to(conns: &mut Pool, svc: &Service, from: &str, to: &str, epoch: u64, log: Log, limit: Duration) -> Result<String, AddressError> {
    let v = svc.address.clone().ok_or(AddressError::NoAddress)?;
    let mut old = conns.only(|h| h == from);
    let (svc2, from2) = (svc.clone(), from.to_string());
    tokio::spawn(async move {
        match drop_from(&mut old, &svc2, &from2, epoch, limit).await {
            Ok(true) => log.event(&svc2.name, "address-removed", &format!("{from2} gave up {}", v.cidr())),
            Ok(false) => {}
            Err(e) => log.event(&svc2.name, "address", &format!("{from2} could not be asked to give up {} ({e}); the clients confirmed it dead", v.cidr())),
        }
    });
    take(conns, svc, to, epoch, limit).await
}
