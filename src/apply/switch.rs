//! Edits and reloads: staging, arming and switching the hosts of one level of
//! a stage, all or nothing. The one place these node kinds run.

use super::commands::{gate_failures, run_commands};
use super::{
    entries, judge, record, wait_until, AbortReason, Connections, Event, HostStage, HostState,
    Level, Summary, SwitchBy,
};
use crate::plan::Action;
use crate::transport::{
    AnyHost, Checked, FileWrite, Gate, Host, RunIds, TransportError, Word, WriteReport,
};
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

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

/// One stage, with the workstation holding every connection. Every host of
/// every level stages and arms first, in one session each, while the first
/// level's gates run: a file changed anywhere (the new server's own files
/// included) stops the stage before any host switches. Then, level by level,
/// the level's gates run (its new hosts must be ready), every host of the
/// level checks once more, and all get `go` together, or `abort`.
pub(super) async fn switch_stage(run: &Level<'_>, levels: Vec<LevelWork<'_>>, conns: &mut Connections, summary: &mut Summary, failures: &mut usize) -> ControlFlow<()> {
    let Level { plan, stage, opts, run_id, token, reporter, journal } = *run;
    let limit = conns.farm.ssh.command_timeout;
    let mut running: Vec<tokio::task::JoinSet<(usize, Result<WriteReport, TransportError>)>> =
        levels.iter().map(|_| tokio::task::JoinSet::new()).collect();
    // Every host of the stage, level by level: (level, index in level).
    let order: Vec<(usize, usize)> = levels.iter().enumerate().flat_map(|(l, lw)| (0..lw.work.len()).map(move |i| (l, i))).collect();
    // Where each level starts in `order`: host i of level l is order[first[l] + i].
    let first: Vec<usize> = levels
        .iter()
        .scan(0, |n, lw| {
            let at = *n;
            *n += lw.work.len();
            Some(at)
        })
        .collect();
    // One word channel per host: a host that did not confirm in time is told to abort while the others switch.
    let words: Vec<(watch::Sender<Word>, watch::Receiver<Word>)> =
        order.iter().map(|_| watch::channel(Word::Wait)).collect();
    // With the hosts' clocks: T, and how long before it the hosts are asked to check.
    let by_clock = match (
        opts.switch_by,
        stage.at.as_deref().map(str::parse::<jiff::Timestamp>),
    ) {
        (SwitchBy::HostClock { .. }, Some(Ok(t))) => Some(t),
        _ => None,
    };
    let spawn = |l: usize, i: usize, running: &mut Vec<tokio::task::JoinSet<_>>| {
        let w = &levels[l].work[i];
        let host = conns.hosts[&w.host].clone();
        let (armed_tx, armed_rx) = oneshot::channel();
        let (checked_tx, checked_rx) = oneshot::channel();
        let mut ids = host.run_ids(&opts.state_dir, &run_id.to_string(), token);
        ids.fence = opts.fence.clone();
        let (owner, files, reload, input) = (
            opts.owner.to_string(),
            w.files.clone(),
            w.reload.clone(),
            w.input.clone(),
        );
        let (word, state_dir) = (words[first[l] + i].1.clone(), opts.state_dir.clone());
        running[l].spawn(async move {
            (
                i,
                stage_and_switch_host(
                    host, ids, owner, files, reload, input, word, armed_tx, checked_tx, state_dir,
                )
                .await,
            )
        });
        (armed_rx, checked_rx)
    };
    // The first host alone, then the rest: of two applies started together, one
    // gets the first lock and goes ahead, and the other is refused at once.
    let mut signals: Vec<Option<(oneshot::Receiver<()>, oneshot::Receiver<Checked>)>> =
        order.iter().map(|_| None).collect();
    let mut armed: Vec<Option<oneshot::Receiver<Checked>>> = order.iter().map(|_| None).collect();
    let mut armed_ok = vec![false; order.len()];
    let mut spawned = vec![false; order.len()];
    if let Some(&(l, i)) = order.first() {
        let (a, c) = spawn(l, i, &mut running);
        spawned[0] = true;
        armed_ok[0] = tokio::time::timeout(limit, a).await.is_ok_and(|r| r.is_ok());
        armed[0] = Some(c);
        if armed_ok[0] || opts.max_fail > 0 {
            for (k, &(l, i)) in order.iter().enumerate().skip(1) {
                signals[k] = Some(spawn(l, i, &mut running));
                spawned[k] = true;
            }
        }
    }
    let first_gates = levels.first().map(|lw| lw.gates.clone()).unwrap_or_default();
    let mut gate_failed = gate_failures(run_commands(conns, first_gates, reporter).await, summary);
    for (k, s) in signals.iter_mut().enumerate() {
        if let Some((a, c)) = s.take() {
            armed_ok[k] = tokio::time::timeout(limit, a).await.is_ok_and(|r| r.is_ok());
            armed[k] = Some(c);
        }
    }
    for (k, &(l, i)) in order.iter().enumerate() {
        if armed_ok[k] {
            reporter.event(Event::Host { host: levels[l].work[i].host.clone(), state: HostState::Staged });
        }
    }
    let not_armed = armed_ok.iter().filter(|ok| !**ok).count();
    let mut go = gate_failed.is_none() && not_armed + *failures <= opts.max_fail;
    let mut interrupted = opts.interrupted.clone();
    if go {
        if let Some(at) = &stage.at {
            let early = if by_clock.is_some() {
                opts.switch_by.lead()
            } else {
                std::time::Duration::ZERO
            };
            go = wait_until(at, early, reporter, &mut interrupted).await;
        }
    }
    if *interrupted.borrow() {
        go = false;
        summary.interrupted = true;
    }
    let mut stopped = false;
    for (l, lw) in levels.iter().enumerate() {
        if *interrupted.borrow() {
            go = false;
            summary.interrupted = true;
        }
        if l > 0 && go {
            // This level's new hosts were switched by the levels before: are they ready now?
            gate_failed = gate_failures(run_commands(conns, lw.gates.clone(), reporter).await, summary);
            go = gate_failed.is_none();
        }
        // At the switch time: every host of the level checks once more, then all get the word at once.
        // By the hosts' clocks (the first level of a timed stage), the check comes
        // before T, and each host that passed it is told to switch at T by its own clock.
        let at_t = by_clock.filter(|_| l == 0);
        let ks: Vec<usize> = (first[l]..first[l] + lw.work.len()).collect();
        let mut confirmed = vec![false; order.len()];
        // Why a host that was asked to check may not switch: it did not answer, or its clock is off.
        let mut why_not: Vec<Option<String>> = vec![None; order.len()];
        if go {
            for &k in &ks {
                let _ = words[k].0.send(Word::Check);
            }
            let now = tokio::time::Instant::now();
            let answers_by = match at_t.map(|t| {
                instant_of(t)
                    .checked_sub(opts.switch_by.answers_by())
                    .filter(|by| *by > now)
            }) {
                Some(Some(by)) => by,
                Some(None) => {
                    // Staging ran late: every host that checks in time still renames
                    // at once when its `at` arrives, as on the workstation's word.
                    reporter.event(Event::Note("the switch time came before every host could check; each switches as soon as all have checked".into()));
                    now + limit
                }
                None => now + limit,
            };
            let mut bad = 0;
            for &k in &ks {
                if let (true, Some(c)) = (armed_ok[k], armed[k].take()) {
                    let answer = tokio::time::timeout_at(answers_by, c)
                        .await
                        .ok()
                        .and_then(Result::ok);
                    confirmed[k] = answer.is_some_and(|a| a.ok);
                    let host = &lw.work[k - first[l]].host;
                    if answer.is_none() {
                        why_not[k] = Some(format!("{host} did not confirm its check in time for the switch, so it did not switch"));
                    }
                    // The check's round trip measures the host's clock once more, right before T.
                    if let (Some(clock), Some(_)) = (
                        answer.and_then(|a| a.clock()),
                        at_t,
                    ) {
                        summary.clocks.insert(host.clone(), clock);
                        if clock.beyond(opts.switch_by.max_offset_ms()) {
                            why_not[k] = Some(format!("{host}'s clock is {clock} this workstation's, over --max-clock-offset {} ms: it did not switch", opts.switch_by.max_offset_ms()));
                            confirmed[k] = false;
                        }
                    }
                    bad += usize::from(!confirmed[k]);
                }
            }
            go = bad + not_armed + *failures <= opts.max_fail;
        }
        for &k in &ks {
            let word = match at_t {
                Some(t) if go && confirmed[k] => Word::At(t.as_nanosecond()),
                None if go => Word::Go,
                _ => Word::Abort,
            };
            let _ = words[k].0.send(word);
        }
        let mut results: Vec<Option<Result<WriteReport, TransportError>>> =
            (0..lw.work.len()).map(|_| None).collect();
        let deadline = at_t
            .map_or_else(tokio::time::Instant::now, instant_of)
            .max(tokio::time::Instant::now())
            + limit;
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, running[l].join_next()).await {
            let (i, out) = r.expect("switch task panicked");
            results[i] = Some(out);
        }
        running[l].abort_all();
        let why = match (&gate_failed, summary.interrupted) {
            (_, true) => AbortReason::Interrupted,
            (Some(g), _) => AbortReason::NotReady(g.clone()),
            (None, _) => AbortReason::OtherHostsFailed,
        };
        let aborted = || HostState::Aborted { why: why.clone() };
        for (i, w) in lw.work.iter().enumerate() {
            let k = first[l] + i;
            let report = results[i].as_ref().and_then(|r| r.as_ref().ok());
            let state = match &results[i] {
                // Never started: the first host was refused.
                None if !spawned[k] => aborted(),
                // Never armed, so it cannot have switched.
                None if !armed_ok[k] => HostState::failed(format!("{} did not answer within {limit:?}", w.host)),
                None => HostState::Unknown { error: "no answer after the switch was fired; the host may or may not have switched (check with `farmctl plan`)".into() },
                // Told to abort: for its own reason, or because others failed.
                Some(Ok(r)) if r.aborted && r.changed.is_empty() => why_not[k].clone().map_or_else(aborted, HostState::failed),
                Some(out) => judge(out, HostState::Applied { files: vec![] }),
            };
            let renamed = report
                .and_then(WriteReport::first_rename_ns)
                .filter(|_| stage.at.is_some());
            if let Some(t) = renamed {
                summary
                    .renames
                    .entry(stage.index)
                    .or_default()
                    .insert(w.host.clone(), t);
            }
            reporter.event(Event::Host {
                host: w.host.clone(),
                state: state.clone(),
            });
            // A scheduled switch's journal says when each host renamed, and how far off its clock was.
            let mut lines = entries(plan, &w.host, &w.files, &state);
            for e in lines.iter_mut() {
                e.renamed_at = renamed
                    .and_then(|t| jiff::Timestamp::from_nanosecond(t).ok())
                    .map(|t| t.to_string());
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

/// One level of a timed stage with `--detach`: gates now, then each host stages
/// and gets a job that switches at T by itself.
pub(super) async fn detach_level(
    run: &Level<'_>,
    work: &[HostStage],
    gates: Vec<&Action>,
    conns: &mut Connections,
    summary: &mut Summary,
    failures: &mut usize,
) -> ControlFlow<()> {
    let Level { plan, stage, opts, run_id, token, reporter, journal } = *run;
    if gate_failures(run_commands(conns, gates, reporter).await, summary).is_some() {
        return ControlFlow::Break(());
    }
    let jobs: Vec<_> = work.iter().map(|w| (conns.hosts[&w.host].clone(), w.host.clone(), w.files.clone(), w.input.clone())).collect();
    let (state_dir, ps, tk, owner, fence) = (opts.state_dir.clone(), run_id.to_string(), token.to_string(), opts.owner.to_string(), opts.fence.clone());
    let staged = crate::fanout::each(jobs, opts.parallel, move |(host, name, files, input)| {
        let (state_dir, ps, tk, owner) = (state_dir.clone(), ps.clone(), tk.clone(), owner.clone());
        let ids = RunIds { fence: fence.clone(), ..host.run_ids(&state_dir, &ps, &tk) };
        async move { (name, stage_host(&host, &ids, &state_dir, &owner, &files, input).await) }
    })
    .await;
    let mut ready = Vec::new();
    for ((name, state), w) in staged.into_iter().zip(work) {
        reporter.event(Event::Host { host: name.clone(), state: state.clone() });
        if state == HostState::Staged {
            ready.push(w);
        } else {
            *failures += 1;
            record(journal, summary, entries(plan, &name, &w.files, &state));
            summary.hosts.insert(name, state);
        }
    }
    if *failures > opts.max_fail {
        abort(run, &ready, conns, summary).await;
        return ControlFlow::Break(());
    }
    let at = stage.at.clone().unwrap_or_default();
    let ns = at.parse::<jiff::Timestamp>().map(|t| t.as_nanosecond()).unwrap_or_default();
    let jobs: Vec<_> = ready.iter().map(|w| (conns.hosts[&w.host].clone(), w.host.clone(), w.files.clone(), w.reload.clone())).collect();
    let (state_dir, ps, tk) = (opts.state_dir.clone(), run_id.to_string(), token.to_string());
    let armed = crate::fanout::each(jobs, opts.parallel, move |(host, name, files, reload)| {
        let (state_dir, ps, tk, at) = (state_dir.clone(), ps.clone(), tk.clone(), at.clone());
        async move {
            let out = host.arm(&host.run_ids(&state_dir, &ps, &tk), &files, reload.as_deref(), &at, ns).await;
            let state = match &out {
                Ok(r) if r.armed => HostState::Armed { at: at.clone() },
                _ => judge(&out, HostState::failed("the switch job did not start")),
            };
            (name, files, state)
        }
    })
    .await;
    for (name, files, state) in armed {
        reporter.event(Event::Host { host: name.clone(), state: state.clone() });
        record(journal, summary, entries(plan, &name, &files, &state));
        summary.hosts.insert(name, state);
    }
    ControlFlow::Continue(())
}

/// All or nothing: removes every staged copy of the ready hosts; no target was touched.
async fn abort(run: &Level<'_>, ready: &[&HostStage], conns: &Connections, summary: &mut Summary) {
    let Level { plan, opts, run_id, token, reporter, journal, .. } = *run;
    let jobs: Vec<_> = ready.iter().map(|w| (conns.hosts[&w.host].clone(), w.files.clone())).collect();
    let (state_dir, ps, tk) = (opts.state_dir.clone(), run_id.to_string(), token.to_string());
    crate::fanout::each(jobs, opts.parallel, move |(host, files)| {
        let (state_dir, ps, tk) = (state_dir.clone(), ps.clone(), tk.clone());
        async move { host.abort(&host.run_ids(&state_dir, &ps, &tk), &files).await }
    })
    .await;
    for w in ready {
        let state = HostState::Aborted { why: AbortReason::OtherHostsFailed };
        reporter.event(Event::Host { host: w.host.clone(), state: state.clone() });
        record(journal, summary, entries(plan, &w.host, &w.files, &state));
        summary.hosts.insert(w.host.clone(), state);
    }
}

/// Stages one host. A lock left by a farmctl of this workstation that is no
/// longer running is broken (its staged copies go with it), and staging is
/// tried once more.
async fn stage_host(host: &AnyHost, ids: &RunIds, state_dir: &str, owner: &str, files: &[FileWrite], input: Vec<u8>) -> HostState {
    if let Err(e) = host.refresh().await {
        return HostState::failed(format!("{e} ({})", e.hint()));
    }
    let state = judge(&host.stage(ids, owner, files, input.clone()).await, HostState::Staged);
    match &state {
        HostState::Locked { holder } if lock_is_stale(holder) => match host.break_lock(state_dir, holder).await {
            Ok(Some(job)) => HostState::Locked { holder: armed_holder(&job, holder) },
            _ => judge(&host.stage(ids, owner, files, input).await, HostState::Staged),
        },
        _ => state,
    }
}

/// The holder of a lock that a detached switch keeps.
fn armed_holder(job: &str, holder: &str) -> String {
    format!("a switch armed with `apply --detach` (job {job}, by {holder})")
}

/// Whether a lock's holder line names a farmctl on this workstation that is gone.
pub fn lock_is_stale(holder: &str) -> bool {
    holder.parse::<super::owner::LockOwner>().is_ok_and(|o| o.is_gone_from_here())
}
