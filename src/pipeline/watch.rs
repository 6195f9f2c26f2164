//! `farmctl watch` as a library: heartbeats, confirmations, the lease, sync
//! and failovers for every service of a farm. The decisions are `watch`'s
//! pure state machine; a failover is a replacement planned and applied
//! through the same pipeline as any other (or, for a service with an
//! address, the address moved: `address.rs`), and lands in the journal.

use super::beside::{holder, lease_note, look_after_standbys, renew, AddressOwner, LeaseView};
use super::failover::{fence, journal, move_service, refresh, Cache, REFRESH};
use super::lease::Lease;
use super::leases::{AnyLease, Leases};
use super::look::{ask_clients, healthy_standbys, heartbeat, now_ms, Early, Log, WATCH_PARALLEL};
use super::spread::Spread;
use super::sync::sync;
use super::Session;
use crate::apply::journal::ServiceEvent;
use crate::error::{Error, ErrorKind, Result};
use crate::farm::{Farm, Service};
use crate::metrics::exporter::{Standing, WatchMetrics};
use crate::transport::{AnyHost, Pool};
use crate::watch::{Choice, Monitor, Step, Verdict};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one service's heartbeat loop keeps between beats.
struct Loop {
    conns: Pool,
    monitor: Monitor,
    /// The hosts that name a member; a member failed over from is not one.
    clients: Vec<String>,
    /// (when, ms since the epoch) of each standby's last good sync.
    last_sync: BTreeMap<String, (Instant, u64)>,
    /// The lease's fencing token, which every write carries.
    epoch: u64,
    /// When the active member first missed its heartbeat: a failover's time counts from there.
    silent_since: Option<Instant>,
    /// When the farm was last read again for the next failover.
    refreshed: Option<Instant>,
    /// The clients' answers about the active member and the standbys'
    /// health, asked at its first missed beat.
    early: Option<Early>,
}

/// What a failover uses of the watch loop besides its state.
struct Around<'a> {
    farm: &'a Arc<Farm>,
    svc: &'a Service,
    log: Log,
    metrics: &'a WatchMetrics,
    cache: &'a Cache,
    owner: &'a AddressOwner,
    seen: &'a std::sync::Mutex<BTreeMap<String, bool>>,
    tell_active: &'a tokio::sync::watch::Sender<String>,
    interrupted: &'a tokio::sync::watch::Receiver<bool>,
}

/// The active member is confirmed dead (`down` of `asked` clients cannot
/// reach it): fenced, then the service moves to the first healthy standby,
/// or, with none, nothing changes and the log says so loudly. `standbys`:
/// their health if it was looked at while `dead_after` ran.
async fn on_dead(cx: &Around<'_>, st: &mut Loop, active: &str, (down, asked): (usize, usize), standbys: Option<Vec<(String, bool)>>) {
    let (svc, log) = (cx.svc, cx.log);
    log.event(&svc.name, "confirmed", &format!("{active} is dead: {down} of {asked} client(s) cannot reach it either"));
    if !fence(cx.farm, svc, active, log).await && svc.fence_required {
        log.event(&svc.name, "held-back", &format!("the fence of {active} failed and fence_required is set: no failover"));
    } else {
        let healthy = match standbys {
            Some(h) => h,
            None => healthy_standbys(&mut st.conns, cx.farm, svc, active, &st.last_sync, log).await,
        };
        match st.monitor.choose(&healthy) {
            Choice::NoHealthyStandby => {
                log.event(&svc.name, "no-standby", &format!("{active} is dead and NO other member is healthy: nothing was changed"));
                journal(&svc.name, cx.farm, ServiceEvent::NoStandby, format!("{active} dead; no healthy member"));
            }
            Choice::FailoverTo(next) => {
                let moved = move_service(&mut st.conns, cx.farm, svc, (active, &next), st.epoch, cx.owner, cx.cache, log, cx.interrupted).await;
                match moved {
                    Ok(done) => {
                        log.event(&svc.name, "repointed", &format!("{done}; {active} will be a standby when it comes back"));
                        journal(&svc.name, cx.farm, ServiceEvent::Failover, format!("{active} -> {next}: {done}"));
                        st.monitor.failed_over(&next, now_ms());
                        cx.metrics.failover(&svc.name, st.silent_since.take().map_or(Duration::ZERO, |t| t.elapsed()));
                        cx.metrics.set_active(&svc.name, &svc.members, &next);
                        let _ = cx.tell_active.send(next.clone());
                        // Confirmed dead: its return is news.
                        cx.seen.lock().expect("standbys").insert(active.to_string(), false);
                        st.clients.retain(|c| !svc.members.contains(c));
                        // The failover changed the clients: read them again at the
                        // next healthy heartbeat, so that the next failover
                        // (this member may fail too) need not wait for a read.
                        st.refreshed = None;
                    }
                    Err(e) => log.event(&svc.name, "failover-failed", &format!("{active} -> {next}: {e}")),
                }
            }
        }
    }
}

impl Loop {
    /// One heartbeat of the active member. A beat not answered within its
    /// deadline is a miss already: the clients and the standbys are asked
    /// then, while the beat's retry runs.
    async fn beat(&mut self, farm: &Farm, svc: &Service, active: &str, log: Log) -> bool {
        // Past `dead_after` (not confirmed dead), a beat gets its whole
        // deadline again: it is what tells that the member is back.
        let left = match self.monitor.left_ms(now_ms()) {
            0 => Duration::MAX,
            ms => Duration::from_millis(ms),
        };
        let before = self.conns.clone();
        let beating = heartbeat(&mut self.conns, farm, svc, active, left, log);
        tokio::pin!(beating);
        tokio::select! {
            ok = &mut beating => ok,
            _ = tokio::time::sleep(svc.deadline()), if self.early.is_none() => {
                // Not `ask_early`: the beat holds `self.conns`, so the other fields are used one by one.
                self.early = Some(Early::ask(&before, svc, active, self.clients.clone(), self.monitor.needed(self.clients.len()), &self.last_sync, log));
                beating.await
            }
        }
    }

    /// Asks the clients and the standbys now, unless they were asked already.
    fn ask_early(&mut self, conns: &Pool, svc: &Service, active: &str, log: Log) {
        if self.early.is_none() {
            self.early = Some(Early::ask(conns, svc, active, self.clients.clone(), self.monitor.needed(self.clients.len()), &self.last_sync, log));
        }
    }

    /// Reads the farm again over the open connections every `REFRESH`, so
    /// that a failover is planned from a recent reading without waiting for one.
    fn refresh_when_due(&mut self, farm: &Arc<Farm>, cache: &Cache) {
        if self.refreshed.is_none_or(|t| t.elapsed() >= REFRESH) {
            self.refreshed = Some(Instant::now());
            refresh(farm, &self.conns.hosts, cache);
        }
    }
}

/// Why a watcher stopped watching a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Stopped by the operator; the lease was released.
    Interrupted,
    /// The lease is another watcher's, or could not be proven.
    Lost,
    /// Released for another watcher: this one held more than its share.
    GaveUp,
}

/// Stops watching a service: the lease's loop releases the lease (a
/// standby takes it at once), and the log says why.
async fn stop(quit: tokio::sync::watch::Sender<bool>, renewing: tokio::task::JoinHandle<()>, give_up: bool, svc: &Service, log: Log, spread: &Spread) -> Ended {
    let _ = quit.send(true);
    let _ = renewing.await;
    if give_up {
        log.event(&svc.name, "gave-up", &format!("released its lease for another watcher to take: {}", spread.describe()));
        return Ended::GaveUp;
    }
    log.event(&svc.name, "stopped", "the watcher stopped and released its lease");
    Ended::Interrupted
}

/// Watches one service until interrupted, the lease is lost, or this
/// watcher gives the service up to another.
#[allow(clippy::too_many_arguments)]
async fn watch_service(
    farm: Arc<Farm>,
    svc: Service,
    active: String,
    clients: Vec<String>,
    held: BTreeMap<String, Arc<AnyHost>>,
    lease: impl Lease + 'static,
    token: u64,
    log: Log,
    metrics: Arc<WatchMetrics>,
    spread: &Spread,
    mut interrupted: tokio::sync::watch::Receiver<bool>,
) -> Ended {
    let limit = svc.deadline();
    metrics.begin(&svc.name, &svc.members, &active);
    let mut st = Loop {
        // The connections of the first read serve the heartbeats, confirmations and failovers.
        conns: Pool::new(farm.clone(), held, WATCH_PARALLEL),
        monitor: Monitor::new(active, svc.members.clone(), svc.dead_after.as_millis() as u64, svc.confirm, now_ms()),
        clients,
        last_sync: BTreeMap::new(),
        // Every write from the first beat on carries the token the lease was taken with.
        epoch: token,
        silent_since: None,
        refreshed: None,
        early: None,
    };
    let mut last_beat_ms = 0;
    // The lease is renewed in its own loop, every heartbeat: a member it cannot
    // reach (the one just failed over from) never stretches the heartbeat's ticks.
    let shared = Arc::new(std::sync::Mutex::new(LeaseView { token, ..LeaseView::default() }));
    // The lease's loop releases the lease when told to quit (an interrupt, or giving the service up).
    let (quit, quit_rx) = tokio::sync::watch::channel(false);
    let renewing = tokio::spawn(renew(lease, svc.name.clone(), shared.clone(), svc.heartbeat, metrics.clone(), quit_rx));
    let (tell_active, active_now) = tokio::sync::watch::channel(st.monitor.active.clone());
    let seen = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let owner: AddressOwner = Arc::new(tokio::sync::Mutex::new(st.monitor.active.clone()));
    let looking = tokio::spawn(look_after_standbys(farm.clone(), svc.clone(), active_now, seen.clone(), shared.clone(), owner.clone(), log, interrupted.clone()));
    let cache: Cache = Default::default();
    loop {
        let tick = Instant::now();
        let give_up = !*interrupted.borrow() && spread.should_give_up();
        if *interrupted.borrow() || give_up {
            looking.abort();
            return stop(quit, renewing, give_up, &svc, log, spread).await;
        }
        let active = st.monitor.active.clone();
        // The heartbeat is bounded: whatever a dead member's connection does,
        // the watcher goes on beating. What `farmctl status` shows of this
        // watcher goes to the lease's loop, which keeps it with the lease.
        let note = lease_note(&svc, &active, last_beat_ms, &seen, &st.last_sync);
        let lost = {
            let mut view = shared.lock().expect("lease view");
            view.note = note;
            st.epoch = st.epoch.max(view.token);
            view.lost.clone()
        };
        if let Some(e) = lost {
            log.event(&svc.name, "lease-lost", &format!("{e}; this watcher stops acting"));
            looking.abort();
            return Ended::Lost;
        }
        let beat = Instant::now();
        let ok = st.beat(&farm, &svc, &active, log).await;
        metrics.heartbeat(&svc.name, beat.elapsed(), ok);
        st.silent_since = if ok { None } else { st.silent_since.or(Some(beat)) };
        last_beat_ms = if ok { now_ms() } else { last_beat_ms };
        for (m, (t, _)) in &st.last_sync {
            metrics.sync_age(&svc.name, m, t.elapsed());
        }
        match st.monitor.heartbeat(ok, now_ms()) {
            Step::Healthy => {
                if let Some(pending) = st.early.take() {
                    pending.abort();
                }
                st.refresh_when_due(&farm, &cache);
                if !svc.sync.is_empty() {
                    sync(&mut st.conns, &farm, &svc, &active, st.epoch, &mut st.last_sync, log, limit).await;
                }
            }
            Step::Silent { for_ms } => {
                log.event(&svc.name, "missed", &format!("{active} did not answer its heartbeat (silent {for_ms} ms)"));
                // The clients are asked at the first miss, so that their answers
                // are in hand when `dead_after` ends.
                st.ask_early(&st.conns.clone(), &svc, &active, log);
            }
            Step::AskClients => {
                let (answers, standbys) = match st.early.take() {
                    Some(pending) => pending.answers().await,
                    None => (ask_clients(farm.clone(), st.conns.hosts.clone(), st.clients.clone(), &svc, &active, st.monitor.needed(st.clients.len()), limit).await, None),
                };
                let (down, asked) = (answers.down, answers.asked);
                metrics.confirmations(&svc.name, asked, down);
                for (c, h) in answers.made {
                    st.conns.hosts.entry(c).or_insert(h);
                }
                match st.monitor.confirm(down, asked) {
                    Verdict::NotConfirmed { down, asked, needed } => {
                        log.event(&svc.name, "not-confirmed", &format!("the watcher cannot reach {active}, but only {down} of {asked} client(s) confirm ({needed} needed): not failing over"));
                    }
                    Verdict::Dead { down, asked } => {
                        let around = Around { farm: &farm, svc: &svc, log, metrics: &metrics, cache: &cache, owner: &owner, seen: &seen, tell_active: &tell_active, interrupted: &interrupted };
                        on_dead(&around, &mut st, &active, (down, asked), standbys).await;
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

/// How `farmctl watch` runs.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Refuse at once when another watcher holds a service's lease, instead of standing by.
    pub no_wait: bool,
    /// Where to serve `/metrics` and `/healthz`.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Watches every service of the farm until SIGINT or SIGTERM. A service whose
/// lease another watcher holds is stood by for: this watcher takes it over
/// when that lease ends (its holder's expiry, or its release on a clean stop)
/// and carries on from the hosts as they are then. With `no_wait`, a held
/// lease is refused at once instead, as a script wants.
pub async fn watch(farm_path: &std::path::Path, log: Log, opts: WatchOptions) -> Result<()> {
    let no_wait = opts.no_wait;
    let mut session = Session::load(farm_path, 64)?;
    let farm = session.pool.farm.clone();
    if farm.services.is_empty() {
        return Err(Error::new(ErrorKind::Refused, format!("{} has no [services]; there is nothing to watch", farm_path.display())).hint("add a [services.NAME] with `virtual` and `members`"));
    }
    let all: Vec<String> = farm.hosts.keys().cloned().collect();
    session.read(&all).await;
    let interrupted = super::interrupt_signal_saying(move || log.event("watch", "interrupted", "the watcher stops and releases its lease (interrupt again to quit at once)"));
    let me = holder();
    let metrics = Arc::new(WatchMetrics::default());
    if let Some(addr) = opts.metrics {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| Error::new(ErrorKind::Refused, format!("cannot serve the watcher's metrics on {addr}: {e}")).hint("give --metrics a free address and port, such as 127.0.0.1:9799"))?;
        log.event("watch", "metrics", &format!("serving /metrics and /healthz on http://{addr}"));
        tokio::spawn(crate::metrics::exporter::serve(listener, metrics.clone()));
    }
    let mut tasks = tokio::task::JoinSet::new();
    let leases = Leases::open(&farm, &me).await?;
    let spread = leases.spread(farm.services.len(), interrupted.clone()).await;
    for svc in farm.services.values() {
        let limit = svc.lease_limit();
        if !spread.may_take() {
            log.event(&svc.name, "standing-by", &format!("left to the other watchers: {}", spread.describe()));
            tasks.spawn(serve(farm.clone(), svc.clone(), leases.clone(), spread.clone(), Err(Said { holder: None, silent: false }), log, metrics.clone(), interrupted.clone()));
            continue;
        }
        // The lease keeps its own connections (sharing the read's), so that it
        // can be renewed while the heartbeat runs.
        let mut lease = leases.of(session.pool.clone(), svc, limit);
        let first = match lease.acquire("").await {
            Ok(g) if g.places > 0 => {
                let (active, clients) = active_member(&farm, &session, svc, log);
                Ok(Watching { active, clients, hosts: session.pool.hosts.clone(), lease, token: g.token, took_from: None })
            }
            Err(e) if no_wait => return Err(Error::new(ErrorKind::Refused, e.to_string()).hint("stop the other watcher, or wait for its lease to expire; without --no-wait this watcher stands by")),
            Ok(_) if no_wait => return Err(Error::new(ErrorKind::Unreachable, format!("cannot take the lease of service {}: {}", svc.name, lease.silence()))),
            Err(e) => {
                log.event(&svc.name, "standing-by", &format!("{e}; this watcher stands by and takes over when that lease ends"));
                metrics.lease(&svc.name, e.holder().map_or(Standing::Unreachable, |h| Standing::StandsBy { holder: h.to_string() }), 0);
                Err(Said { holder: e.holder().map(str::to_string), silent: false })
            }
            Ok(_) => {
                log.event(&svc.name, "standing-by", &format!("{}; this watcher tries again every heartbeat", lease.silence()));
                metrics.lease(&svc.name, Standing::Unreachable, 0);
                Err(Said { holder: None, silent: true })
            }
        };
        if let Ok(w) = &first {
            spread.took();
            metrics.lease(&svc.name, Standing::Holds, w.token);
        }
        tasks.spawn(serve(farm.clone(), svc.clone(), leases.clone(), spread.clone(), first, log, metrics.clone(), interrupted.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// What a watcher standing by has said already: the holder it named, or
/// that the lease's store did not answer (each is said again only when it changes).
#[derive(Default)]
struct Said {
    holder: Option<String>,
    silent: bool,
}

/// A service this watcher holds the lease of, ready to watch.
struct Watching {
    active: String,
    clients: Vec<String>,
    hosts: BTreeMap<String, Arc<AnyHost>>,
    lease: AnyLease,
    token: u64,
    /// The holder whose lease ended, when this watcher took it over.
    took_from: Option<String>,
}

/// The active member by the clients' files, or the first member when no client names one.
fn active_member(farm: &Farm, session: &Session, svc: &Service, log: Log) -> (String, Vec<String>) {
    let (active, clients) = crate::plan::services::active(farm, &session.live, svc);
    let active = active.unwrap_or_else(|| {
        log.event(&svc.name, "no-clients", &format!("no client names any member; taking {} as active", svc.members[0]));
        svc.members[0].clone()
    });
    (active, clients)
}

/// Watches one service while this watcher holds its lease, and stands by
/// while another does: until interrupted.
#[allow(clippy::too_many_arguments)]
async fn serve(farm: Arc<Farm>, svc: Service, leases: Leases, spread: Arc<Spread>, first: std::result::Result<Watching, Said>, log: Log, metrics: Arc<WatchMetrics>, interrupted: tokio::sync::watch::Receiver<bool>) {
    let mut next = first;
    loop {
        // After a lease lost, nothing has been said yet of the new holder.
        let w = match std::mem::replace(&mut next, Err(Said::default())) {
            Ok(w) => w,
            Err(said) => match stand_by(&farm, &svc, &leases, &spread, said, log, &metrics, interrupted.clone()).await {
                Some(w) => w,
                None => return,
            },
        };
        let standbys = svc.members.iter().filter(|m| **m != w.active).cloned().collect::<Vec<_>>().join(", ");
        let how = match &w.took_from {
            Some(old) => format!("taken over from {old} with fencing token {}", w.token),
            None => format!("held by {} with fencing token {}", leases.holder(), w.token),
        };
        log.event(&svc.name, if w.took_from.is_some() { "took-over" } else { "watching" }, &format!("{} is active (named by {} client(s)); standbys: {standbys}; lease {how}", w.active, w.clients.len()));
        metrics.lease(&svc.name, Standing::Holds, w.token);
        let mut w = w;
        if svc.address.is_some() {
            let mut conns = Pool::new(farm.clone(), std::mem::take(&mut w.hosts), WATCH_PARALLEL);
            super::address::claim(&mut conns, &svc, &w.active, w.token, log, svc.lease_limit()).await;
            w.hosts = conns.hosts;
        }
        let ended = watch_service(farm.clone(), svc.clone(), w.active, w.clients, w.hosts, w.lease, w.token, log, metrics.clone(), &spread, interrupted.clone()).await;
        spread.ended(ended == Ended::GaveUp);
        if ended == Ended::Interrupted || *interrupted.borrow() {
            return;
        }
        // The lease was lost (another watcher took it while this one could
        // not renew) or given up: this watcher stands by.
    }
}

/// Waits, a heartbeat at a time, until this watcher can take the service's
/// lease; then reads the hosts again, so that it carries on from the live
/// state. `None` when interrupted first.
#[allow(clippy::too_many_arguments)]
async fn stand_by(farm: &Arc<Farm>, svc: &Service, leases: &Leases, spread: &Spread, said: Said, log: Log, metrics: &WatchMetrics, mut interrupted: tokio::sync::watch::Receiver<bool>) -> Option<Watching> {
    let limit = svc.lease_limit();
    let mut session = Session::with_farm(farm.clone(), WATCH_PARALLEL);
    let Said { holder: mut holder_seen, mut silent } = said;
    let mut lease = leases.of(session.pool.clone(), svc, limit);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(svc.heartbeat) => {}
            _ = interrupted.changed() => {}
        }
        if *interrupted.borrow() {
            log.event(&svc.name, "stopped", "the watcher stopped while standing by");
            return None;
        }
        // A watcher that holds its share leaves the rest to the others.
        if !spread.may_take() {
            continue;
        }
        match lease.acquire("").await {
            Ok(g) if g.places > 0 => {
                // The farm is read again before watching, and the lease kept
                // alive meanwhile: a dead host's read waits out its connect
                // timeout, which may be longer than the lease.
                let all: Vec<String> = farm.hosts.keys().cloned().collect();
                let kept = {
                    let read = session.read(&all);
                    tokio::pin!(read);
                    loop {
                        tokio::select! {
                            _ = &mut read => break Ok(()),
                            _ = tokio::time::sleep(svc.heartbeat) => {
                                if let Err(e) = lease.acquire("").await {
                                    break Err(e);
                                }
                            }
                        }
                    }
                };
                if let Err(e) = kept {
                    log.event(&svc.name, "lease-lost", &format!("{e}, while the farm was read; still standing by"));
                    continue;
                }
                spread.took();
                let (active, clients) = active_member(farm, &session, svc, log);
                return Some(Watching { active, clients, hosts: session.pool.hosts.clone(), lease, token: g.token, took_from: Some(holder_seen.unwrap_or_else(|| "no live holder".into())) });
            }
            Ok(_) => {
                metrics.lease(&svc.name, Standing::Unreachable, 0);
                if !std::mem::replace(&mut silent, true) {
                    log.event(&svc.name, "standing-by", &format!("{}; nothing is failed over until the lease is held again", lease.silence()));
                }
            }
            Err(e) => {
                silent = false;
                let holder = e.holder().unwrap_or_default().to_string();
                metrics.lease(&svc.name, Standing::StandsBy { holder: holder.clone() }, 0);
                if holder_seen.as_ref() != Some(&holder) {
                    log.event(&svc.name, "standing-by", &format!("{e}; still standing by"));
                }
                holder_seen = Some(holder);
            }
        }
    }
}
