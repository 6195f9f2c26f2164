//! Gates and retires: the operator commands a plan runs on a host (its role's
//! `health` before clients are pointed at it, its `retire` once nothing refers
//! to it). The one place these node kinds run.

use super::{Event, HostFailure, HostState, Reporter, Summary};
use crate::live::FileState;
use crate::plan::{Action, ActionKind, Plan};
use crate::transport::{Host, Pool};
use std::collections::BTreeSet;

/// Runs the operator command of each gate or retire on its host, bounded like every fan-out.
pub(super) async fn run_commands(conns: &mut Pool, actions: Vec<&Action>, reporter: &dyn Reporter) -> Vec<(String, Result<(), HostFailure>)> {
    let mut jobs = Vec::new();
    let mut nothing_to_run = BTreeSet::new();
    for a in actions {
        if let ActionKind::Retire { command: None, .. } = &a.kind {
            nothing_to_run.insert(a.in_words());
        }
        let command = match &a.kind {
            ActionKind::Gate { command } | ActionKind::Retire { command, .. } => command.clone(),
            _ => None,
        };
        let host = conns.get(&a.host).await;
        jobs.push((a.in_words(), host, command));
    }
    let parallel = conns.parallel;
    let results = crate::fanout::each(jobs, parallel, |(id, host, command)| async move {
        let host = match host {
            Ok(h) => h,
            Err(e) => return (id, Err(e.into())),
        };
        if let Err(e) = host.refresh().await {
            return (id, Err(e.into()));
        }
        let Some(cmd) = command.as_deref() else {
            // A retire without a command: nothing to run, and nothing to claim.
            return (id, Ok(()));
        };
        let r = match host.command(cmd).await {
            Err(e) => Err(e.into()),
            Ok(Some(c)) if c.status == 0 => Ok(()),
            Ok(Some(c)) => Err(HostFailure::Exit { command: cmd.to_string(), status: c.status, output: c.output }),
            Ok(None) => Err(HostFailure::Silent),
        };
        (id, r)
    })
    .await;
    for (id, r) in &results {
        let line = match r {
            Ok(()) if nothing_to_run.contains(id) => format!("{id}: nothing refers to it now (its role has no `retire` command to run)"),
            Ok(()) => format!("{id}: passed"),
            Err(e) => format!("{id}: failed: {e}"),
        };
        reporter.event(Event::Note(line));
    }
    results
}

/// Gates that failed, joined as "what: why", recorded as the reason the run stops.
pub(super) fn gate_failures(results: Vec<(String, Result<(), HostFailure>)>, summary: &mut Summary) -> Option<String> {
    let failed: Vec<String> = results.into_iter().filter_map(|(id, r)| r.err().map(|e| format!("{id}: {e}"))).collect();
    if failed.is_empty() {
        return None;
    }
    let why = failed.join("; ");
    summary.stopped_by_gate = Some(why.clone());
    Some(why)
}

/// Why `old` cannot be retired after `stage`, if it cannot: the run was
/// interrupted, a host of the stage did not end as planned (refused, failed,
/// aborted: it may still name `old`), or a host of the farm, read again now,
/// still names it or cannot be read. Empty when the retire is safe.
pub(super) async fn retire_blockers(plan: &Plan, stage: usize, old: &str, conns: &mut Pool, summary: &Summary, interrupted: bool) -> Vec<String> {
    if interrupted {
        return vec!["the run was interrupted".to_string()];
    }
    let mut why: Vec<String> = plan
        .actions
        .iter()
        .filter(|a| a.stage == stage && matches!(a.kind, ActionKind::Edit(_)))
        .map(|a| a.host.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|h| match summary.hosts.get(h) {
            Some(HostState::Applied { .. }) => None,
            Some(s) => Some(format!("{h} did not switch ({s})")),
            None => Some(format!("{h} was not reached")),
        })
        .collect();
    if !why.is_empty() {
        return why;
    }
    // Every other host of the farm, read after the switch: none may name `old`.
    let farm = conns.farm.clone();
    let mut jobs = Vec::new();
    for name in farm.hosts.keys().filter(|n| n.as_str() != old) {
        match conns.get(name).await {
            Ok(h) => jobs.push((name.clone(), h)),
            Err(e) => why.push(format!("{name} cannot be read to check: {e}")),
        }
    }
    let f = farm.clone();
    let reads = crate::fanout::each(jobs, conns.parallel, move |(name, host)| {
        let farm = f.clone();
        async move {
            let paths = farm.paths_of(&name);
            let r = host.read_state(&farm.state_dir, &paths, None).await;
            (name, r)
        }
    })
    .await;
    for (name, r) in reads {
        match r {
            Err(e) => why.push(format!("{name} cannot be read to check: {}", e.message)),
            Ok(live) => {
                for (path, state) in &live.files {
                    match state {
                        FileState::Present(info) if crate::plan::refers_to(&farm, path, &info.content, old) => why.push(format!("{name}:{path} still names it")),
                        FileState::Unreadable(u) => why.push(format!("{name}:{path} cannot be read to check ({u})")),
                        _ => {}
                    }
                }
            }
        }
    }
    why
}
