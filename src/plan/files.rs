//! Pure: the edits of each file of a host, stage by stage, and each host's
//! reloads after them. `plan_with` (the parent) calls these for every host.

use super::{diff_text, reason, refers_to, rules_for, services, stamp, Action, ActionKind, Contents, Edit};
use crate::edit::{self, Cause, Replacer, Rule};
use crate::farm::{Farm, Replacement};
use std::collections::BTreeMap;

/// What the stages of a plan are, for planning each file.
pub(super) struct Stages<'a> {
    pub(super) farm: &'a Farm,
    pub(super) groups: &'a BTreeMap<Option<jiff::Timestamp>, Vec<&'a Replacement>>,
    pub(super) times: &'a [Option<jiff::Timestamp>],
    pub(super) stage_of: &'a BTreeMap<Option<jiff::Timestamp>, usize>,
    /// Each service's active member, for the files that name a virtual name.
    pub(super) targets: &'a BTreeMap<String, String>,
    /// Every host some replacement replaces.
    pub(super) olds: &'a std::collections::BTreeSet<&'a str>,
}

/// What planning the files finds across hosts: the new contents, the
/// replacements that caused each edit, and (stage, old host) for every old
/// host some other host's file still names after that stage.
#[derive(Default)]
pub(super) struct Found {
    pub(super) contents: Contents,
    pub(super) caused_by: BTreeMap<String, Vec<usize>>,
    pub(super) referred: std::collections::BTreeSet<(usize, String)>,
}

/// The edits of one file of one host, stage by stage, each after the one
/// before; `Err` says why the file cannot be edited, which stops the host.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_file(cx: &Stages, name: &str, host: &crate::farm::Host, path: &str, info: &crate::live::FileInfo, sets: &[(String, crate::farm::SetValue)], host_actions: &mut Vec<Action>, found: &mut Found) -> Result<(), String> {
    let farm = cx.farm;
    let mut content = info.content.clone();
    let mut before_hash = info.sha256.clone();
    let mut previous: Option<String> = None;
    for t in cx.times {
        'edit: {
            let here: Vec<&&Replacement> = cx.groups.get(t).into_iter().flatten().filter(|r| farm.applies_to(r, host) && !r.skip_paths.iter().any(|g| crate::farm::glob(g, path))).collect();
            let rules: Vec<Rule> = here.iter().flat_map(|r| rules_for(farm, r)).collect();
            let no_rules = rules.is_empty();
            let replacer = here.iter().fold(Replacer::new(rules), |rep, r| rep.skipping(r.index, &r.skip_lines));
            let group_sets = if t.is_none() { sets } else { &[] };
            let mut bytes = content.clone();
            let mut reasons = Vec::new();
            let mut replaced = Vec::new();
            if !no_rules || !group_sets.is_empty() {
                match edit::edit_file(path, &content, &replacer, group_sets) {
                    Ok(e) if !e.causes.is_empty() => {
                        reasons.extend(e.causes.iter().map(|c| reason(farm, c)));
                        replaced.extend(e.causes.iter().filter_map(|c| if let Cause::Replace(i) = c { Some(*i) } else { None }));
                        bytes = e.bytes;
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("{path}: {e}")),
                }
            }
            if t.is_none() {
                if let Some((b, why)) = services::edit(farm, cx.targets, name, path, &bytes) {
                    bytes = b;
                    reasons.extend(why);
                }
            }
            if reasons.is_empty() || bytes == content {
                break 'edit;
            }
            let stage = cx.stage_of[t];
            let id = format!("edit:{name}:{path}@{stage}");
            let after_hash = crate::farm::sha256_hex(&bytes);
            host_actions.push(Action {
                id: id.clone(),
                host: name.to_string(),
                stage,
                level: 0,
                at: stamp(t),
                depends_on: previous.iter().cloned().collect(),
                kind: ActionKind::Edit(Edit {
                    path: path.to_string(),
                    before_sha256: before_hash.clone(),
                    after_sha256: after_hash.clone(),
                    after_size: bytes.len(),
                    reasons,
                    diff: diff_text(name, path, &content, &bytes),
                }),
            });
            found.caused_by.insert(id.clone(), replaced);
            previous = Some(id.clone());
            before_hash = after_hash;
            content = bytes;
            found.contents.insert(id, content.clone());
        }
        // Which old hosts this file still names once the stage is done (a host's own files aside).
        for old in cx.olds.iter().filter(|o| **o != name) {
            if refers_to(farm, path, &content, old) {
                found.referred.insert((cx.stage_of[t], old.to_string()));
            }
        }
    }
    Ok(())
}

/// A host's reload after each stage that edits its files: after every edit
/// of that stage (an adopted server is renamed first).
pub(super) fn reloads(farm: &Farm, name: &str, role: &crate::farm::Role, times: &[Option<jiff::Timestamp>], host_actions: &[Action]) -> Vec<Action> {
    let mut by_stage: BTreeMap<usize, (Vec<String>, Vec<&str>)> = BTreeMap::new();
    for a in host_actions {
        let entry = by_stage.entry(a.stage).or_default();
        entry.0.push(a.id.clone());
        if let ActionKind::Edit(e) = &a.kind {
            entry.1.push(e.path.as_str());
        }
    }
    let mut reloads = Vec::new();
    for (stage, (deps, paths)) in by_stage {
        // An adopted server takes its new name before its role reloads.
        let command = match (services::rename_command(farm, name, &paths), &role.reload) {
            (Some(rename), Some(reload)) => format!("{rename} && {reload}"),
            (Some(rename), None) => rename,
            (None, Some(reload)) => reload.clone(),
            (None, None) => continue,
        };
        reloads.push(Action {
            id: format!("reload:{name}@{stage}"),
            host: name.to_string(),
            stage,
            level: 0,
            at: stamp(&times[stage]),
            depends_on: deps,
            kind: ActionKind::Reload { command },
        });
    }
    reloads
}
