//! Upgrades and wave gates: a rollout stage, wave by wave. The one place
//! these node kinds run. A wave upgrades its hosts in batches that keep at
//! most `max_unavailable` hosts of the role down (counted by health, whether
//! farmctl touched them or not), then must pass its gate: `samples` healthy
//! samples in a row on every host of the wave (those already at the version
//! too), and then every one of them at the version by its probe. The gate
//! fails at `failure_limit` failed samples in a row of one host. A failed
//! gate stops the rollout, and every host this run upgraded in that wave goes
//! back to the version it had (those that are down first, a healthy one only
//! within `max_unavailable`), and is health-checked again.

use super::journal::{Entry, Record, VersionOutcome};
use super::health::{sample, versions_hold, Failing, OffVersion, Sample, SampleFailure, Sampling};
use super::{record, Event, Failure, HostState, Level, Summary};
use crate::plan::{Action, ActionKind, Phase};
use crate::transport::{AnyHost, Pool};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One wave's gate settings, from its `wave_gate` node.
struct Wave<'a> {
    role: &'a str,
    name: &'a str,
    hosts: &'a [String],
    watch: &'a [String],
    /// The health command alone: whether a host is up, for `max_unavailable`
    /// and for a host coming back from its upgrade or rollback.
    health: Sampling,
    /// The gate's samples of the wave's hosts: the health command, the
    /// Prometheus queries at the wave's version, and the conditions.
    gate: Sampling,
    samples: u32,
    failure_limit: u32,
    version: &'a str,
    probe: &'a str,
    interval: Duration,
    timeout: Duration,
    max_unavailable: usize,
}

/// One host's upgrade, from its `upgrade` node.
struct Up<'a> {
    host: &'a str,
    probe: &'a str,
    from: &'a str,
    to: &'a str,
    command: &'a str,
    rollback: Option<&'a str>,
}

fn version_entry(run: &Level<'_>, host: &str, from: &str, to: &str, outcome: VersionOutcome, detail: String) -> Entry {
    Entry::now(&run.plan.id, &run.plan.farm.name, host, Record::Version { from: from.to_string(), to: to.to_string(), outcome }, detail)
}

fn wave_of(a: &Action) -> Option<Wave<'_>> {
    match &a.kind {
        ActionKind::WaveGate { role, wave, hosts, watch, health, metrics, conditions, samples, failure_limit, version, probe, interval_ms, timeout_ms, max_unavailable } => Some(Wave {
            role,
            name: wave,
            hosts,
            watch,
            health: Sampling::new(health, None, &[]),
            gate: Sampling::new(health, metrics.as_ref(), conditions),
            samples: *samples,
            failure_limit: *failure_limit,
            version,
            probe,
            interval: Duration::from_millis(*interval_ms),
            timeout: Duration::from_millis(*timeout_ms),
            max_unavailable: *max_unavailable,
        }),
        _ => None,
    }
}

fn up_of(a: &Action) -> Option<Up<'_>> {
    match &a.kind {
        ActionKind::Upgrade { from, to, command, rollback, probe, .. } => Some(Up { host: &a.host, probe, from, to, command, rollback: rollback.as_deref() }),
        _ => None,
    }
}

/// Connections to every host of `names`; those that cannot be reached are reported.
async fn connect(names: &[String], conns: &mut Pool, reporter: &dyn super::Reporter) -> Vec<(String, Arc<AnyHost>)> {
    let mut out = Vec::new();
    for h in names {
        match conns.get(h).await {
            Ok(c) => out.push((h.clone(), c)),
            // A host of the role that cannot be reached counts as down.
            Err(e) => reporter.event(Event::Note(format!("{h}: cannot be reached for health checks: {e}"))),
        }
    }
    out
}

/// Runs a rollout stage, level by level: waves, and a shadow canary's entry,
/// judgement and promotion or exit. Returns `Break` when it stopped.
pub(super) async fn run_stage(run: &Level<'_>, conns: &mut Pool, summary: &mut Summary, contents: &crate::plan::Contents) -> ControlFlow<()> {
    let Level { plan, stage, opts, reporter, .. } = *run;
    let in_stage = || plan.actions.iter().filter(|a| a.stage == stage.index);
    // The judge's branches run from the judge, never on their own.
    let branches: BTreeSet<&str> = in_stage()
        .flat_map(|a| match &a.kind {
            ActionKind::Judge { promote, exit, .. } => promote.iter().chain(exit).map(String::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    pending_gates(run, summary);
    let levels: BTreeSet<usize> = in_stage().map(|a| a.level).collect();
    for level in levels {
        let in_level: Vec<&Action> = in_stage().filter(|a| a.level == level && !branches.contains(a.id.as_str())).collect();
        let flow = match super::executor(plan, stage.index, level, false) {
            super::Executor::Wave => {
                let Some(wave) = in_level.iter().find_map(|a| wave_of(a)) else { continue };
                let ups: Vec<Up> = in_level.iter().filter_map(|a| up_of(a)).collect();
                let again: Vec<&str> = wave.hosts.iter().map(String::as_str).filter(|h| !ups.iter().any(|u| u.host == *h)).collect();
                let upgrading: Vec<&str> = ups.iter().map(|u| u.host).collect();
                let mut line = format!("{} {}: {} host(s): {}", wave.role, wave.name, ups.len(), upgrading.join(", "));
                if !again.is_empty() {
                    line.push_str(&format!("; gated again, already at the version: {}", again.join(", ")));
                }
                reporter.event(Event::Note(line));
                let watch = connect(wave.watch, conns, reporter).await;
                let unreachable = wave.watch.len() - watch.len();
                match run_wave(run, &wave, &ups, &watch, unreachable, summary).await {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(why) => {
                        summary.problems.push(why.to_string());
                        roll_back(run, &wave, &ups, &watch, summary).await;
                        ControlFlow::Break(())
                    }
                }
            }
            super::Executor::Judge => {
                let Some(judge) = in_level.iter().find(|a| matches!(a.kind, ActionKind::Judge { .. })) else { continue };
                match super::shadow::judge(run, judge, conns, summary, contents).await {
                    ControlFlow::Break(Some(canary)) => {
                        roll_back_host(run, &canary, conns, summary).await;
                        ControlFlow::Break(())
                    }
                    other => other.map_break(|_| ()),
                }
            }
            super::Executor::ShadowEdits | super::Executor::Switch | super::Executor::Detach => {
                let ids: Vec<String> = in_level.iter().map(|a| a.id.clone()).collect();
                super::shadow::edits(run, &ids, Phase::ShadowEntry, conns, summary, contents).await
            }
        };
        if flow.is_break() {
            return flow;
        }
        if *opts.interrupted.borrow() {
            summary.interrupted = true;
            return ControlFlow::Break(());
        }
    }
    ControlFlow::Continue(())
}

/// Journals, before the stage's first upgrade, every gated host the plan does
/// not upgrade (it runs the version already) as pending its wave's gate, as an
/// upgrade would: a run killed before that gate passes leaves the host
/// unproven, and the resumed plan gates its wave again (see
/// [`crate::apply::journal::unproven`]). Without this, a host that ran the
/// version before the rollout, and is broken on it, ended a resumed rollout
/// at exit 0 (the rollout model's seeds 5800 and 7282).
fn pending_gates(run: &Level<'_>, summary: &mut Summary) {
    let in_stage = || run.plan.actions.iter().filter(|a| a.stage == run.stage.index);
    let upgraded: BTreeSet<&str> = in_stage().filter_map(up_of).map(|u| u.host).collect();
    let entries: Vec<Entry> = in_stage()
        .filter_map(wave_of)
        .flat_map(|w| w.hosts.iter().filter(|h| !upgraded.contains(h.as_str())).map(move |h| version_entry(run, h, w.version, w.version, VersionOutcome::UpgradeSkipped, format!("already at the version; {} {} gates it", w.role, w.name))).collect::<Vec<_>>())
        .collect();
    if !entries.is_empty() {
        record(run.journal, summary, entries);
    }
}

/// Puts `host` back on its old version after its wave (a shadow canary that was not promoted).
async fn roll_back_host(run: &Level<'_>, host: &str, conns: &mut Pool, summary: &mut Summary) {
    let in_stage = || run.plan.actions.iter().filter(|a| a.stage == run.stage.index);
    let Some(up) = in_stage().filter(|a| a.host == host).find_map(up_of) else { return };
    let Some(wave) = in_stage().filter_map(wave_of).find(|w| w.hosts.iter().any(|h| h == host)) else { return };
    let watch = connect(&[host.to_string()], conns, run.reporter).await;
    roll_back(run, &wave, &[up], &watch, summary).await;
}

/// Why a wave stopped, naming its gate (`ROLE WAVE gate`), the host and
/// the failing sample.
#[derive(Debug, thiserror::Error)]
enum WaveStop {
    #[error("{gate}: {} host(s) of {role} are down ({}), and at most {max} may be: no room to upgrade", .down.len() + .unreachable, .down.join(", "))]
    NoRoom { gate: String, role: String, down: Vec<String>, unreachable: usize, max: usize },
    #[error("{gate}: {host} cannot be reached")]
    Unreachable { gate: String, host: String },
    #[error("{gate}: {host}: {state}")]
    Upgrade { gate: String, host: String, state: HostState },
    #[error("{gate} failed: {host} did not come back healthy after its upgrade: {n} failed samples in a row (failure_limit {limit}): {why}")]
    NotBack { gate: String, host: String, n: u32, limit: u32, why: SampleFailure },
    #[error("{gate}: {host} did not come back healthy within {within:?}: {why}")]
    NotBackInTime { gate: String, host: String, within: Duration, why: SampleFailure },
    #[error("{gate} failed: {host} failed {n} samples in a row (failure_limit {limit}), the last: {why}")]
    FailedInARow { gate: String, host: String, n: u32, limit: u32, why: SampleFailure },
    #[error("{gate} failed: {host}, sample {n}: {why}")]
    Sample { gate: String, host: String, n: u32, why: SampleFailure },
    #[error("{gate} failed: {off}")]
    OffVersion { gate: String, off: OffVersion },
    #[error("{gate} failed: only {in_a_row} healthy sample(s) in a row of {samples} within {within:?}")]
    TooFew { gate: String, in_a_row: u32, samples: u32, within: Duration },
}

/// The failure of `host` in a round of samples, taken out of the round.
fn failure_of(round: &mut BTreeMap<String, Sample>, host: &str) -> SampleFailure {
    match round.remove(host) {
        Some(Err(why)) => why,
        _ => SampleFailure::Silent(None),
    }
}

/// Upgrades one wave in batches and runs its gate.
async fn run_wave(run: &Level<'_>, wave: &Wave<'_>, ups: &[Up<'_>], watch: &[(String, Arc<AnyHost>)], unreachable: usize, summary: &mut Summary) -> Result<(), WaveStop> {
    let Level { opts, reporter, journal, .. } = *run;
    let gate = format!("{} {} gate", wave.role, wave.name);
    let deadline = Instant::now() + wave.timeout;
    let mut pending: Vec<&Up> = ups.iter().collect();
    // A last batch that comes back healthy as a whole wave is the gate's first sample.
    let mut first_sample_done = false;
    while !pending.is_empty() {
        if *opts.interrupted.borrow() {
            summary.interrupted = true;
            return Ok(());
        }
        // Room in this batch: max_unavailable minus the hosts of the role that are down now.
        let health = sample(watch, &wave.health, opts.parallel).await;
        let down: Vec<String> = health.iter().filter(|(_, r)| r.is_err()).map(|(h, _)| h.clone()).collect();
        let room = wave.max_unavailable.saturating_sub(down.len() + unreachable);
        if room == 0 {
            if Instant::now() >= deadline {
                return Err(WaveStop::NoRoom { gate, role: wave.role.to_string(), down, unreachable, max: wave.max_unavailable });
            }
            tokio::time::sleep(wave.interval).await;
            continue;
        }
        let batch: Vec<&Up> = pending.drain(..room.min(pending.len())).collect();
        let conns: BTreeMap<&str, Arc<AnyHost>> = watch.iter().map(|(n, h)| (n.as_str(), h.clone())).collect();
        let mut jobs = Vec::new();
        for u in &batch {
            let Some(host) = conns.get(u.host).cloned() else {
                return Err(WaveStop::Unreachable { gate, host: u.host.to_string() });
            };
            // Recorded before the host is touched, so a rollback knows where to go back to.
            record(journal, summary, vec![version_entry(run, u.host, u.from, u.to, VersionOutcome::UpgradeStarted, String::new())]);
            reporter.event(Event::Note(format!("{}: upgrading {} -> {}", u.host, u.from, u.to)));
            let ids = host.run_ids(&opts.state_dir, &run.run_id.to_string(), run.token);
            jobs.push((u.host.to_string(), host, ids, u.probe.to_string(), u.to.to_string(), u.command.to_string()));
        }
        let (owner, state_dir, interval) = (opts.owner.to_string(), opts.state_dir.clone(), wave.interval);
        let results = crate::fanout::each(jobs, opts.parallel, move |(name, host, ids, probe, to, command)| {
            let (owner, state_dir) = (owner.clone(), state_dir.clone());
            async move {
                loop {
                    let r = host.upgrade(&ids, &owner, &probe, &to, &command, None).await;
                    // A lock of a farmctl of this workstation that died: if its upgrade still
                    // runs on the host, wait for it (it re-reads the version before doing
                    // anything); otherwise break the lock and go on.
                    let stale = r.as_ref().ok().and_then(|r| r.locked_by.clone()).filter(|h| super::lock_is_stale(h));
                    match stale {
                        Some(holder) if Instant::now() < deadline => match host.break_lock(&state_dir, &holder).await {
                            Ok(Some(_running)) => tokio::time::sleep(interval).await,
                            Ok(None) => {}
                            Err(_) => return (name, r),
                        },
                        _ => return (name, r),
                    }
                }
            }
        })
        .await;
        let mut failed = None;
        for ((name, r), u) in results.into_iter().zip(&batch) {
            let state = match &r {
                Ok(rep) if rep.locked_by.is_some() => HostState::Locked { holder: rep.locked_by.clone().unwrap_or_default() },
                Ok(rep) if rep.up_to_date => HostState::Upgraded { from: rep.was.clone().unwrap_or_default(), to: u.to.to_string() },
                Ok(rep) if rep.result.as_ref().is_some_and(|c| c.status == 0) && rep.now.as_deref() == Some(u.to) => HostState::Upgraded { from: u.from.to_string(), to: u.to.to_string() },
                Ok(rep) => HostState::failed_for(Failure::Host {
                    error: match (&rep.error, &rep.result) {
                        (Some(e), _) => e.clone(),
                        (None, Some(c)) if c.status != 0 => format!("the upgrade failed (exit {}){}", c.status, super::outcome::and_said(&c.output)),
                        (None, Some(_)) => format!("the upgrade ran, but the probe now says {:?}, not {}", rep.now.clone().unwrap_or_default(), u.to),
                        (None, None) => format!("the host's script stopped early{}", super::outcome::and_said(&rep.stderr)),
                    },
                    cause: None,
                }),
                Err(e) => HostState::failed_for(e.clone()),
            };
            let (outcome, detail) = match &state {
                HostState::Upgraded { .. } if r.as_ref().is_ok_and(|x| x.up_to_date) => (VersionOutcome::UpgradeSkipped, "already at the version".to_string()),
                HostState::Upgraded { .. } => (VersionOutcome::Upgraded, String::new()),
                other => (VersionOutcome::UpgradeFailed, other.to_string()),
            };
            record(journal, summary, vec![version_entry(run, &name, u.from, u.to, outcome, detail)]);
            reporter.event(Event::Host { host: name.clone(), state: state.clone() });
            if !matches!(state, HostState::Upgraded { .. }) && failed.is_none() {
                failed = Some(WaveStop::Upgrade { gate: gate.clone(), host: name.clone(), state: state.clone() });
            }
            summary.upgrades.insert(name, state);
        }
        if let Some(f) = failed {
            return Err(f);
        }
        // The batch is back before the next one starts: that keeps the count of hosts down.
        let batch_hosts: Vec<(String, Arc<AnyHost>)> = watch.iter().filter(|(n, _)| batch.iter().any(|u| u.host == n)).cloned().collect();
        let mut failing = Failing::default();
        loop {
            let mut h = sample(&batch_hosts, &wave.health, opts.parallel).await;
            if let Some((host, n)) = failing.count(&h).filter(|(_, n, _)| *n >= wave.failure_limit).map(|(host, n, _)| (host.to_string(), n)) {
                let why = failure_of(&mut h, &host);
                return Err(WaveStop::NotBack { gate, host, n, limit: wave.failure_limit, why });
            }
            match h.iter().find(|(_, r)| r.is_err()) {
                None => {
                    // A health-only sample counts for the gate only when the gate reads nothing more.
                    first_sample_done = pending.is_empty() && batch_hosts.len() == wave.hosts.len() && wave.gate.metrics.is_none() && wave.gate.conditions.is_empty();
                    break;
                }
                Some((host, _)) if Instant::now() >= deadline => {
                    let host = host.clone();
                    let why = failure_of(&mut h, &host);
                    return Err(WaveStop::NotBackInTime { gate, host, within: wave.timeout, why });
                }
                Some(_) => tokio::time::sleep(wave.interval).await,
            }
        }
    }
    wave_gate(run, wave, watch, first_sample_done, deadline, summary).await
}

/// The wave's gate, once its hosts are upgraded: `samples` healthy samples
/// in a row of every host of the wave (no answer is a failure), each read
/// every `interval` until `deadline`. `first_sample_done`: the last batch
/// came back healthy as a whole wave, which counts as the first sample.
async fn wave_gate(run: &Level<'_>, wave: &Wave<'_>, watch: &[(String, Arc<AnyHost>)], first_sample_done: bool, deadline: Instant, summary: &mut Summary) -> Result<(), WaveStop> {
    let Level { opts, reporter, journal, .. } = *run;
    let gate = format!("{} {} gate", wave.role, wave.name);
    let wave_hosts: Vec<(String, Arc<AnyHost>)> = watch.iter().filter(|(n, _)| wave.hosts.contains(n)).cloned().collect();
    let mut in_a_row = u32::from(first_sample_done);
    let mut n = in_a_row;
    if in_a_row > 0 && in_a_row < wave.samples {
        tokio::time::sleep(wave.interval).await;
    }
    // A gate fails as soon as it can no longer pass: `failure_limit` failed samples in a row of one host.
    let mut failing = Failing::default();
    loop {
        n += 1;
        let mut h = sample(&wave_hosts, &wave.gate, opts.parallel).await;
        if wave.gate.metrics.is_some() {
            // Every sample that read Prometheus is kept, with its queries.
            let entries = h.iter().map(|(host, r)| Entry::now(&run.plan.id, &run.plan.farm.name, host, Record::GateSample { healthy: r.is_ok() }, format!("{gate}, sample {n}: {}", wave.gate.account(host, r)))).collect();
            record(journal, summary, entries);
        }
        if let Some((host, k)) = failing.count(&h).filter(|(_, k, _)| *k >= wave.failure_limit).map(|(host, k, _)| (host.to_string(), k)) {
            let why = failure_of(&mut h, &host);
            return Err(WaveStop::FailedInARow { gate, host, n: k, limit: wave.failure_limit, why });
        }
        match h.iter().find(|(_, r)| r.is_err()) {
            None => {
                in_a_row += 1;
                if in_a_row >= wave.samples {
                    // Healthy, and on the version: a host that went back (or was
                    // moved) during the gate never passes it (found by the rollout
                    // model test: a rollback still running from a killed run).
                    if let Err(off) = versions_hold(&wave_hosts, wave.probe, wave.version, opts.parallel).await {
                        return Err(WaveStop::OffVersion { gate, off });
                    }
                    let m: Vec<String> = h.iter().filter_map(|(host, r)| r.as_ref().ok().filter(|m| !m.0.is_empty()).map(|m| format!("{host}: {m}"))).collect();
                    let detail = if m.is_empty() { String::new() } else { format!("; metrics: {}", m.join("; ")) };
                    reporter.event(Event::Note(format!("{gate}: passed ({} healthy samples in a row){detail}", wave.samples)));
                    // The last sample's metrics are kept with the gate's verdict.
                    let entries = h.iter().map(|(host, r)| Entry::now(&run.plan.id, &run.plan.farm.name, host, Record::GatePassed, format!("{gate}: {}", r.as_ref().map(ToString::to_string).unwrap_or_default()))).collect();
                    record(journal, summary, entries);
                    return Ok(());
                }
            }
            Some((host, _)) => {
                in_a_row = 0;
                if Instant::now() >= deadline {
                    let host = host.clone();
                    let why = failure_of(&mut h, &host);
                    return Err(WaveStop::Sample { gate, host, n, why });
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(WaveStop::TooFew { gate, in_a_row, samples: wave.samples, within: wave.timeout });
        }
        tokio::time::sleep(wave.interval).await;
    }
}

/// Puts every host this run upgraded in the wave back on the version it had, then checks its health.
async fn roll_back(run: &Level<'_>, wave: &Wave<'_>, ups: &[Up<'_>], watch: &[(String, Arc<AnyHost>)], summary: &mut Summary) {
    let Level { opts, reporter, journal, .. } = *run;
    let conns: BTreeMap<&str, Arc<AnyHost>> = watch.iter().map(|(n, h)| (n.as_str(), h.clone())).collect();
    // Hosts that are down go back first: they are down already. A healthy host
    // goes back only while that keeps the role within `max_unavailable`
    // (found by the rollout model test: healthy hosts went back first while a
    // broken one was still down); otherwise it stays where it is, named.
    let first = sample(watch, &wave.health, opts.parallel).await;
    let healthy_now = |h: &str| first.get(h).is_some_and(Result::is_ok);
    let mut order: Vec<&Up> = ups.iter().collect();
    order.sort_by_key(|u| healthy_now(u.host));
    for u in order {
        let upgraded_here = matches!(summary.upgrades.get(u.host), Some(HostState::Upgraded { from, .. }) if from != u.to);
        if !upgraded_here {
            continue;
        }
        if healthy_now(u.host) {
            let now = sample(watch, &wave.health, opts.parallel).await;
            let down = now.iter().filter(|(h, r)| r.is_err() && h.as_str() != u.host).count();
            if down + 1 > wave.max_unavailable {
                summary.problems.push(format!(
                    "{} stays on {} (healthy there): rolling it back now would take {} host(s) of {} down, over max_unavailable {}",
                    u.host,
                    u.to,
                    down + 1,
                    wave.role,
                    wave.max_unavailable
                ));
                continue;
            }
        }
        let (Some(cmd), Some(host)) = (u.rollback, conns.get(u.host)) else {
            let state = HostState::failed(format!("upgraded to {}, and its old version is unknown, so it was left there", u.to));
            reporter.event(Event::Host { host: u.host.to_string(), state: state.clone() });
            summary.upgrades.insert(u.host.to_string(), state);
            continue;
        };
        record(journal, summary, vec![version_entry(run, u.host, u.to, u.from, VersionOutcome::RollbackStarted, String::new())]);
        let ids = host.run_ids(&opts.state_dir, &run.run_id.with_phase(Phase::Rollback).to_string(), run.token);
        let r = host.upgrade(&ids, &opts.owner.to_string(), u.probe, u.from, cmd, Some(u.to)).await;
        let back = r.as_ref().is_ok_and(|r| r.now.as_deref() == Some(u.from));
        let healthy = back && {
            let deadline = Instant::now() + wave.timeout;
            loop {
                let h = sample(&[(u.host.to_string(), host.clone())], &wave.health, 1).await;
                if h.values().all(Result::is_ok) {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(wave.interval).await;
            }
        };
        let state = if back {
            HostState::UpgradeRolledBack { from: u.from.to_string(), to: u.to.to_string(), healthy }
        } else {
            HostState::failed(format!("could not go back to {}: {}", u.from, r.map(|r| format!("{r:?}")).unwrap_or_else(|e| e.to_string())))
        };
        let outcome = if back { VersionOutcome::RolledBack } else { VersionOutcome::RollbackFailed };
        record(journal, summary, vec![version_entry(run, u.host, u.to, u.from, outcome, state.to_string())]);
        reporter.event(Event::Host { host: u.host.to_string(), state: state.clone() });
        summary.upgrades.insert(u.host.to_string(), state);
    }
}
