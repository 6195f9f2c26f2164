//! `farmctl rollback PLAN.json|ID`: restore every file an applied plan wrote
//! that still has the content it wrote.

use super::{confirm, finish, Outcome};
use crate::apply::{self, journal::{Entry, FileOutcome, Journal, Record, VersionOutcome}, progress};
use crate::cli::RollbackArgs;
use crate::error::{Error, ErrorKind};
use crate::pipeline::{self, Session};
use crate::plan::{ActionKind, Plan};
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;

/// The plan's edits narrowed to the files this workstation's journal says were
/// written (or armed); a plan the journal does not know is taken whole.
fn written_only(plan: &Plan, entries: &[Entry]) -> (Plan, Vec<String>) {
    let mut narrowed = plan.clone();
    // A shadow's client edits are undone by its own exit, and a rollout's versions by `undo_upgrades`.
    let rollout_stages: BTreeSet<usize> = plan.actions.iter().filter(|a| matches!(a.kind, ActionKind::Upgrade { .. })).map(|a| a.stage).collect();
    narrowed.actions.retain(|a| !(matches!(a.kind, ActionKind::Edit(_) | ActionKind::Reload { .. }) && rollout_stages.contains(&a.stage)));
    let mine: Vec<_> = entries.iter().filter(|e| e.plan == plan.id).collect();
    if mine.is_empty() {
        return (narrowed, Vec::new());
    }
    let written: BTreeSet<(&str, &str)> = mine.iter().filter_map(|e| e.file().filter(|(_, o)| matches!(o, FileOutcome::Written | FileOutcome::Armed)).map(|(p, _)| (e.host.as_str(), p))).collect();
    let mut skipped = Vec::new();
    narrowed.actions.retain(|a| match &a.kind {
        ActionKind::Edit(e) if !written.contains(&(a.host.as_str(), e.path.as_str())) => {
            skipped.push(format!("{}:{}", a.host, e.path));
            false
        }
        _ => true,
    });
    (narrowed, skipped)
}

/// Hosts the journal says the plan upgraded; a plan the journal does not know: every upgrade host.
fn upgraded_by(plan: &Plan, entries: &[Entry]) -> BTreeSet<String> {
    let mine: Vec<_> = entries.iter().filter(|e| e.plan == plan.id).collect();
    let ups = plan.actions.iter().filter(|a| matches!(a.kind, ActionKind::Upgrade { .. })).map(|a| a.host.clone());
    if mine.is_empty() {
        return ups.collect();
    }
    let done: BTreeSet<&str> = mine.iter().filter(|e| matches!(e.record, Record::Version { outcome: VersionOutcome::Upgraded, .. })).map(|e| e.host.as_str()).collect();
    ups.filter(|h| done.contains(h.as_str())).collect()
}

pub async fn run(args: &RollbackArgs) -> Outcome {
    let path = pipeline::find_plan(&args.plan)?;
    let saved = pipeline::load_plan(&path)?;
    let journal = Journal::open();
    // One read of the journal serves both: which files and which versions the plan changed.
    let entries = journal.read().unwrap_or_default();
    let (plan, skipped) = written_only(&saved, &entries);
    let upgraded = upgraded_by(&saved, &entries);
    let mut session = Session::load(std::path::Path::new(&plan.farm.path), args.parallel as usize)?;
    let edit_hosts: BTreeSet<String> = plan.edits().map(|(a, _)| a.host.clone()).collect();
    let scope: Vec<String> = edit_hosts.iter().chain(&upgraded).cloned().collect::<BTreeSet<_>>().into_iter().collect();
    for s in &skipped {
        crate::say!("{s}: left alone: this plan never wrote it");
    }
    if scope.is_empty() {
        crate::say!("Plan {} wrote no file and upgraded no host; nothing to roll back.", plan.id);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(h) = scope.iter().find(|h| !session.pool.farm.hosts.contains_key(*h)) {
        return Err(Error::new(ErrorKind::Plan, format!("plan {} names host {h}, which {} no longer has", plan.id, plan.farm.path)));
    }
    crate::say!("Rollback of plan {} restores, on {} host(s), every file that still has the content the plan wrote, and every version it still runs:", plan.id, scope.len());
    for (a, e) in plan.edits() {
        crate::say!("  {}:{}", a.host, e.path);
    }
    for a in plan.actions.iter().filter(|a| upgraded.contains(&a.host)) {
        if let ActionKind::Upgrade { from, to, .. } = &a.kind {
            crate::say!("  {}: {to} -> {from}", a.host);
        }
    }
    confirm("roll back this plan", args.yes)?;
    journal.check_writable().map_err(|e| Error::new(ErrorKind::Io, format!("refusing to roll back, nothing was written: {e}")).hint("make the journal's directory writable, or point $FARMCTL_JOURNAL elsewhere"))?;
    let down = session.connect(&scope).await;
    let hosts: BTreeMap<String, Arc<crate::transport::AnyHost>> = session.pool.hosts.clone();
    let opts = session.options(&plan, 0, false);
    let edit_conns: BTreeMap<String, Arc<crate::transport::AnyHost>> = hosts.iter().filter(|(h, _)| edit_hosts.contains(*h)).map(|(h, c)| (h.clone(), c.clone())).collect();
    let reporter = progress::reporter(super::quiet());
    let mut summary = apply::rollback(&plan, &edit_conns, &opts, &*reporter, &journal).await;
    summary.upgrades = apply::undo_upgrades(&plan, &hosts, &opts, &upgraded, &*reporter, &journal).await;
    if !down.is_empty() {
        let _ = finish("rollback", &summary, &plan, None);
        let lines: Vec<String> = down.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        return Err(Error::new(ErrorKind::Unreachable, format!("rollback could not reach: {}", lines.join("; ")))
            .hint("run rollback again once the host is back; it only restores files that still have the plan's content"));
    }
    finish("rollback", &summary, &plan, None)
}
