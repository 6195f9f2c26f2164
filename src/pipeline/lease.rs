//! The watcher's lease of a service: one watcher acts for a service at a
//! time, and every write it makes carries the lease's fencing token, which the
//! hosts check (a watcher whose lease is gone is refused there).
//!
//! [`Lease`] is what the watcher needs of a lease. [`MemberLease`], the
//! default, needs nothing but SSH: the lease lives in each member's state
//! directory, with an expiry and an epoch. The etcd lease (`etcd.rs`) keeps
//! it in etcd instead (`[watch] etcd = [...]`), its key's creation revision
//! the fencing token; `leases.rs` makes the farm's kind for each service.

use crate::farm::Service;
use crate::transport::{LeaseState, Pool};
use std::future::Future;
use std::time::Duration;

/// A lease held (or renewed) for this watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// How many of the lease's places hold it for us: 0 when none answered.
    pub places: usize,
    /// The fencing token of our writes: higher than any earlier holder's.
    pub token: u64,
}

/// Who holds a service's lease, as `farmctl status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// Where the lease was read (a member, for [`MemberLease`]).
    pub place: String,
    pub holder: String,
    pub token: u64,
    pub left_ms: i64,
    /// What the holder last wrote about the service (its heartbeat and syncs).
    pub note: String,
}

/// Why a lease was not granted: another watcher holds it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("service {service} is watched by {} (lease epoch {} on {}, {} ms left)", .held.holder, .held.token, .held.place, .held.left_ms)]
pub struct HeldByAnother {
    pub service: String,
    pub held: Holding,
}

/// Why a lease was not granted, or is no longer this watcher's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another watcher holds it.
    #[error(transparent)]
    Held(#[from] HeldByAnother),
    /// The store could not prove, within the lease's time, that this watcher
    /// still holds it (an etcd without quorum): it must stop acting.
    #[error("{0}")]
    Unproven(String),
}

impl Refusal {
    /// The other watcher that holds the lease, if that is why.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Refusal::Held(h) => Some(&h.held.holder),
            Refusal::Unproven(_) => None,
        }
    }
}

/// What the watcher needs of a lease.
pub trait Lease: Send {
    /// Takes or renews the lease for this watcher, keeping `note` with it.
    /// A grant in no place means the store did not answer (see [`Lease::silence`]).
    fn acquire(&mut self, note: &str) -> impl Future<Output = Result<Grant, Refusal>> + Send;
    /// Gives the lease up, so that another watcher need not wait for its expiry.
    fn release(&mut self) -> impl Future<Output = ()> + Send;
    /// Who holds the lease now, if anyone.
    fn holding(&mut self) -> impl Future<Output = Option<Holding>> + Send;
    /// Why the last grant was in no place: which store did not answer, and its error.
    fn silence(&self) -> String;
}

/// The lease on every member of the service, over SSH: held when no member
/// names another live holder. It outlives a dead holder by `svc.lease`.
pub struct MemberLease {
    conns: Pool,
    svc: Service,
    holder: String,
    state_dir: String,
    /// The bound on each member's answer.
    limit: Duration,
    /// Whether this watcher has held the lease: until then, a member that
    /// names another holder undoes what this watcher took on the others.
    held: bool,
}

impl MemberLease {
    pub(super) fn new(conns: Pool, svc: &Service, holder: &str, limit: Duration) -> MemberLease {
        let state_dir = conns.farm.state_dir.clone();
        MemberLease { conns, svc: svc.clone(), holder: holder.to_string(), state_dir, limit, held: false }
    }

    async fn on_members(&mut self, note: &str, release: bool) -> Result<Grant, Refusal> {
        let mut grant = Grant { places: 0, token: 0 };
        let ttl = self.svc.lease.as_millis() as u64;
        for m in self.svc.members.clone() {
            let Some(h) = self.conns.get_within(&m, self.limit).await else { continue };
            match tokio::time::timeout(self.limit, h.lease(&self.state_dir, &self.svc.name, &self.holder, ttl, release, note)).await {
                Ok(Ok(LeaseState::Ours { epoch })) => {
                    grant.places += 1;
                    grant.token = grant.token.max(epoch);
                }
                Ok(Ok(LeaseState::Held { holder, epoch, left_ms, note })) => {
                    return Err(HeldByAnother { service: self.svc.name.clone(), held: Holding { place: m, holder, token: epoch, left_ms, note } }.into());
                }
                Ok(Ok(_)) => {}
                _ => self.conns.forget(&m),
            }
        }
        Ok(grant)
    }
}

impl Lease for MemberLease {
    async fn acquire(&mut self, note: &str) -> Result<Grant, Refusal> {
        if !self.held {
            // A watcher that never held the lease looks before it takes: a
            // live holder on any member is named, and nothing is written.
            if let Some(held) = self.holding().await.filter(|h| h.holder != self.holder) {
                return Err(HeldByAnother { service: self.svc.name.clone(), held }.into());
            }
        }
        let got = self.on_members(note, false).await;
        match &got {
            Ok(g) if g.places > 0 => self.held = true,
            // Another watcher took a member between the look and the take:
            // what this one took on the other members is given back.
            Err(_) if !self.held => {
                let _ = self.on_members("", true).await;
            }
            _ => {}
        }
        got
    }

    async fn release(&mut self) {
        let _ = self.on_members("", true).await;
    }

    async fn holding(&mut self) -> Option<Holding> {
        for m in self.svc.members.clone() {
            let Some(h) = self.conns.get_within(&m, self.limit).await else { continue };
            if let Ok(Ok(LeaseState::Held { holder, epoch, left_ms, note })) = tokio::time::timeout(self.limit, h.lease_holder(&self.state_dir, &self.svc.name)).await {
                return Some(Holding { place: m, holder, token: epoch, left_ms, note });
            }
        }
        None
    }

    fn silence(&self) -> String {
        format!("no member of service {} answers", self.svc.name)
    }
}
