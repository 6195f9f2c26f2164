//! Each service's lease of the farm's kind (`[watch]`): on the members
//! ([`MemberLease`]) or in etcd (`etcd.rs`'s `EtcdLease`, with the `etcd`
//! feature).

use super::lease::{Grant, Holding, Lease, MemberLease, Refusal};
use super::spread::Spread;
use crate::farm::Service;
use crate::transport::Pool;
use std::time::Duration;

/// Makes each service's lease of the farm's kind (`[watch]`).
#[derive(Clone)]
pub struct Leases {
    holder: String,
    #[cfg(feature = "etcd")]
    etcd: Option<super::etcd::EtcdStore>,
}

impl Leases {
    /// Opens the farm's lease store for this watcher (`holder`; empty to
    /// read only). An etcd store is connected here, so that a bad address
    /// or certificate is said before anything else.
    pub async fn open(farm: &crate::farm::Farm, holder: &str) -> crate::error::Result<Leases> {
        match &farm.lease_store {
            crate::farm::LeaseStore::Members => Ok(Leases {
                holder: holder.to_string(),
                #[cfg(feature = "etcd")]
                etcd: None,
            }),
            #[cfg(feature = "etcd")]
            crate::farm::LeaseStore::Etcd(cfg) => Ok(Leases { holder: holder.to_string(), etcd: Some(super::etcd::EtcdStore::connect(cfg).await?) }),
            #[cfg(not(feature = "etcd"))]
            crate::farm::LeaseStore::Etcd(_) => Err(crate::error::Error::new(crate::error::ErrorKind::Refused, format!("{} keeps its leases in etcd ([watch] etcd), and this farmctl was built without etcd", farm.path.display()))
                .hint("build farmctl with `cargo build --release --features etcd` (it needs protoc: Debian's protobuf-compiler and libprotobuf-dev), or remove [watch] etcd to keep the leases on the members")),
        }
    }

    /// The watcher these leases are for.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// This watcher's part of the farm's services. With etcd, the watcher
    /// is registered there and the live watchers are counted every second;
    /// on the members, it is alone.
    pub(super) async fn spread(&self, services: usize, interrupted: tokio::sync::watch::Receiver<bool>) -> std::sync::Arc<Spread> {
        let spread = std::sync::Arc::new(Spread::new(services));
        #[cfg(feature = "etcd")]
        if let Some(store) = &self.etcd {
            store.register(&self.holder, spread.clone(), interrupted).await;
        }
        #[cfg(not(feature = "etcd"))]
        drop(interrupted);
        spread
    }

    /// The lease of one service; `conns` serve the lease on the members.
    pub(super) fn of(&self, conns: Pool, svc: &Service, limit: Duration) -> AnyLease {
        #[cfg(feature = "etcd")]
        if let Some(store) = &self.etcd {
            return AnyLease::Etcd(store.lease(svc, &self.holder, limit));
        }
        AnyLease::Members(MemberLease::new(conns, svc, &self.holder, limit))
    }
}

/// A service's lease, of the farm's kind.
pub enum AnyLease {
    Members(MemberLease),
    #[cfg(feature = "etcd")]
    Etcd(super::etcd::EtcdLease),
}

macro_rules! each_lease {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            AnyLease::Members($l) => $e,
            #[cfg(feature = "etcd")]
            AnyLease::Etcd($l) => $e,
        }
    };
}

impl Lease for AnyLease {
    async fn acquire(&mut self, note: &str) -> Result<Grant, Refusal> {
        each_lease!(self, l => l.acquire(note).await)
    }
    async fn release(&mut self) {
        each_lease!(self, l => l.release().await)
    }
    async fn holding(&mut self) -> Option<Holding> {
        each_lease!(self, l => l.holding().await)
    }
    fn silence(&self) -> String {
        each_lease!(self, l => l.silence())
    }
}

