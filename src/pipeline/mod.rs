//! The library pipeline every command, and later rollouts and `watch`, runs:
//! load the farm, connect, read the live hosts, plan, check, execute. Nothing
//! here prints or prompts; the command layer does that with what comes back.

mod address;
mod beside;
#[cfg(feature = "etcd")]
mod etcd;
mod failover;
mod look;
pub mod status;
pub mod switches;
pub mod lease;
pub mod rollback;
pub mod leases;
mod saved;
mod spread;
mod sync;
pub mod watch;

pub use saved::{differences, farm_of, load_plan, prepare_saved, verify_saved_file, SavedRun};
pub use look::Log;
pub use crate::workstation::{find_plan, keep_applied, kept_plans_dir, write_atomic};
/// What the commands show of an apply: its journal, its progress and its
/// summary (the commands reach `apply` only through here).
pub use crate::apply::{journal, progress, HostState, Summary};

use crate::apply::{self, journal::Journal, Reporter};
use crate::error::{Error, ErrorKind, Result};
use crate::farm::{self, Farm};
use crate::live::LiveFarm;
use crate::plan::{self, ActionKind, Plan, Planned};
use crate::transport::{self, AnyHost, Host, Pool, TransportError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// One run against a farm: the farm and the connections opened so far (one
/// pool, which an apply and a watcher go on using), and what was read.
pub struct Session {
    pub pool: Pool,
    pub live: LiveFarm,
    /// Hosts whose rollout gate has not passed since their upgrade, by this workstation's journal.
    pub unproven: plan::rollout::Unproven,
}

impl Session {
    /// Loads and validates the farm file.
    pub fn load(path: &Path, parallel: usize) -> Result<Session> {
        Ok(Session::with_farm(Arc::new(farm::load(path)?), parallel))
    }

    pub fn with_farm(farm: Arc<Farm>, parallel: usize) -> Session {
        Session { pool: Pool::new(farm, BTreeMap::new(), parallel), live: LiveFarm::new(), unproven: Default::default() }
    }

    /// The hosts `--limit` selects (all, when it is empty).
    pub fn select(&self, limit: &[String]) -> Result<Vec<String>> {
        plan::select(&self.pool.farm, limit).map_err(|e| Error::new(ErrorKind::Refused, e).hint("--limit takes host names, roles or globs; `!name` excludes"))
    }

    /// Connects to and reads every host in `names`, at most `parallel` at a time.
    /// A host that cannot be reached is recorded in `live` with why.
    pub async fn read(&mut self, names: &[String]) {
        let farm = self.pool.farm.clone();
        // Connections this session already holds are used again.
        let held: Vec<Option<Arc<AnyHost>>> = names.iter().map(|n| self.pool.hosts.get(n).cloned()).collect();
        let read = crate::fanout::each(names.iter().cloned().zip(held).collect(), self.pool.parallel, move |(name, held): (String, Option<Arc<AnyHost>>)| {
            let farm = farm.clone();
            async move {
                let host = match held {
                    Some(h) if h.refresh().await.is_ok() => h,
                    _ => match transport::connect(&farm, &name).await {
                        Ok(h) => Arc::new(h),
                        Err(e) => return (name, Err(e.into()), None),
                    },
                };
                let role = &farm.hosts[&name].role;
                let probe = farm.rollouts.get(role).map(|r| r.probe.as_str());
                let state = host.read_state(&farm.state_dir, &farm.paths_of(&name), probe).await;
                (name, state, Some(host))
            }
        })
        .await;
        self.read_unproven();
        for (name, state, host) in read {
            self.live.insert(name.clone(), state);
            if let Some(h) = host {
                self.pool.hosts.insert(name, h);
            }
        }
    }

    /// What this workstation's rollouts left ungated is part of what is read:
    /// hosts upgraded by a run that died before their wave's gate passed.
    pub fn read_unproven(&mut self) {
        if !self.pool.farm.rollouts.is_empty() {
            self.unproven = apply::journal::unproven(&Journal::open().read().unwrap_or_default());
        }
    }

    /// Connects to every host in `names` not yet connected; returns those that cannot be reached.
    pub async fn connect(&mut self, names: &[String]) -> Vec<(String, TransportError)> {
        let missing: Vec<String> = names.iter().filter(|n| !self.pool.hosts.contains_key(*n)).cloned().collect();
        let mut down = Vec::new();
        for (name, r) in transport::connect_all(&self.pool.farm, &missing, self.pool.parallel).await {
            match r {
                Ok(h) => {
                    self.pool.hosts.insert(name, h);
                }
                Err(e) => down.push((name, e)),
            }
        }
        down
    }

    /// Connects to every host in `names`, or fails naming each that cannot be reached.
    pub async fn connect_or_refuse(&mut self, names: &[String], what: &str) -> Result<()> {
        let down = self.connect(names).await;
        if down.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = down.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        let mut err = Error::new(ErrorKind::Unreachable, format!("refusing to {what}, nothing was written: cannot reach\n  {}", lines.join("\n  ")));
        for (_, e) in &down {
            err = err.hint(e.hint());
        }
        Err(err.hint("fix the host, or make a new plan with --limit"))
    }

    /// Plans the hosts in `scope` from what was read.
    pub fn plan(&self, scope: &[String], limit: &[String]) -> Result<Planned> {
        Ok(plan::plan_with(&self.pool.farm, &self.live, scope, limit, &self.unproven)?)
    }

    /// Loads, selects, reads and plans: what `plan`, `graph` and `apply FARM` start with.
    pub async fn read_and_plan(path: &Path, limit: &[String], parallel: usize) -> Result<(Session, Planned)> {
        let mut session = Session::load(path, parallel)?;
        let scope = session.select(limit)?;
        session.read(&scope).await;
        let planned = session.plan(&scope, limit)?;
        Ok((session, planned))
    }

    /// The executor's options for a run of `plan`. The run listens for SIGINT
    /// and SIGTERM from here on: they abort it cleanly instead of killing it.
    pub fn options(&self, plan: &Plan, max_fail: usize, detach: bool) -> apply::Options {
        self.options_interrupted_by(plan, max_fail, detach, interrupt_signal())
    }

    /// [`Session::options`] with the caller's interruption instead of a new
    /// signal handler (the watcher has its own, and says what an interrupt does).
    pub fn options_interrupted_by(
        &self,
        plan: &Plan,
        max_fail: usize,
        detach: bool,
        interrupted: tokio::sync::watch::Receiver<bool>,
    ) -> apply::Options {
        apply::Options {
            interrupted,
            parallel: self.pool.parallel,
            max_fail,
            owner: apply::LockOwner::this_process(&plan.id),
            state_dir: self.pool.farm.state_dir.clone(),
            detach,
            fence: None,
            switch_by: apply::SwitchBy::Workstation,
        }
    }

    /// Executes `plan` through the connections held.
    pub async fn execute(&mut self, planned: &Planned, opts: &apply::Options, reporter: &dyn Reporter, journal: &Journal) -> Summary {
        apply::execute(&planned.plan, &planned.contents, &mut self.pool, opts, reporter, journal).await
    }
}

/// Turns true on the first SIGINT or SIGTERM. A second one ends farmctl at once.
pub fn interrupt_signal() -> tokio::sync::watch::Receiver<bool> {
    interrupt_signal_saying(|| crate::say!("interrupted: telling every host that has not switched to drop its staged copies and release its lock (interrupt again to quit at once)"))
}

/// Turns true on the first SIGINT or SIGTERM, after `say` tells what happens then.
pub fn interrupt_signal_saying(say: impl FnOnce() + Send + 'static) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        say();
        let _ = tx.send(true);
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        std::process::exit(130);
    });
    rx
}

/// An error naming every host that could not be read or planned, if any.
pub fn unreachable_error(plan: &Plan, live: &LiveFarm) -> Option<Error> {
    let failed = plan.failed_hosts();
    if failed.is_empty() {
        return None;
    }
    let lines: Vec<String> = failed.iter().map(|(host, error)| format!("  {host}: {}", error.replace('\n', " "))).collect();
    let n = failed.len();
    let mut err = Error::new(ErrorKind::Unreachable, format!("{n} host{} could not be planned:\n{}", if n == 1 { "" } else { "s" }, lines.join("\n")));
    for (host, _) in &failed {
        if let Some(Err(e)) = live.get(*host) {
            err = err.hint(e.hint.clone().unwrap_or_default());
        }
    }
    for h in plan.hosts.iter().filter_map(|h| h.hint()) {
        err = err.hint(h);
    }
    if failed.len() < plan.hosts.len() {
        let excl: Vec<String> = failed.iter().map(|(n, _)| format!("!{n}")).collect();
        err = err.hint(format!("to go ahead without them, pass --limit '{}'", excl.join(",")));
    }
    Some(err)
}

/// Hosts whose clocks are off by more than the farm's tolerance, as warnings.
pub fn clock_warnings(farm: &Farm, live: &LiveFarm) -> Vec<String> {
    let tolerance = farm.clock_tolerance.as_millis() as i64;
    let mut out = Vec::new();
    for (host, state) in live {
        // Only what the measurement can vouch for (see `Clock::beyond`).
        if let Some(clock) = state.as_ref().ok().and_then(crate::live::LiveHost::clock).filter(|c| c.beyond(tolerance)) {
            out.push(format!("{host}'s clock is {clock} off this workstation's (tolerance {tolerance} ms); a switch by the hosts' clocks fires that much off there"));
        }
    }
    out
}

/// Who fires the plan's scheduled switches. By the hosts' clocks (`by_host`),
/// every host a timed stage switches must have had its clock read, and none
/// may be certainly further than `max_offset` off this workstation's (its
/// offset less the read's uncertainty); such a clock is refused, naming each
/// such host. The check right before T measures every clock again. A host whose clock could not be
/// read (a `date` without `%N`) makes the workstation fire, with a note.
pub fn switch_by(
    plan: &Plan,
    live: &LiveFarm,
    by_host: bool,
    max_offset: std::time::Duration,
) -> Result<(apply::SwitchBy, Option<String>)> {
    let timed: BTreeSet<usize> = plan
        .stages
        .iter()
        .filter(|s| s.at.is_some())
        .map(|s| s.index)
        .collect();
    let hosts: BTreeSet<&str> = plan
        .actions
        .iter()
        .filter(|a| timed.contains(&a.stage) && matches!(a.kind, ActionKind::Edit(_)))
        .map(|a| a.host.as_str())
        .collect();
    if !by_host || hosts.is_empty() {
        return Ok((apply::SwitchBy::Workstation, None));
    }
    let bound = max_offset.as_millis() as i64;
    let count = hosts.len();
    let (mut one_way, mut off, mut unread) = (0i64, Vec::new(), Vec::new());
    for h in hosts {
        match live.get(h).and_then(|r| r.as_ref().ok()).and_then(crate::live::LiveHost::clock) {
            Some(clock) => {
                one_way = one_way.max(clock.uncertainty_ms);
                // Refused here is only what the read vouches for: its round trip
                // includes opening a channel, which widens it. The check right
                // before T measures each clock again, over one round trip.
                if clock.beyond(bound) {
                    off.push(format!("{h} {clock}"));
                }
            }
            None => unread.push(h),
        }
    }
    if !off.is_empty() {
        return Err(Error::new(ErrorKind::Refused, format!("a switch by the hosts' clocks needs each within {bound} ms of this workstation's; off by more: {}", off.join(", ")))
            .hint("sync their clocks (NTP: `timedatectl status` on the host), or pass --switch-by workstation (each host then switches one network delay after T), or a larger --max-clock-offset"));
    }
    if !unread.is_empty() {
        let note = format!("switching by this workstation's word: the clock of {} could not be read (a `date` without %N?)", crate::render::host_ranges(&unread));
        return Ok((apply::SwitchBy::Workstation, Some(note)));
    }
    Ok((
        apply::SwitchBy::HostClock {
            one_way: std::time::Duration::from_millis(one_way.max(0) as u64),
            max_offset,
            hosts: count,
        },
        None,
    ))
}

/// Refuses a schedule that cannot be kept: a detach that cannot be armed, or a switch time that has passed.
pub fn check_schedule(plan: &Plan, detach: bool) -> Result<()> {
    if detach {
        if let Some(why) = apply::detach_problem(plan) {
            return Err(Error::new(ErrorKind::Refused, format!("cannot detach this plan: {why}")).hint("apply it without --detach, and keep this workstation running until the switch"));
        }
    }
    let now = jiff::Timestamp::now();
    for s in plan.stages.iter() {
        let has_edits = plan.actions.iter().any(|a| a.stage == s.index && matches!(a.kind, ActionKind::Edit(_)));
        if let (true, Some(at)) = (has_edits, &s.at) {
            if at.parse::<jiff::Timestamp>().is_ok_and(|t| t < now) {
                return Err(Error::new(ErrorKind::Refused, format!("the switch time {at} has passed ({}); refusing to switch late", crate::render::relative(at, now)))
                    .hint("set a new `at` in the farm file (or remove it to switch when applied), then plan again"));
            }
        }
    }
    Ok(())
}

