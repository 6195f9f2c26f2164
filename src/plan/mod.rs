//! Pure: turns (farm, live state) into a Plan. No I/O.
//!
//! A plan is a DAG of actions (edits, then each host's reload), grouped into
//! stages by time. The same farm and live state always give the same plan,
//! byte for byte, once serialized.

pub mod graph;
mod files;
mod node;
mod order;
mod queries;
pub mod rollout;
mod run_id;
mod schema;
mod scope;
pub mod services;
mod shadow;

pub use node::{Action, ActionKind, Edit, Queries};
pub use run_id::{NotARunId, Phase, RunId};
pub use schema::schema;
pub use scope::select;

use crate::edit::{self, Cause, Replacer, Rule, TokenKind};
use files::{plan_file, reloads, Found, Stages};
use crate::farm::{Farm, Replacement};
use crate::live::{FileState, LiveFarm, Unreadable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub format_version: u32,
    /// A hash of everything below; names backups and staged files on hosts.
    pub id: String,
    pub farm: FarmRef,
    /// The `--limit` the plan was made with, so that apply re-derives the same scope.
    pub limit: Vec<String>,
    pub hosts: Vec<HostEntry>,
    pub stages: Vec<Stage>,
    pub actions: Vec<Action>,
    /// Things a reviewer should know that change nothing (a missing file, say).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FarmRef {
    pub name: String,
    pub path: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostEntry {
    pub name: String,
    pub role: String,
    #[serde(flatten)]
    pub status: HostStatus,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HostStatus {
    Changed,
    Unchanged,
    Unreachable { error: String },
    /// Reachable, but something on it stops planning (an unreadable file, say).
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
}

impl HostStatus {
    /// Whether the host could not be read or planned.
    pub fn is_failure(&self) -> bool {
        matches!(self, HostStatus::Unreachable { .. } | HostStatus::Failed { .. })
    }

    /// A host the plan changes: only an unchanged host becomes changed. A host
    /// that could not be read or planned stays so, whatever else is planned
    /// for it (see issue 25: a rollout turned a host whose file could not be
    /// read into "changed", and the apply lost its edits without a word).
    pub fn mark_changed(&mut self) {
        if *self == HostStatus::Unchanged {
            *self = HostStatus::Changed;
        }
    }
}

impl HostEntry {
    /// What to do about a host that could not be planned, when the planner knows.
    pub fn hint(&self) -> Option<&str> {
        match &self.status {
            HostStatus::Failed { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    pub index: usize,
    /// RFC 3339; absent means "when applied".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub actions: Vec<String>,
}

impl Plan {
    pub fn edits(&self) -> impl Iterator<Item = (&Action, &Edit)> {
        self.actions.iter().filter_map(|a| match &a.kind {
            ActionKind::Edit(e) => Some((a, e)),
            _ => None,
        })
    }

    pub fn reloads(&self) -> usize {
        self.actions.iter().filter(|a| matches!(a.kind, ActionKind::Reload { .. })).count()
    }

    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Hosts that could not be read or planned, with why.
    pub fn failed_hosts(&self) -> Vec<(&str, &str)> {
        self.hosts
            .iter()
            .filter_map(|h| match &h.status {
                HostStatus::Unreachable { error } | HostStatus::Failed { error, .. } => Some((h.name.as_str(), error.as_str())),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, want: fn(&HostStatus) -> bool) -> usize {
        self.hosts.iter().filter(|h| want(&h.status)).count()
    }

    /// The digest of the plan's content, which is its id: the first 16 hex
    /// digits of the sha256 of its JSON with the id left empty.
    pub fn digest(&self) -> String {
        let blank = Plan { id: String::new(), ..self.clone() };
        crate::farm::sha256_hex(blank.to_json().as_bytes())[..16].to_string()
    }

    /// Deterministic JSON, with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a plan always serializes");
        s.push('\n');
        s
    }
}

/// The token rules of one replacement: name, aliases and address of `old`
/// map to the counterparts of `new`.
pub fn rules_for(farm: &Farm, r: &Replacement) -> Vec<Rule> {
    let (old, new) = (&farm.hosts[&r.old], &farm.hosts[&r.new]);
    let mut rules = vec![Rule { from: old.name.clone(), to: new.name.clone(), kind: TokenKind::Name, origin: r.index }];
    for (i, alias) in old.aliases.iter().enumerate() {
        let to = match new.aliases.get(i) {
            Some(a) => a.clone(),
            // An FQDN alias whose first label is the name is covered by the name rule.
            None if alias.starts_with(&format!("{}.", old.name)) => continue,
            None => new.name.clone(),
        };
        rules.push(Rule { from: alias.clone(), to, kind: TokenKind::Name, origin: r.index });
    }
    if let (Some(a), Some(b)) = (&old.address, &new.address) {
        rules.push(Rule { from: a.clone(), to: b.clone(), kind: TokenKind::Address, origin: r.index });
    }
    rules
}

/// Whether `content` names host `x` (its name, an alias or its address) as a
/// whole token. A file that cannot be parsed counts as naming it: retiring a
/// host on a guess is worse than keeping it.
pub fn refers_to(farm: &Farm, path: &str, content: &[u8], x: &str) -> bool {
    let host = &farm.hosts[x];
    let probe = "farmctl-probe".to_string();
    let mut rules: Vec<Rule> = std::iter::once(&host.name).chain(&host.aliases).map(|n| Rule { from: n.clone(), to: probe.clone(), kind: TokenKind::Name, origin: 0 }).collect();
    if let Some(a) = &host.address {
        rules.push(Rule { from: a.clone(), to: probe.clone(), kind: TokenKind::Address, origin: 0 });
    }
    edit::edit_file(path, content, &Replacer::new(rules), &[]).map_or(true, |e| !e.causes.is_empty())
}

/// Replacements grouped by time: `None` ("when applied") first, then ascending.
fn time_groups(farm: &Farm) -> BTreeMap<Option<jiff::Timestamp>, Vec<&Replacement>> {
    let mut groups: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for r in &farm.replacements {
        groups.entry(r.at).or_default().push(r);
    }
    groups
}

pub(crate) fn diff_text(host: &str, path: &str, before: &[u8], after: &[u8]) -> String {
    match (std::str::from_utf8(before), std::str::from_utf8(after)) {
        (Ok(a), Ok(b)) => similar::TextDiff::from_lines(a, b)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{host}:{path}"), &format!("{host}:{path}"))
            .to_string(),
        _ => format!("Binary file {host}:{path} changed ({} -> {} bytes)\n", before.len(), after.len()),
    }
}

fn reason(farm: &Farm, cause: &Cause) -> String {
    match cause {
        Cause::Replace(i) => format!("{} ([[replace]] #{})", farm.replacements[*i].describe(), i + 1),
        Cause::Set(key) => format!("set {key}"),
    }
}

pub(crate) fn stamp(t: &Option<jiff::Timestamp>) -> Option<String> {
    t.map(|t| t.to_string())
}

/// New file contents by edit action id. Kept beside the plan, never in it:
/// a saved plan holds only what review needs.
pub type Contents = BTreeMap<String, Vec<u8>>;

/// A plan and the contents its edits write.
#[derive(Debug)]
pub struct Planned {
    pub plan: Plan,
    pub contents: Contents,
}

/// Builds the plan for the hosts in `scope` (already selected by `--limit`).
/// Why no plan can be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(transparent)]
    Cycle(#[from] graph::Cycle),
    #[error(transparent)]
    Rollout(#[from] rollout::RolloutError),
}

pub fn plan(farm: &Farm, live: &LiveFarm, scope: &[String], limit: &[String]) -> Result<Planned, PlanError> {
    plan_with(farm, live, scope, limit, &rollout::Unproven::new())
}

/// The actions stage by stage, then host by host, each after what it
/// depends on; levels assigned. A circle is named in words, not ids.
fn ordered(mut actions: Vec<Action>) -> Result<Vec<Action>, PlanError> {
    actions.sort_by(|a, b| (a.stage, &a.host).cmp(&(b.stage, &b.host)));
    let ids: Vec<String> = actions.iter().map(|a| a.id.clone()).collect();
    let deps: Vec<Vec<String>> = actions.iter().map(|a| a.depends_on.clone()).collect();
    let order = graph::order(&ids, &deps).map_err(|c| graph::Cycle { members: c.members.iter().map(|id| actions.iter().find(|a| a.id == *id).map_or_else(|| id.clone(), Action::in_words)).collect() })?;
    let mut slots: Vec<Option<Action>> = actions.into_iter().map(Some).collect();
    let mut actions: Vec<Action> = order.into_iter().map(|i| slots[i].take().expect("each index once")).collect();
    order::assign_levels(&mut actions);
    // Levels respect every dependency, so this order is still topological.
    // Gates, then host by host (edits before the reload), then retires.
    actions.sort_by_key(|a| (a.stage, a.level, order::group(&a.kind), a.host.clone(), order::kind_rank(&a.kind)));
    actions.iter_mut().for_each(|a| a.depends_on.sort());
    Ok(actions)
}

/// The stages that have actions, each with its time.
fn stages_of(times: &[Option<jiff::Timestamp>], actions: &[Action]) -> Vec<Stage> {
    times
        .iter()
        .enumerate()
        .map(|(index, t)| Stage { index, at: stamp(t), actions: actions.iter().filter(|a| a.stage == index).map(|a| a.id.clone()).collect() })
        .filter(|s| !s.actions.is_empty())
        .collect()
}

/// What each replacement with `skip` leaves alone, said in the plan.
fn skip_notes(farm: &Farm) -> Vec<String> {
    let mut notes = Vec::new();
    for r in farm.replacements.iter().filter(|r| !r.skip_paths.is_empty() || !r.skip_lines.is_empty()) {
        let mut left = Vec::new();
        if !r.skip_paths.is_empty() {
            left.push(format!("files {}", r.skip_paths.join(", ")));
        }
        if !r.skip_lines.is_empty() {
            left.push(format!("lines matching {}", r.skip_lines.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")));
        }
        notes.push(format!("{} ([[replace]] #{}) leaves alone: {}", r.describe(), r.index + 1, left.join("; ")));
    }
    notes
}

/// [`plan`], knowing which hosts a rollout brought to a version whose wave
/// gate has not passed since (from the workstation's journal): their role is
/// gated again even when every host already runs its version.
pub fn plan_with(farm: &Farm, live: &LiveFarm, scope: &[String], limit: &[String], unproven: &rollout::Unproven) -> Result<Planned, PlanError> {
    let groups = time_groups(farm);
    let has_sets = farm.roles.values().any(|r| !r.set.is_empty()) || services::edits_any(farm);
    let targets = services::targets(farm, live);
    let mut times: Vec<Option<jiff::Timestamp>> = groups.keys().copied().collect();
    if has_sets && !times.contains(&None) {
        times.insert(0, None);
    }
    let stage_of: BTreeMap<Option<jiff::Timestamp>, usize> = times.iter().enumerate().map(|(i, t)| (*t, i)).collect();

    let mut hosts = Vec::new();
    let mut actions: Vec<Action> = Vec::new();
    let mut notes = Vec::new();
    // Which replacements caused each edit, and which old names are still referred to after a stage.
    let mut found = Found::default();
    let olds: std::collections::BTreeSet<&str> = farm.replacements.iter().map(|r| r.old.as_str()).collect();
    let cx = Stages { farm, groups: &groups, times: &times, stage_of: &stage_of, targets: &targets, olds: &olds };
    let whole_farm = scope.len() == farm.hosts.len();
    let mut unknown_hosts = false;
    for name in scope {
        let host = &farm.hosts[name];
        let role = &farm.roles[&host.role];
        let state = match live.get(name) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                hosts.push(HostEntry { name: name.clone(), role: host.role.clone(), status: HostStatus::Unreachable { error: e.message.clone() } });
                unknown_hosts = true;
                continue;
            }
            None => {
                let error = "not read".to_string();
                hosts.push(HostEntry { name: name.clone(), role: host.role.clone(), status: HostStatus::Unreachable { error } });
                continue;
            }
        };
        if let Some((job, at)) = state.armed.first() {
            // A detached switch owns this host until it fires or is cancelled: never plan over it.
            let error = format!("a switch armed with `apply --detach` waits here (job {job}, switching at {at})");
            let hint = Some("see it with `farmctl status FARM`; let it fire, or disarm it with `farmctl cancel FARM`, then plan again".to_string());
            hosts.push(HostEntry { name: name.clone(), role: host.role.clone(), status: HostStatus::Failed { error, hint } });
            unknown_hosts = true;
            continue;
        }
        let mut host_actions: Vec<Action> = Vec::new();
        let mut failure = None;
        let mut failure_hint = None;
        for path in &farm.paths_of(name) {
            let info = match state.files.get(path) {
                Some(FileState::Present(info)) => info,
                Some(FileState::Missing) | None => {
                    notes.push(format!("{name}:{path} does not exist; nothing to edit there"));
                    continue;
                }
                Some(FileState::Unreadable(why)) => {
                    if *why == Unreadable::PermissionDenied {
                        failure_hint = Some("connect as a user who may read it, or set [ssh] sudo = true".to_string());
                    }
                    failure = Some(format!("{path}: {why}"));
                    continue;
                }
            };
            let sets = role.set.get(path).map(Vec::as_slice).unwrap_or(&[]);
            if let Err(e) = plan_file(&cx, name, host, path, info, sets, &mut host_actions, &mut found) {
                failure = Some(e);
            }
        }
        // A file to edit that this user may not replace stops the host at the read, not at the write.
        let edited = host_actions.iter().filter_map(|a| if let ActionKind::Edit(e) = &a.kind { Some(e.path.as_str()) } else { None });
        if let (None, Some(path)) = (&failure, state.unreplaceable(edited)) {
            failure = Some(format!("{path}: this user may not replace it: its directory is not writable (permissions, or a read-only file system)"));
            failure_hint = Some("connect as a user who may write there, or set [ssh] sudo = true; or mount the file system read-write".to_string());
        }
        if let Some(error) = failure {
            hosts.push(HostEntry { name: name.clone(), role: host.role.clone(), status: HostStatus::Failed { error, hint: failure_hint } });
            unknown_hosts = true;
            continue;
        }
        let reloads = reloads(farm, name, role, &times, &host_actions);
        host_actions.extend(reloads);
        let status = if host_actions.is_empty() { HostStatus::Unchanged } else { HostStatus::Changed };
        hosts.push(HostEntry { name: name.clone(), role: host.role.clone(), status });
        actions.extend(host_actions);
    }

    let Found { mut contents, caused_by, referred } = found;
    order::add_gates_and_retires(farm, &times, &mut actions, &caused_by, &referred);
    if !whole_farm || unknown_hosts {
        if actions.iter().any(|a| matches!(a.kind, ActionKind::Edit(_))) && farm.roles.values().any(|r| r.retire.is_some()) {
            notes.push("no host is retired: the plan does not cover every host, so farmctl cannot tell that nothing refers to it".into());
        }
        actions.retain(|a| !matches!(a.kind, ActionKind::Retire { .. }));
    }

    // Stage by stage, then host by host, each after what it depends on.
    let mut actions = ordered(actions)?;
    let mut stages = stages_of(&times, &actions);
    notes.extend(services::notes(farm, live));
    notes.extend(skip_notes(farm));
    rollout::plan_rollouts(farm, live, scope, unproven, times.len(), &mut hosts, &mut actions, &mut stages, &mut contents)?;
    notes.extend(rollout::unknown_versions(live, &actions));

    let mut plan = Plan {
        format_version: FORMAT_VERSION,
        id: String::new(),
        farm: FarmRef { name: farm.name.clone(), path: farm.path.display().to_string(), sha256: farm.sha256.clone() },
        limit: limit.to_vec(),
        hosts,
        stages,
        actions,
        notes,
    };
    plan.id = plan.digest();
    let kept: std::collections::BTreeSet<&str> = plan.actions.iter().map(|a| a.id.as_str()).collect();
    contents.retain(|id, _| kept.contains(id.as_str()));
    Ok(Planned { plan, contents })
}

#[cfg(test)]
mod tests;
