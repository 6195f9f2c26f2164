//! Gates and retires: the operator commands a plan runs on a host (its role's
//! `health` before clients are pointed at it, its `retire` once nothing refers
//! to it). The one place these node kinds run.

use super::{Connections, Event, Reporter, Summary};
use crate::plan::{Action, ActionKind};
use crate::transport::Host;

/// Runs the operator command of each gate or retire on its host, bounded like every fan-out.
pub(super) async fn run_commands(conns: &mut Connections, actions: Vec<&Action>, reporter: &dyn Reporter) -> Vec<(String, Result<(), String>)> {
    let mut jobs = Vec::new();
    for a in actions {
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
            Err(e) => return (id, Err(e)),
        };
        if let Err(e) = host.refresh().await {
            return (id, Err(format!("{e} ({})", e.hint())));
        }
        let cmd = command.as_deref().unwrap_or("true");
        let r = match host.command(cmd).await {
            Err(e) => Err(format!("{e} ({})", e.hint())),
            Ok(Some(c)) if c.status == 0 => Ok(()),
            Ok(Some(c)) => Err(format!("`{cmd}` failed (exit {}): {}", c.status, c.output)),
            Ok(None) => Err("the host gave no answer".to_string()),
        };
        (id, r)
    })
    .await;
    for (id, r) in &results {
        let line = match r {
            Ok(()) => format!("{id}: passed"),
            Err(e) => format!("{id}: failed: {e}"),
        };
        reporter.event(Event::Note(line));
    }
    results
}

/// Gates that failed, joined as "what: why", recorded as the reason the run stops.
pub(super) fn gate_failures(results: Vec<(String, Result<(), String>)>, summary: &mut Summary) -> Option<String> {
    let failed: Vec<String> = results.into_iter().filter_map(|(id, r)| r.err().map(|e| format!("{id}: {e}"))).collect();
    if failed.is_empty() {
        return None;
    }
    let why = failed.join("; ");
    summary.stopped_by_gate = Some(why.clone());
    Some(why)
}
