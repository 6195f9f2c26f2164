//! The connections a run keeps to its hosts: one per host of the farm, made
//! on first use, dropped when it breaks. The plan's reading, an apply and the
//! watcher all hold theirs in a [`Pool`].

use super::{connect, AnyHost, TransportError};
use crate::farm::Farm;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One connection per host, and the farm to make more from.
#[derive(Clone)]
pub struct Pool {
    pub farm: Arc<Farm>,
    pub hosts: BTreeMap<String, Arc<AnyHost>>,
    /// The bound on hosts worked on at once (`--parallel`).
    pub parallel: usize,
}

impl Pool {
    pub fn new(farm: Arc<Farm>, hosts: BTreeMap<String, Arc<AnyHost>>, parallel: usize) -> Pool {
        Pool { farm, hosts, parallel: parallel.max(1) }
    }

    /// The same farm, with the connections of the hosts `keep` names alone.
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> Pool {
        Pool { farm: self.farm.clone(), hosts: self.hosts.iter().filter(|(h, _)| keep(h)).map(|(h, c)| (h.clone(), c.clone())).collect(), parallel: self.parallel }
    }

    /// The connection to `name`, made now if there is none.
    pub async fn get(&mut self, name: &str) -> Result<Arc<AnyHost>, TransportError> {
        if let Some(h) = self.hosts.get(name) {
            return Ok(h.clone());
        }
        if !self.farm.hosts.contains_key(name) {
            return Err(TransportError::NotInFarm { host: name.to_string() });
        }
        let h = Arc::new(connect(&self.farm, name).await?);
        self.hosts.insert(name.to_string(), h.clone());
        Ok(h)
    }

    /// The connection to `name`, made now within `limit` if there is none:
    /// for a watcher, where a host that does not answer in time is down.
    pub async fn get_within(&mut self, name: &str, limit: Duration) -> Option<Arc<AnyHost>> {
        tokio::time::timeout(limit, self.get(name)).await.ok()?.ok()
    }

    /// Drops a broken connection. Closing an SSH master can block on its
    /// socket, so it is closed off the async workers: a dead host must never
    /// stall the work on the others.
    pub fn forget(&mut self, name: &str) {
        if let Some(h) = self.hosts.remove(name) {
            tokio::task::spawn_blocking(move || drop(h));
        }
    }

    /// Drops every held connection, as [`Pool::forget`] drops one.
    pub fn forget_all(&mut self) {
        for h in std::mem::take(&mut self.hosts).into_values() {
            tokio::task::spawn_blocking(move || drop(h));
        }
    }
}
