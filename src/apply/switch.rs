//! Edits and reloads: staging, arming and switching the hosts of one level of
//! a stage, all or nothing. The one place these node kinds run.

use super::commands::{gate_failures, run_commands};
use super::detach::{armed_holder, lock_is_stale};
use super::{
    entries, judge, record, wait_until, AbortReason, Event, HostStage, HostState,
    Level, Summary, SwitchBy,
};
use crate::plan::Action;
use crate::transport::{AnyHost, Checked, FileWrite, Gate, Host, Pool, RunIds, TransportError, Word, WriteReport};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// One host's whole write in one session: stage, arm, and (on the word) check and switch.
/// A lock left by a dead farmctl of this workstation is broken and the session tried once more.
#[allow(clippy::too_many_arguments)]
async fn stage_and_switch_host(
    host: Arc<AnyHost>,
    ids: RunIds,
    owner: String,
    files: Vec<FileWrite>,
    reload: Option<String>,
    input: Vec<u8>,
    word: watch::Receiver<Word>,
    armed_out: oneshot::Sender<()>,
    checked_out: oneshot::Sender<Checked>,
    state_dir: String,
) -> Result<WriteReport, TransportError> {
    host.refresh().await?;
    let (mut armed_out, mut checked_out) = (Some(armed_out), Some(checked_out));
    let mut attempt = 0;
    loop {
        let (a_tx, a_rx) = oneshot::channel();
        let (c_tx, c_rx) = oneshot::channel();
        let gate = Gate { armed: a_tx, checked: c_tx, word: word.clone() };
        let forward = async {
            if a_rx.await.is_ok() {
                if let Some(o) = armed_out.take() {
                    let _ = o.send(());
                }
                if let Ok(c) = c_rx.await {
                    if let Some(o) = checked_out.take() {
                        let _ = o.send(c);
                    }
                }
            }
        };
        let (out, ()) = tokio::join!(host.stage_and_switch(&ids, &owner, &files, reload.as_deref(), input.clone(), gate), forward);
        attempt += 1;
        let stale = out.as_ref().ok().and_then(|r| r.locked_by.clone()).filter(|h| lock_is_stale(h));
        match stale {
            Some(holder) if attempt == 1 => {
                if let Ok(Some(job)) = host.break_lock(&state_dir, &holder).await {
                    return out.map(|r| WriteReport { locked_by: Some(armed_holder(&job, &holder)), ..r });
                }
            }
            _ => return out,
        }
    }
}

/// The hosts and gates of one level of a stage.
pub(super) struct LevelWork<'a> {
    pub work: Vec<HostStage>,
    pub gates: Vec<&'a Action>,
}

/// How long an interrupt's clean-up waits for the hosts to drop their staged
/// copies: an operator who pressed Ctrl-C waits seconds, not a command
/// timeout. A host that has not answered by then is named.
const CLEANUP: Duration = Duration::from_secs(5);

/// One stage's hosts while they stage, arm and switch: one session each,
/// told `check`, `go`, `at` or `abort` through a word channel of its own.
/// Host `i` of level `l` is `k = first[l] + i` in the stage's order.
struct Fleet<'a> {
    levels: Vec<LevelWork<'a>>,
    /// (level, index in level) of every host of the stage, level by level.
    order: Vec<(usize, usize)>,
    first: Vec<usize>,
    running: Vec<JoinSet<(usize, Result<WriteReport, TransportError>)>>,
    words: Vec<(watch::Sender<Word>, watch::Receiver<Word>)>,
    /// Each session's `ARMED`, until it is awaited.
    arming: Vec<Option<oneshot::Receiver<()>>>,
    /// Each armed session's answer to `check`, until it is awaited.
    checks: Vec<Option<oneshot::Receiver<Checked>>>,
    spawned: Vec<bool>,
    armed: Vec<bool>,
    /// Told to switch (`go` or `at`), not to abort.
    fired: Vec<bool>,
    limit: Duration,
}

/// What the check right before the switch found on a level's hosts.
struct Checks {
    confirmed: Vec<bool>,
    /// Why a host that was asked to check may not switch: it did not answer, or its clock is off.
    why_not: Vec<Option<String>>,
    bad: usize,
}

/// Until the operator interrupts; forever if no one can.
async fn until_interrupted(interrupted: &mut watch::Receiver<bool>) {
    if interrupted.wait_for(|i| *i).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl<'a> Fleet<'a> {
    fn new(levels: Vec<LevelWork<'a>>, limit: Duration) -> Fleet<'a> {
        let order: Vec<(usize, usize)> = levels.iter().enumerate().flat_map(|(l, lw)| (0..lw.work.len()).map(move |i| (l, i))).collect();
        let first = levels
            .iter()
            .scan(0, |n, lw| {
                let at = *n;
                *n += lw.work.len();
                Some(at)
            })
            .collect();
        let n = order.len();
        Fleet {
            running: levels.iter().map(|_| JoinSet::new()).collect(),
            levels,
            order,
            first,
            words: (0..n).map(|_| watch::channel(Word::Wait)).collect(),
            arming: (0..n).map(|_| None).collect(),
            checks: (0..n).map(|_| None).collect(),
            spawned: vec![false; n],
            armed: vec![false; n],
            fired: vec![false; n],
            limit,
        }
    }

    fn work(&self, k: usize) -> &HostStage {
        let (l, i) = self.order[k];
        &self.levels[l].work[i]
    }

    /// Starts host `k`'s session: it stages, arms, and waits for its word.
    fn spawn(&mut self, k: usize, run: &Level<'_>, conns: &Pool) {
        let (l, i) = self.order[k];
        let w = self.work(k);
        let host = conns.hosts[&w.host].clone();
        let (armed_tx, armed_rx) = oneshot::channel();
        let (checked_tx, checked_rx) = oneshot::channel();
        let mut ids = host.run_ids(&run.opts.state_dir, &run.run_id.to_string(), run.token);
        ids.fence = run.opts.fence.clone();
        let (owner, files, reload, input) = (run.opts.owner.to_string(), w.files.clone(), w.reload.clone(), w.input.clone());
        let (word, state_dir) = (self.words[k].1.clone(), run.opts.state_dir.clone());
        self.running[l].spawn(async move { (i, stage_and_switch_host(host, ids, owner, files, reload, input, word, armed_tx, checked_tx, state_dir).await) });
        (self.arming[k], self.checks[k], self.spawned[k]) = (Some(armed_rx), Some(checked_rx), true);
    }

    /// Waits for host `k` to arm, within the command timeout; not at all
    /// once the operator interrupts.
    async fn await_armed(&mut self, k: usize, interrupted: &mut watch::Receiver<bool>) {
        let Some(a) = self.arming[k].take() else { return };
        self.armed[k] = !*interrupted.borrow()
            && tokio::select! {
                r = tokio::time::timeout(self.limit, a) => r.is_ok_and(|r| r.is_ok()),
                () = until_interrupted(interrupted) => false,
            };
    }

    /// Every host of every level stages and arms, the first host alone, then
    /// the rest, while the first level's gates run. Of two applies started
    /// together, one gets the first lock and goes ahead, and the other is
    /// refused at once. Says why a gate failed, if one did.
    async fn arm(&mut self, run: &Level<'_>, conns: &mut Pool, summary: &mut Summary, interrupted: &mut watch::Receiver<bool>) -> Option<String> {
        let n = self.order.len();
        if n > 0 {
            self.spawn(0, run, conns);
            self.await_armed(0, interrupted).await;
            if self.armed[0] || run.opts.max_fail > 0 {
                for k in 1..n {
                    self.spawn(k, run, conns);
                }
            }
        }
        let first_gates = self.levels.first().map(|lw| lw.gates.clone()).unwrap_or_default();
        let gate_failed = gate_failures(run_commands(conns, first_gates, run.reporter).await, summary);
        for k in 1..n {
            self.await_armed(k, interrupted).await;
        }
        for k in (0..n).filter(|k| self.armed[*k]) {
            run.reporter.event(Event::Host { host: self.work(k).host.clone(), state: HostState::Staged });
        }
        gate_failed
    }

    /// At the switch time: every host of level `l` checks once more. By the
    /// hosts' clocks (`at_t`), the check comes before T, and a host whose
    /// clock is off beyond the bound may not switch.
    async fn check(&mut self, l: usize, at_t: Option<jiff::Timestamp>, run: &Level<'_>, summary: &mut Summary) -> Checks {
        let opts = run.opts;
        let ks: Vec<usize> = (self.first[l]..self.first[l] + self.levels[l].work.len()).collect();
        let n = self.order.len();
        let mut c = Checks { confirmed: vec![false; n], why_not: vec![None; n], bad: 0 };
        for &k in &ks {
            let _ = self.words[k].0.send(Word::Check);
        }
        let now = tokio::time::Instant::now();
        let answers_by = match at_t.map(|t| instant_of(t).checked_sub(opts.switch_by.answers_by()).filter(|by| *by > now)) {
            Some(Some(by)) => by,
            Some(None) => {
                // Staging ran late: every host that checks in time still renames
                // at once when its `at` arrives, as on the workstation's word.
                run.reporter.event(Event::Note("the switch time came before every host could check; each switches as soon as all have checked".into()));
                now + self.limit
            }
            None => now + self.limit,
        };
        for &k in &ks {
            let Some(pending) = self.checks[k].take().filter(|_| self.armed[k]) else { continue };
            let answer = tokio::time::timeout_at(answers_by, pending).await.ok().and_then(Result::ok);
            c.confirmed[k] = answer.is_some_and(|a| a.ok);
            let host = self.work(k).host.clone();
            if answer.is_none() {
                c.why_not[k] = Some(format!("{host} did not confirm its check in time for the switch, so it did not switch"));
            }
            // The check's round trip measures the host's clock once more, right before T.
            if let (Some(clock), Some(_)) = (answer.and_then(|a| a.clock()), at_t) {
                summary.clocks.insert(host.clone(), clock);
                if clock.beyond(opts.switch_by.max_offset_ms()) {
                    c.why_not[k] = Some(format!("{host}'s clock is {clock} this workstation's, over --max-clock-offset {} ms: it did not switch", opts.switch_by.max_offset_ms()));
                    c.confirmed[k] = false;
                }
            }
            c.bad += usize::from(!c.confirmed[k]);
        }
        c
    }

    /// Tells every host of level `l` its word, all at once: switch (now, or
    /// at T by its own clock), or abort.
    fn fire(&mut self, l: usize, go: bool, at_t: Option<jiff::Timestamp>, confirmed: &[bool]) {
        let ks = self.first[l]..self.first[l] + self.levels[l].work.len();
        for (((tx, _), fired), confirmed) in self.words[ks.clone()].iter().zip(&mut self.fired[ks.clone()]).zip(&confirmed[ks]) {
            let word = match at_t {
                Some(t) if go && *confirmed => Word::At(t.as_nanosecond()),
                None if go => Word::Go,
                _ => Word::Abort,
            };
            *fired = word != Word::Abort;
            let _ = tx.send(word);
        }
    }

    /// Each session's end, in the level's order: within the command timeout
    /// after T (or now), or within [`CLEANUP`] after an interrupt. A session
    /// that has not ended by then is dropped.
    async fn collect(&mut self, l: usize, at_t: Option<jiff::Timestamp>, interrupted: bool) -> Vec<Option<Result<WriteReport, TransportError>>> {
        let mut results: Vec<_> = (0..self.levels[l].work.len()).map(|_| None).collect();
        let now = tokio::time::Instant::now();
        let deadline = if interrupted { now + CLEANUP.min(self.limit) } else { at_t.map_or(now, instant_of).max(now) + self.limit };
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, self.running[l].join_next()).await {
            let (i, out) = r.expect("switch task panicked");
            results[i] = Some(out);
        }
        self.running[l].abort_all();
        results
    }

    /// Where host `k` ended, from its session's end (`None`: it did not end in time).
    fn state_of(&self, k: usize, result: &Option<Result<WriteReport, TransportError>>, why_not: &Option<String>, why: &AbortReason, interrupted: bool) -> HostState {
        let host = &self.work(k).host;
        let aborted = || HostState::Aborted { why: why.clone() };
        let bound = if interrupted { CLEANUP.min(self.limit) } else { self.limit };
        match result {
            // Never started: the first host was refused.
            None if !self.spawned[k] => aborted(),
            None if interrupted => HostState::failed(format!(
                "{host} did not answer the interrupt's clean-up within {bound:?}, so it did not switch; it drops its staged copies and lock when it reads its closed session, or `farmctl unlock FARM --limit {host}` removes them"
            )),
            // Never armed, so it cannot have switched.
            None if !self.armed[k] => HostState::failed(format!("{host} did not answer within {bound:?}")),
            None if !self.fired[k] => HostState::failed(format!("{host} did not answer when told to drop its staged copies, within {bound:?}; it did not switch")),
            None => HostState::Unknown { error: "no answer after the switch was fired; the host may or may not have switched (check with `farmctl plan`)".into() },
            // Told to abort: for its own reason, or because others failed.
            Some(Ok(r)) if r.aborted && r.changed.is_empty() => why_not.clone().map_or_else(aborted, HostState::failed),
            Some(out) => judge(out, HostState::Applied { files: vec![] }),
        }
    }
}

/// One stage, with the workstation holding every connection. Every host of
/// every level stages and arms first, in one session each, while the first
/// level's gates run: a file changed anywhere (the new server's own files
/// included) stops the stage before any host switches. Then, level by level,
/// the level's gates run (its new hosts must be ready), every host of the
/// level checks once more, and all get `go` together, or `abort`.
pub(super) async fn switch_stage(run: &Level<'_>, levels: Vec<LevelWork<'_>>, conns: &mut Pool, summary: &mut Summary, failures: &mut usize) -> ControlFlow<()> {
    let Level { plan, stage, opts, reporter, journal, .. } = *run;
    let mut fleet = Fleet::new(levels, conns.farm.ssh.command_timeout);
    // With the hosts' clocks: T, and how long before it the hosts are asked to check.
    let by_clock = match (opts.switch_by, stage.at.as_deref().map(str::parse::<jiff::Timestamp>)) {
        (SwitchBy::HostClock { .. }, Some(Ok(t))) => Some(t),
        _ => None,
    };
    let mut interrupted = opts.interrupted.clone();
    let mut gate_failed = fleet.arm(run, conns, summary, &mut interrupted).await;
    let not_armed = fleet.armed.iter().filter(|ok| !**ok).count();
    let mut go = gate_failed.is_none() && not_armed + *failures <= opts.max_fail;
    if go {
        if let Some(at) = &stage.at {
            let early = if by_clock.is_some() { opts.switch_by.lead() } else { Duration::ZERO };
            go = wait_until(at, early, reporter, &mut interrupted).await;
        }
    }
    let mut stopped = false;
    for l in 0..fleet.levels.len() {
        if *interrupted.borrow() {
            go = false;
            summary.interrupted = true;
        }
        if l > 0 && go {
            // This level's new hosts were switched by the levels before: are they ready now?
            gate_failed = gate_failures(run_commands(conns, fleet.levels[l].gates.clone(), reporter).await, summary);
            go = gate_failed.is_none();
        }
        // By the hosts' clocks, the first level of a timed stage: each host that
        // passed its check is told to switch at T by its own clock.
        let at_t = by_clock.filter(|_| l == 0);
        let n = fleet.order.len();
        let checks = if go {
            let c = fleet.check(l, at_t, run, summary).await;
            go = c.bad + not_armed + *failures <= opts.max_fail;
            c
        } else {
            Checks { confirmed: vec![false; n], why_not: vec![None; n], bad: 0 }
        };
        fleet.fire(l, go, at_t, &checks.confirmed);
        let results = fleet.collect(l, at_t, summary.interrupted).await;
        let why = match (&gate_failed, summary.interrupted) {
            (_, true) => AbortReason::Interrupted,
            (Some(g), _) => AbortReason::NotReady(g.clone()),
            (None, _) => AbortReason::OtherHostsFailed,
        };
        for (i, result) in results.iter().enumerate() {
            let k = fleet.first[l] + i;
            let w = fleet.work(k);
            let state = fleet.state_of(k, result, &checks.why_not[k], &why, summary.interrupted);
            let report = result.as_ref().and_then(|r| r.as_ref().ok());
            let renamed = report.and_then(WriteReport::first_rename_ns).filter(|_| stage.at.is_some());
            if let Some(t) = renamed {
                summary.renames.entry(stage.index).or_default().insert(w.host.clone(), t);
            }
            reporter.event(Event::Host { host: w.host.clone(), state: state.clone() });
            // A scheduled switch's journal says when each host renamed, and how far off its clock was.
            let mut lines = entries(plan, &w.host, &w.files, &state);
            for e in lines.iter_mut() {
                e.renamed_at = renamed.and_then(|t| jiff::Timestamp::from_nanosecond(t).ok()).map(|t| t.to_string());
                e.clock_offset_ms = summary.clocks.get(&w.host).map(|c| c.offset_ms);
                e.clock_uncertainty_ms = summary.clocks.get(&w.host).map(|c| c.uncertainty_ms);
            }
            record(journal, summary, lines);
            if !matches!(state, HostState::Applied { .. } | HostState::Aborted { .. }) {
                *failures += 1;
            }
            summary.hosts.insert(w.host.clone(), state);
        }
        if gate_failed.is_some() || !go || *failures > opts.max_fail {
            go = false;
            stopped = true;
        }
    }
    if stopped {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

/// The moment `t` (workstation clock) as a tokio instant; a past moment is now.
fn instant_of(t: jiff::Timestamp) -> tokio::time::Instant {
    let ahead = t.as_nanosecond() - jiff::Timestamp::now().as_nanosecond();
    tokio::time::Instant::now() + std::time::Duration::from_nanos(ahead.max(0) as u64)
}
