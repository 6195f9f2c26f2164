//! `apply --detach`: each host of a timed stage stages now and gets a job
//! that switches at T by itself, without this workstation; and the all or
//! nothing of staging (every staged copy dropped when too many hosts fail),
//! and the locks that a dead farmctl left behind.

use super::commands::{gate_failures, run_commands};
use super::{entries, judge, record, AbortReason, Event, HostStage, HostState, Level, Summary};
use crate::plan::Action;
use crate::transport::{AnyHost, FileWrite, Host, Pool, RunIds};
use std::ops::ControlFlow;

/// One level of a timed stage with `--detach`: gates now, then each host stages
/// and gets a job that switches at T by itself.
pub(super) async fn detach_level(
    run: &Level<'_>,
    work: &[HostStage],
    gates: Vec<&Action>,
    conns: &mut Pool,
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
async fn abort(run: &Level<'_>, ready: &[&HostStage], conns: &Pool, summary: &mut Summary) {
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
        return HostState::failed_for(e);
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
pub(super) fn armed_holder(job: &str, holder: &str) -> String {
    format!("a switch armed with `apply --detach` (job {job}, by {holder})")
}

/// Whether a lock's holder line names a farmctl on this workstation that is gone.
pub fn lock_is_stale(holder: &str) -> bool {
    holder.parse::<super::owner::LockOwner>().is_ok_and(|o| o.is_gone_from_here())
}
