//! Rollback: restores every file of an applied plan that still has the
//! content the plan wrote, from the backups on each host, latest stage first;
//! and takes every host the plan upgraded back to the version it had.

use super::journal::{Entry, FileOutcome, Journal, Record, VersionOutcome};
use super::{file_write, judge, Event, Failure, HostState, Options, Reporter, Summary};
use crate::plan::{ActionKind, Plan, RunId};
use crate::transport::{AnyHost, FileWrite};
use super::health::sample;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Restores every file of the plan that still has its after-hash, latest stage first.
/// Files the plan never wrote (the journal says so) are left out of `plan` by the caller.
pub async fn rollback(plan: &Plan, hosts: &BTreeMap<String, Arc<AnyHost>>, opts: &Options, reporter: &dyn Reporter, journal: &Journal) -> Summary {
    let mut summary = Summary::default();
    let token = format!("rollback-{}-{}", plan.id, std::process::id());
    let jobs: Vec<_> = hosts.iter().map(|(n, h)| (n.clone(), h.clone())).collect();
    let (plan_c, state_dir, owner) = (Arc::new(plan.clone()), opts.state_dir.clone(), opts.owner.to_string());
    let results = crate::fanout::each(jobs, opts.parallel, move |(name, host)| {
        let (plan, state_dir, token, owner) = (plan_c.clone(), state_dir.clone(), token.clone(), owner.clone());
        async move {
            let (mut restored, mut already, mut changed, mut log) = (0, 0, Vec::new(), Vec::<(FileWrite, FileOutcome)>::new());
            for stage in plan.stages.iter().rev() {
                let files: Vec<FileWrite> = plan.edits().filter(|(a, _)| a.host == name && a.stage == stage.index).map(|(_, e)| file_write(e, e.after_size)).collect();
                if files.is_empty() {
                    continue;
                }
                let reload = plan.actions.iter().find_map(|a| match &a.kind {
                    ActionKind::Reload { command } if a.host == name && a.stage == stage.index => Some(command.clone()),
                    _ => None,
                });
                let ps = RunId::switch(&plan.id, stage.index).to_string();
                let out = host.restore(&host.run_ids(&state_dir, &ps, &token), &owner, &files, reload.as_deref()).await;
                let state = judge(&out, HostState::Staged);
                let by_path = |p: &String| files.iter().find(|f| &f.path == p).cloned();
                if let Ok(r) = &out {
                    for (paths, word) in [(&r.restored, FileOutcome::Restored), (&r.already, FileOutcome::UnchangedSince), (&r.changed, FileOutcome::ChangedSince)] {
                        for f in paths.iter().filter_map(by_path) {
                            log.push((f, word));
                        }
                    }
                    restored += r.restored.len();
                    already += r.already.len();
                    changed.extend(r.changed.iter().cloned());
                }
                match state {
                    HostState::Staged | HostState::Refused { .. } => {}
                    other => return (name, other, log),
                }
            }
            (name, HostState::RolledBack { restored, already, changed }, log)
        }
    })
    .await;
    let time = jiff::Timestamp::now().to_string();
    for (name, state, log) in results {
        reporter.event(Event::Host { host: name.clone(), state: state.clone() });
        let entries: Vec<Entry> = log
            .into_iter()
            .map(|(f, outcome)| Entry {
                time: time.clone(),
                ..Entry::now(&plan.id, &plan.farm.name, &name, Record::File { path: f.path, before_sha256: f.after_sha256, after_sha256: f.before_sha256, outcome }, "rollback")
            })
            .collect();
        if let Err(e) = journal.record(&entries) {
            summary.journal_error = Some(e.to_string());
        }
        summary.hosts.insert(name, state);
    }
    reporter.finish();
    summary
}

/// Undoes a plan's upgrades: every host the journal says the plan upgraded goes
/// back to the version it had, if it still runs the plan's version. Hosts
/// someone moved on since are left alone and named.
pub async fn undo_upgrades(plan: &crate::plan::Plan, hosts: &BTreeMap<String, Arc<AnyHost>>, opts: &Options, upgraded: &BTreeSet<String>, reporter: &dyn Reporter, journal: &Journal) -> BTreeMap<String, HostState> {
    let mut out = BTreeMap::new();
    let token = format!("undo-{}-{}", plan.id, std::process::id());
    for a in plan.actions.iter().rev() {
        let ActionKind::Upgrade { from, to, probe, rollback, .. } = &a.kind else { continue };
        if !upgraded.contains(&a.host) {
            continue;
        }
        let Some(host) = hosts.get(&a.host) else { continue };
        let state = match rollback {
            None => HostState::failed(format!("runs {to}; its old version is unknown, so it was left there")),
            Some(cmd) => {
                let ids = host.run_ids(&opts.state_dir, &RunId::Undo { plan: plan.id.clone() }.to_string(), &token);
                match host.upgrade(&ids, &opts.owner.to_string(), probe, from, cmd, Some(to)).await {
                    Ok(r) if r.skipped.is_some() => HostState::failed(format!("left alone: it runs {}, not {to}, since the apply", r.skipped.unwrap_or_default())),
                    // Already at the old version: nothing was undone here, and nothing is claimed.
                    Ok(r) if r.up_to_date => HostState::Upgraded { from: from.clone(), to: from.clone() },
                    Ok(r) if r.now.as_deref() == Some(from.as_str()) => {
                        // Healthy by the wave's own health command, once (its queries
                        // and conditions are for the version it no longer runs).
                        let health = plan.actions.iter().find_map(|g| match &g.kind {
                            ActionKind::WaveGate { hosts, health, .. } if hosts.contains(&a.host) => Some(health.clone()),
                            _ => None,
                        });
                        let healthy = match health {
                            Some(h) => sample(&[(a.host.clone(), host.clone())], &super::health::Sampling::new(&h, None, &[]), 1).await.values().all(Result::is_ok),
                            None => true,
                        };
                        HostState::UpgradeRolledBack { from: from.clone(), to: to.clone(), healthy }
                    }
                    Ok(r) => HostState::failed_for(Failure::Host { error: format!("could not go back to {from}: {:?}", r.result.map(|c| c.output).or(r.error).unwrap_or_default()), cause: None }),
                    Err(e) => HostState::failed_for(e),
                }
            }
        };
        let outcome = match &state {
            HostState::UpgradeRolledBack { .. } => VersionOutcome::RolledBack,
            HostState::Upgraded { .. } => {
                reporter.event(Event::Host { host: a.host.clone(), state: state.clone() });
                out.insert(a.host.clone(), state);
                continue;
            }
            _ => VersionOutcome::RollbackFailed,
        };
        let entry = Entry::now(&plan.id, &plan.farm.name, &a.host, Record::Version { from: to.clone(), to: from.clone(), outcome }, "rollback");
        let _ = journal.record(&[entry]);
        reporter.event(Event::Host { host: a.host.clone(), state: state.clone() });
        out.insert(a.host.clone(), state);
    }
    out
}
