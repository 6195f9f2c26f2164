//! `farmctl watch` as a library: heartbeats, confirmations, the lease, sync
//! and failovers for every service of a farm. The decisions are `watch`'s
//! pure state machine; a failover is a replacement planned and applied
//! through the same pipeline as any other, and lands in the journal.

use super::failover::{failover, refresh, Cache, REFRESH};
use super::lease::{Lease, MemberLease};
use super::look::{ask_clients, check, Answers, Conns, Log};
use super::Session;
use crate::apply::journal::{Entry, Journal};
use crate::error::{Error, ErrorKind, Result};
use crate::farm::{Farm, Service};
use crate::live::FileState;
use crate::transport::{AnyHost, Host};
use crate::watch::{Choice, Monitor, Step, Verdict};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn now_ms() -> u64 {
    jiff::Timestamp::now().as_millisecond().max(0) as u64
}

fn holder() -> String {
    let me = crate::apply::LockOwner::this_process("");
    format!("{}@{}:{}", me.user, me.host, me.pid)
}

fn journal(service: &str, farm: &Farm, outcome: &str, detail: String) {
    let e = Entry {
        time: jiff::Timestamp::now().to_string(),
        plan: String::new(),
        farm: farm.name.clone(),
        host: service.to_string(),
        path: "(service)".into(),
        before_sha256: String::new(),
        after_sha256: String::new(),
        outcome: outcome.into(),
        detail,
        ..Default::default()
    };
    let _ = Journal::open().record(&[e]);
}

/// Repoints every client from `from` to `to`: an immediate replacement,
/// planned and applied through the pipeline. Returns the clients repointed.
/// Copies each `sync` path from the active member to every standby where it differs.
async fn sync(conns: &mut Conns, farm: &Farm, svc: &Service, active: &str, epoch: u64, last_sync: &mut BTreeMap<String, (Instant, u64)>, log: Log, limit: Duration) {
    let Some(a) = conns.get(active, limit).await else { return };
    let Ok(Ok(src)) = tokio::time::timeout(limit, a.read_state(&farm.state_dir, &svc.sync, None)).await else { return };
    for m in svc.members.iter().filter(|m| *m != active) {
        let Some(h) = conns.get(m, limit).await else { continue };
        let Ok(Ok(dst)) = tokio::time::timeout(limit, h.read_state(&farm.state_dir, &svc.sync, None)).await else { continue };
        let mut all_good = true;
        for p in &svc.sync {
            let (FileState::Present(s), d) = (&src.files[p], &dst.files[p]) else { continue };
            if matches!(d, FileState::Present(d) if d.sha256 == s.sha256) {
                continue;
            }
            match h.put_file(&farm.state_dir, p, s.content.clone(), Some((&svc.name, epoch))).await {
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

/// Runs a fence command against the dead member; returns whether it succeeded.
async fn fence(farm: &Farm, svc: &Service, dead: &str, log: Log) -> bool {
    let Some(cmd) = &svc.fence else { return true };
    let q = |s: &str| shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_default();
    let addr = farm.hosts[dead].address.clone().unwrap_or_default();
    let cmd = cmd.replace("{host}", &q(dead)).replace("{address}", &q(&addr));
    let out = tokio::process::Command::new("sh").arg("-c").arg(&cmd).current_dir(farm.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."))).output().await;
    let (ok, detail) = match out {
        Ok(o) => (o.status.success(), format!("`{cmd}` exit {}: {}", o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => (false, format!("`{cmd}` could not run: {e}")),
    };
    log.event(&svc.name, if ok { "fenced" } else { "fence-failed" }, &format!("{dead}: {detail}"));
    journal(&svc.name, farm, if ok { "fenced" } else { "fence-failed" }, format!("{dead}: {detail}"));
    ok
}

/// What the lease's loop tells the heartbeat's: the fencing token, or that the
/// lease is lost (another watcher holds it); and what to keep with the lease.
#[derive(Default)]
struct LeaseView {
    token: u64,
    lost: Option<String>,
    note: String,
}

/// Renews the lease every `every` until interrupted (then releases it) or lost.
async fn renew(mut lease: impl Lease, view: Arc<std::sync::Mutex<LeaseView>>, every: Duration, mut interrupted: tokio::sync::watch::Receiver<bool>) {
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
            }
            Err(e) => {
                view.lock().expect("lease view").lost = Some(e);
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
async fn look_after_standbys(farm: Arc<Farm>, svc: Service, active: tokio::sync::watch::Receiver<String>, seen: Arc<std::sync::Mutex<BTreeMap<String, bool>>>, log: Log, mut interrupted: tokio::sync::watch::Receiver<bool>) {
    let limit = svc.heartbeat.max(Duration::from_millis(500));
    let every = (svc.heartbeat * 4).max(Duration::from_secs(2));
    let mut conns = Conns { farm: farm.clone(), hosts: BTreeMap::new() };
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
        }
        let current = active.borrow().clone();
        seen.lock().expect("standbys").remove(&current);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = interrupted.changed() => {}
        }
    }
}

/// Watches one service until interrupted.
#[allow(clippy::too_many_arguments)]
async fn watch_service(
    farm: Arc<Farm>,
    svc: Service,
    active: String,
    mut clients: Vec<String>,
    held: BTreeMap<String, Arc<AnyHost>>,
    lease: impl Lease + 'static,
    log: Log,
    mut interrupted: tokio::sync::watch::Receiver<bool>,
) {
    let limit = svc.heartbeat.max(Duration::from_millis(500));
    // The connections of the first read serve the heartbeats, confirmations and failovers.
    let mut conns = Conns { farm: farm.clone(), hosts: held };
    let mut monitor = Monitor::new(active, svc.members.clone(), svc.dead_after.as_millis() as u64, svc.confirm, now_ms());
    let mut last_sync: BTreeMap<String, (Instant, u64)> = BTreeMap::new();
    let mut epoch = 0;
    let mut last_beat_ms = 0;
    // The lease is renewed in its own loop, every heartbeat: a member it cannot
    // reach (the one just failed over from) never stretches the heartbeat's ticks.
    let shared = Arc::new(std::sync::Mutex::new(LeaseView::default()));
    let renewing = tokio::spawn(renew(lease, shared.clone(), svc.heartbeat, interrupted.clone()));
    let (tell_active, active_now) = tokio::sync::watch::channel(monitor.active.clone());
    let seen = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let looking = tokio::spawn(look_after_standbys(farm.clone(), svc.clone(), active_now, seen.clone(), log, interrupted.clone()));
    let cache: Cache = Default::default();
    let mut refreshed: Option<Instant> = None;
    // The clients' answers about the active member, asked at its first missed beat.
    let mut asking: Option<tokio::task::JoinHandle<Answers>> = None;
    loop {
        let tick = Instant::now();
        if *interrupted.borrow() {
            looking.abort();
            let _ = renewing.await;
            log.event(&svc.name, "stopped", "the watcher stopped and released its lease");
            return;
        }
        let active = monitor.active.clone();
        // The heartbeat is bounded: whatever a dead member's connection does,
        // the watcher goes on beating. What `farmctl status` shows of this
        // watcher goes to the lease's loop, which keeps it with the lease.
        let down: Vec<String> = seen.lock().expect("standbys").iter().filter(|(_, up)| !**up).map(|(m, _)| m.clone()).collect();
        let note = std::iter::once(format!("active={active} beat={last_beat_ms} every={}", svc.heartbeat.as_millis()))
            .chain((!down.is_empty()).then(|| format!("down={}", down.join(","))))
            .chain(last_sync.iter().map(|(m, (_, t))| format!("sync:{m}={t}")))
            .collect::<Vec<_>>()
            .join(" ");
        let lost = {
            let mut view = shared.lock().expect("lease view");
            view.note = note;
            epoch = epoch.max(view.token);
            view.lost.clone()
        };
        if let Some(e) = lost {
            log.event(&svc.name, "lease-lost", &format!("{e}; this watcher stops acting"));
            looking.abort();
            return;
        }
        let ok = match tokio::time::timeout(limit * 4, check(&mut conns, &farm, &svc, &active, limit)).await {
            Ok(ok) => ok,
            Err(_) => {
                log.event(&svc.name, "stalled", &format!("the heartbeat of {active} took longer than {:?}; its connections are made again", limit * 4));
                for h in std::mem::take(&mut conns.hosts).into_values() {
                    tokio::task::spawn_blocking(move || drop(h));
                }
                false
            }
        };
        if ok {
            last_beat_ms = now_ms();
        }
        match monitor.heartbeat(ok, now_ms()) {
            Step::Healthy => {
                if let Some(pending) = asking.take() {
                    pending.abort();
                }
                if refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
                    refreshed = Some(Instant::now());
                    refresh(&farm, &conns.hosts, &cache);
                }
                if !svc.sync.is_empty() {
                    sync(&mut conns, &farm, &svc, &active, epoch, &mut last_sync, log, limit).await;
                }
            }
            Step::Silent { for_ms } => {
                log.event(&svc.name, "missed", &format!("{active} did not answer its heartbeat (silent {for_ms} ms)"));
                // The clients are asked at the first miss, so that their answers
                // are in hand when `dead_after` ends.
                if asking.is_none() {
                    let (farm, held, clients, svc, needed) = (farm.clone(), conns.hosts.clone(), clients.clone(), svc.clone(), monitor.needed(clients.len()));
                    asking = Some(tokio::spawn(async move { ask_clients(farm, held, clients, &svc, &active, needed, limit).await }));
                }
            }
            Step::AskClients => {
                let answers = match asking.take() {
                    Some(pending) => pending.await.unwrap_or(Answers { down: 0, asked: 0, made: Vec::new() }),
                    None => ask_clients(farm.clone(), conns.hosts.clone(), clients.clone(), &svc, &active, monitor.needed(clients.len()), limit).await,
                };
                let (down, asked) = (answers.down, answers.asked);
                for (c, h) in answers.made {
                    conns.hosts.entry(c).or_insert(h);
                }
                match monitor.confirm(down, asked) {
                    Verdict::NotConfirmed { down, asked, needed } => {
                        log.event(&svc.name, "not-confirmed", &format!("the watcher cannot reach {active}, but only {down} of {asked} client(s) confirm ({needed} needed): not failing over"));
                    }
                    Verdict::Dead { down, asked } => {
                        log.event(&svc.name, "confirmed", &format!("{active} is dead: {down} of {asked} client(s) cannot reach it either"));
                        if !fence(&farm, &svc, &active, log).await && svc.fence_required {
                            log.event(&svc.name, "held-back", &format!("the fence of {active} failed and fence_required is set: no failover"));
                        } else {
                            let mut healthy = Vec::new();
                            for m in svc.members.iter().filter(|m| **m != active) {
                                let mut ok = check(&mut conns, &farm, &svc, m, limit).await;
                                if ok && !svc.sync.is_empty() && last_sync.get(m).is_none_or(|(t, _)| t.elapsed() > svc.max_lag) {
                                    log.event(&svc.name, "lagging", &format!("{m} answers, but its last good sync is older than max_lag {:?}: not promoted", svc.max_lag));
                                    ok = false;
                                }
                                healthy.push((m.clone(), ok));
                            }
                            match monitor.choose(&healthy) {
                                Choice::NoHealthyStandby => {
                                    log.event(&svc.name, "no-standby", &format!("{active} is dead and NO other member is healthy: nothing was changed"));
                                    journal(&svc.name, &farm, "no-standby", format!("{active} dead; no healthy member"));
                                }
                                Choice::FailoverTo(next) => {
                                    log.event(&svc.name, "failover", &format!("repointing the clients from {active} to {next}"));
                                    match failover(&farm, &conns.hosts, &svc, &active, &next, epoch, &cache, log, &interrupted).await {
                                        Ok(n) => {
                                            log.event(&svc.name, "repointed", &format!("{n} client(s) now name {next}; {active} will be a standby when it comes back"));
                                            journal(&svc.name, &farm, "failover", format!("{active} -> {next}: {n} client(s) repointed"));
                                            monitor.failed_over(&next, now_ms());
                                            let _ = tell_active.send(next.clone());
                                            // Confirmed dead: its return is news.
                                            seen.lock().expect("standbys").insert(active.clone(), false);
                                            clients.retain(|c| !svc.members.contains(c));
                                            // The failover changed the clients: read them again at the
                                            // next healthy heartbeat, so that the next failover
                                            // (this member may fail too) need not wait for a read.
                                            refreshed = None;
                                        }
                                        Err(e) => log.event(&svc.name, "failover-failed", &format!("{active} -> {next}: {e}")),
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let rest = svc.heartbeat.saturating_sub(tick.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(rest) => {}
            _ = interrupted.changed() => {}
        }
    }
}

/// Watches every service of the farm until SIGINT or SIGTERM.
pub async fn watch(farm_path: &std::path::Path, log: Log) -> Result<()> {
    let mut session = Session::load(farm_path, 64)?;
    let farm = session.farm.clone();
    if farm.services.is_empty() {
        return Err(Error::new(ErrorKind::Refused, format!("{} has no [services]; there is nothing to watch", farm_path.display())).hint("add a [services.NAME] with `virtual` and `members`"));
    }
    let all: Vec<String> = farm.hosts.keys().cloned().collect();
    session.read(&all).await;
    let interrupted = super::interrupt_signal_saying(move || log.event("watch", "interrupted", "the watcher stops and releases its lease (interrupt again to quit at once)"));
    let me = holder();
    let mut tasks = tokio::task::JoinSet::new();
    for svc in farm.services.values() {
        let (active, clients) = crate::plan::services::active(&farm, &session.live, svc);
        let active = match active {
            Some(a) => a,
            None => {
                log.event(&svc.name, "no-clients", &format!("no client names any member; taking {} as active", svc.members[0]));
                svc.members[0].clone()
            }
        };
        let limit = svc.heartbeat.max(Duration::from_millis(500));
        // The lease keeps its own connections (sharing the read's), so that it
        // can be renewed while the heartbeat runs.
        let mut lease = MemberLease::new(Conns { farm: farm.clone(), hosts: session.hosts.clone() }, svc, &me, limit);
        match lease.acquire("").await {
            Err(e) => return Err(Error::new(ErrorKind::Refused, e).hint("one watcher per farm: stop the other, or wait for its lease to expire")),
            Ok(g) if g.places == 0 => return Err(Error::new(ErrorKind::Unreachable, format!("cannot take the lease of service {}: no member answers", svc.name))),
            Ok(_) => {}
        }
        log.event(&svc.name, "watching", &format!("{active} is active (named by {} client(s)); standbys: {}; lease held by {me}", clients.len(), svc.members.iter().filter(|m| **m != active).cloned().collect::<Vec<_>>().join(", ")));
        tasks.spawn(watch_service(farm.clone(), svc.clone(), active, clients, session.hosts.clone(), lease, log, interrupted.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

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
    pub lease: Option<super::lease::Holding>,
    /// When the watcher last had an answer from the active member (ms since the epoch, its clock).
    pub last_heartbeat_ms: Option<u64>,
    /// The watcher's heartbeat interval, in ms.
    pub heartbeat_every_ms: Option<u64>,
    /// Standbys the watcher last saw not answering their check.
    pub watcher_sees_down: Vec<String>,
    /// (standby, ms since the epoch) of each standby's last good sync.
    pub last_sync: Vec<(String, u64)>,
}

impl ServiceStatus {
    /// Whether the service is served: its active member answers.
    pub fn served(&self) -> bool {
        self.active.is_some() && self.active_answers
    }
}

/// Each service's active member (from the clients' files) and its watcher's lease.
pub async fn service_status(session: &mut Session) -> Vec<ServiceStatus> {
    let farm = session.farm.clone();
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
        };
        let conns = Conns { farm: farm.clone(), hosts: session.hosts.clone() };
        if let Some(held) = MemberLease::new(conns, svc, "", Duration::from_secs(5)).holding().await {
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
