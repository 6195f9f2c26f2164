//! `rollback`, as one operation: which of an applied plan's writes and
//! upgrades this workstation's journal says happened, the hosts they touched,
//! and their undo (files from their backups, versions by the role's
//! `rollback`), through one session. The command only shows it and asks.

use super::Session;
use crate::apply::journal::{Entry, FileOutcome, Journal, Record, VersionOutcome};
use crate::apply::{self, Reporter, Summary};
use crate::error::{Error, ErrorKind, Result};
use crate::plan::{ActionKind, Plan};
use crate::transport::TransportError;
use std::collections::BTreeSet;
use std::path::Path;

/// A rollback ready to run: what it undoes, and where.
pub struct Rollback {
    /// The plan narrowed to the files the journal says it wrote.
    pub plan: Plan,
    /// `host:path` of files the plan would have written but never did.
    pub skipped: Vec<String>,
    /// Hosts the plan upgraded, whose version goes back.
    pub upgraded: BTreeSet<String>,
    /// Hosts with files to restore.
    pub edit_hosts: BTreeSet<String>,
    session: Session,
}

impl Rollback {
    /// Reads the journal and the farm for a saved plan; refuses a plan whose
    /// hosts the farm no longer has.
    pub fn prepare(saved: &Plan, journal: &Journal, parallel: usize) -> Result<Rollback> {
        // One read of the journal serves both: which files and which versions the plan changed.
        let entries = journal.read().unwrap_or_default();
        let (plan, skipped) = written_only(saved, &entries);
        let upgraded = upgraded_by(saved, &entries);
        let session = Session::load(Path::new(&plan.farm.path), parallel)?;
        let edit_hosts: BTreeSet<String> = plan.edits().map(|(a, _)| a.host.clone()).collect();
        let r = Rollback { plan, skipped, upgraded, edit_hosts, session };
        if let Some(h) = r.scope().iter().find(|h| !r.session.pool.farm.hosts.contains_key(*h)) {
            return Err(Error::new(ErrorKind::Plan, format!("plan {} names host {h}, which {} no longer has", r.plan.id, r.plan.farm.path)));
        }
        Ok(r)
    }

    /// Every host the rollback touches.
    pub fn scope(&self) -> Vec<String> {
        self.edit_hosts.union(&self.upgraded).cloned().collect()
    }

    /// Restores the files, then the versions, on every host that answers;
    /// says what happened and which hosts could not be reached.
    pub async fn run(mut self, reporter: &dyn Reporter, journal: &Journal) -> (Summary, Vec<(String, TransportError)>) {
        let down = self.session.connect(&self.scope()).await;
        let opts = self.session.options(&self.plan, 0, false);
        let pool = &self.session.pool;
        let edits = pool.only(|h| self.edit_hosts.contains(h));
        let mut summary = apply::rollback(&self.plan, &edits.hosts, &opts, reporter, journal).await;
        summary.upgrades = apply::undo_upgrades(&self.plan, &pool.hosts, &opts, &self.upgraded, reporter, journal).await;
        (summary, down)
    }
}

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
