//! A failover as the watcher runs it: a replacement (or a pinned member) planned
//! and applied through the pipeline, from the watcher's own recent reading of
//! the hosts when it has one, and journaled like any apply.

use super::look::{Log, WATCH_PARALLEL};
use super::Session;
use crate::apply::journal::{Entry, Journal, Record, ServiceEvent};
use crate::farm::{Farm, Replacement, Service, Strategy};
use crate::transport::{AnyHost, Pool};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The hosts' states as the watcher last read them between failures, and
/// when. A failover writes the clients, so it empties the cache and bumps the
/// generation: a reading started before it is never used after it.
#[derive(Clone, Default)]
pub(super) struct Cache(Arc<std::sync::Mutex<(u64, Option<(Instant, crate::live::LiveFarm)>)>>);

impl Cache {
    fn generation(&self) -> u64 {
        self.0.lock().map(|c| c.0).unwrap_or(0)
    }

    fn store(&self, generation: u64, live: crate::live::LiveFarm) {
        if let Ok(mut c) = self.0.lock() {
            if c.0 == generation {
                c.1 = Some((Instant::now(), live));
            }
        }
    }

    fn recent(&self) -> Option<crate::live::LiveFarm> {
        self.0.lock().ok().and_then(|c| c.1.as_ref().filter(|(t, _)| t.elapsed() < FRESH).map(|(_, l)| l.clone()))
    }

    fn invalidate(&self) {
        if let Ok(mut c) = self.0.lock() {
            c.0 += 1;
            c.1 = None;
        }
    }
}

/// How often a healthy watcher reads every host again for [`Cache`], and how
/// old a reading a failover may still start from.
pub(super) const REFRESH: Duration = Duration::from_secs(10);
const FRESH: Duration = Duration::from_secs(20);

/// Reads every host in the background into `cache`, over the held connections.
pub(super) fn refresh(farm: &Arc<Farm>, held: &BTreeMap<String, Arc<AnyHost>>, cache: &Cache) {
    let mut session = Session::with_farm(farm.clone(), WATCH_PARALLEL);
    session.pool.hosts = held.clone();
    let (cache, all): (Cache, Vec<String>) = (cache.clone(), farm.hosts.keys().cloned().collect());
    let generation = cache.generation();
    tokio::spawn(async move {
        session.read(&all).await;
        cache.store(generation, std::mem::take(&mut session.live));
        let hosts = std::mem::take(&mut session.pool.hosts);
        tokio::task::spawn_blocking(move || drop(hosts));
    });
}

/// A failover, planned from the watcher's recent reading when there is one
/// (no read while clients wait); a client whose file changed since refuses
/// it on the host, and then the failover is planned again from a fresh read.
#[allow(clippy::too_many_arguments)]
pub(super) async fn failover(farm: &Arc<Farm>, held: &BTreeMap<String, Arc<AnyHost>>, svc: &Service, from: &str, to: &str, epoch: u64, cache: &Cache, log: Log, interrupted: &tokio::sync::watch::Receiver<bool>) -> std::result::Result<usize, RepointError> {
    let recent = cache.recent();
    // Whatever happens now writes clients: no reading from before it may plan a later one.
    cache.invalidate();
    if let Some(live) = recent {
        match failover_from(farm, held, svc, from, to, epoch, Some(live), log, interrupted).await {
            Err(Attempt::Stale(why)) => log.event(&svc.name, "stale", &format!("a client changed since the watcher last read it ({why}); planning again from a fresh read")),
            other => return other.map_err(Attempt::into_error),
        }
    }
    failover_from(farm, held, svc, from, to, epoch, None, log, interrupted).await.map_err(Attempt::into_error)
}

/// Why repointing the clients did not complete.
#[derive(Debug, thiserror::Error)]
pub(super) enum RepointError {
    /// The failover could not be planned.
    #[error("{}", .0.message)]
    Plan(crate::error::Error),
    /// Hosts that did not end as planned, and where each ended.
    #[error("plan {plan}: {}", .hosts.iter().map(|(h, s)| format!("{h}: {s}")).collect::<Vec<_>>().join("; "))]
    Hosts { plan: String, hosts: Vec<(String, crate::apply::HostState)> },
    #[error("the watcher's reading shows no client to repoint")]
    NoClient,
}

/// Why a failover did not move the service.
#[derive(Debug, thiserror::Error)]
pub(super) enum MoveError {
    #[error(transparent)]
    Address(#[from] super::address::AddressError),
    #[error(transparent)]
    Repoint(#[from] RepointError),
}

/// Why a failover attempt did not complete.
enum Attempt {
    /// Only refusals of files changed since the reading: nothing was written.
    Stale(RepointError),
    Failed(RepointError),
}

impl Attempt {
    fn into_error(self) -> RepointError {
        match self {
            Attempt::Stale(e) | Attempt::Failed(e) => e,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn failover_from(farm: &Arc<Farm>, held: &BTreeMap<String, Arc<AnyHost>>, svc: &Service, from: &str, to: &str, epoch: u64, live: Option<crate::live::LiveFarm>, log: Log, interrupted: &tokio::sync::watch::Receiver<bool>) -> std::result::Result<usize, Attempt> {
    let mut f = (**farm).clone();
    f.rollouts.clear();
    f.replacements.clear();
    match svc.strategy {
        // The clients' files name the member: replace it, by name, alias and address.
        Strategy::Rewrite => f.replacements.push(Replacement { index: 0, old: from.to_string(), new: to.to_string(), at: None, on: vec![], skip_paths: vec![], skip_lines: vec![] }),
        // The clients' hosts files map the virtual name: point it at the next member.
        Strategy::Hosts => {
            if let Some(s) = f.services.get_mut(&svc.name) {
                s.pin = Some(to.to_string());
            }
        }
        // The address moves (`address.rs`); no client file changes.
        Strategy::Address => return Ok(0),
    }
    let f = Arc::new(f);
    let mut session = Session::with_farm(f.clone(), WATCH_PARALLEL);
    // The watcher's own connections serve the failover: no new handshakes while clients wait.
    session.pool.hosts = held.iter().filter(|(h, _)| *h != from).map(|(h, c)| (h.clone(), c.clone())).collect();
    let scope: Vec<String> = f.hosts.keys().filter(|h| *h != from).cloned().collect();
    let t = Instant::now();
    let from_reading = live.is_some();
    match live {
        Some(live) => {
            session.live = live.into_iter().filter(|(h, _)| *h != from).collect();
            tracing::debug!(scope = svc.name.as_str(), event = "read", "{} host(s) as last read by the watcher", session.live.len());
        }
        None => {
            session.read(&scope).await;
            tracing::debug!(scope = svc.name.as_str(), event = "read", "{} host(s) read in {} ms", scope.len(), t.elapsed().as_millis());
        }
    }
    // Hosts that cannot be read now are left out, and said so: the service comes first.
    let readable: Vec<String> = scope.iter().filter(|h| matches!(session.live.get(*h), Some(Ok(_)))).cloned().collect();
    for h in scope.iter().filter(|h| !readable.contains(h)) {
        log.event(&svc.name, "skipped", &format!("{h} cannot be read; it is not repointed now"));
    }
    let t = Instant::now();
    let planned = session.plan(&readable, &[]).map_err(|e| Attempt::Failed(RepointError::Plan(e)))?;
    tracing::debug!(scope = svc.name.as_str(), event = "planned", "plan {} in {} ms", planned.plan.id, t.elapsed().as_millis());
    let clients: std::collections::BTreeSet<&str> = planned.plan.edits().map(|(a, _)| a.host.as_str()).collect();
    let n = clients.len();
    if n == 0 && from_reading {
        // The reading says no client names the dead member: only a fresh read may say so.
        return Err(Attempt::Stale(RepointError::NoClient));
    }
    let mut opts = session.options_interrupted_by(&planned.plan, 0, false, interrupted.clone());
    opts.fence = Some((farm.lease_store.fence_key(&svc.name), epoch));
    let t = Instant::now();
    let summary = session.execute(&planned, &opts, &Traced(&svc.name), &Journal::open()).await;
    tracing::debug!(scope = svc.name.as_str(), event = "applied", "plan {} applied in {} ms", planned.plan.id, t.elapsed().as_millis());
    if summary.ok() {
        return Ok(n);
    }
    let why = RepointError::Hosts { plan: planned.plan.id.clone(), hosts: summary.hosts.iter().filter(|(_, s)| !s.is_ok()).map(|(h, s)| (h.clone(), s.clone())).collect() };
    // Refused for a changed file, and nothing written anywhere: a newer reading will do.
    let stale = summary.hosts.values().any(|s| matches!(s, crate::apply::HostState::Refused { .. })) && summary.hosts.values().all(|s| s.written().is_empty());
    Err(if stale { Attempt::Stale(why) } else { Attempt::Failed(why) })
}

/// A failover's apply events, as the watcher's debug events (`-v`): the
/// log stays one event per line, JSON lines included.
struct Traced<'a>(&'a str);

impl crate::apply::Reporter for Traced<'_> {
    fn event(&self, e: crate::apply::Event) {
        tracing::debug!(scope = self.0, event = "apply", "{}", e.line());
    }
}

/// Journals a watcher's event about a service.
pub(super) fn journal(service: &str, farm: &Farm, event: ServiceEvent, detail: String) {
    let _ = Journal::open().record(&[Entry::now("", &farm.name, service, Record::Service(event), detail)]);
}

/// Runs a fence command against the dead member; returns whether it succeeded.
pub(super) async fn fence(farm: &Farm, svc: &Service, dead: &str, log: Log) -> bool {
    let Some(cmd) = &svc.fence else { return true };
    let q = |s: &str| shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_default();
    let addr = farm.hosts[dead].address.clone().unwrap_or_default();
    let cmd = cmd.replace("{host}", &q(dead)).replace("{address}", &q(&addr));
    let out = tokio::process::Command::new("sh").arg("-c").arg(&cmd).current_dir(farm.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."))).output().await;
    let (ok, detail) = match out {
        Ok(o) => (o.status.success(), format!("`{cmd}` exit {}{}", o.status.code().unwrap_or(-1), crate::apply::and_said(&String::from_utf8_lossy(&o.stderr)))),
        Err(e) => (false, format!("`{cmd}` could not run: {e}")),
    };
    log.event(&svc.name, if ok { "fenced" } else { "fence-failed" }, &format!("{dead}: {detail}"));
    journal(&svc.name, farm, if ok { ServiceEvent::Fenced } else { ServiceEvent::FenceFailed }, format!("{dead}: {detail}"));
    ok
}

/// Moves the service from the dead member to `next`: its address (taken by
/// `next` and announced, under the address's owner lock), or its clients
/// (repointed through the pipeline). Says what was done.
#[allow(clippy::too_many_arguments)]
pub(super) async fn move_service(conns: &mut Pool, farm: &Arc<Farm>, svc: &Service, (active, next): (&str, &str), epoch: u64, owner: &super::beside::AddressOwner, cache: &Cache, log: Log, interrupted: &tokio::sync::watch::Receiver<bool>) -> std::result::Result<String, MoveError> {
    match &svc.address {
        Some(v) => {
            log.event(&svc.name, "failover", &format!("moving {} from {active} to {next}", v.cidr()));
            let mut owner = owner.lock().await;
            let moved = super::address::move_to(conns, svc, active, next, epoch, log, svc.lease_limit()).await;
            if moved.is_ok() {
                *owner = next.to_string();
            }
            Ok(moved.map(|i| format!("{next} holds {} on {i} and announced it", v.cidr()))?)
        }
        None => {
            log.event(&svc.name, "failover", &format!("repointing the clients from {active} to {next}"));
            Ok(failover(farm, &conns.hosts, svc, active, next, epoch, cache, log, interrupted).await.map(|n| format!("{n} client(s) now name {next}"))?)
        }
    }
}
