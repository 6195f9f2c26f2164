//! Pure: the shadow phase of a rollout as plan nodes. The canary (upgraded
//! and healthy) enters every client's mirror list; a `judge` node samples it
//! against the active members over the window; then either the promotion
//! (out of the mirror list, into the active list) or the exit (every client
//! file back as it was) is applied, through the same compare-and-swap edits
//! as any other. Both branches are in the plan, with their diffs.

use super::{diff_text, Action, ActionKind, Contents, Edit, HostEntry};
use crate::edit::{self, Replacer};
use crate::farm::{Farm, Rollout, SetValue, Shadow};
use crate::live::{FileState, LiveFarm};

/// A client file that lists the role's members.
struct Client {
    host: String,
    content: Vec<u8>,
    active: Vec<String>,
    mirror: Vec<String>,
}

fn clients(farm: &Farm, live: &LiveFarm, scope: &[String], sh: &Shadow, members: &[String]) -> Vec<Client> {
    let mut out = Vec::new();
    for name in scope {
        let host = &farm.hosts[name];
        if !farm.roles[&host.role].files.contains(&sh.file) {
            continue;
        }
        let Some(Ok(state)) = live.get(name) else { continue };
        let Some(FileState::Present(f)) = state.files.get(&sh.file) else { continue };
        let Some(active) = edit::string_list(&f.content, &sh.active_key) else { continue };
        if !active.iter().any(|a| members.contains(a)) {
            continue;
        }
        let mirror = edit::string_list(&f.content, &sh.mirror_key).unwrap_or_default();
        out.push(Client { host: name.clone(), content: f.content.clone(), active, mirror });
    }
    out
}

/// The shadow canary among `candidates` (members that need the upgrade, in
/// order): one that no client lists as active, or else the first, drained.
/// `None` when no client lists the role.
pub fn pick_canary(farm: &Farm, live: &LiveFarm, scope: &[String], r: &Rollout, members: &[String], candidates: &[String]) -> Option<(String, bool)> {
    let sh = r.shadow.as_ref()?;
    let cs = clients(farm, live, scope, sh, members);
    if cs.is_empty() {
        return None;
    }
    let inactive = candidates.iter().find(|c| !cs.iter().any(|cl| cl.active.contains(c)));
    match inactive {
        Some(c) => Some((c.clone(), false)),
        None => candidates.first().map(|c| (c.clone(), true)),
    }
}

fn list(v: &[String]) -> SetValue {
    SetValue::Array(v.iter().map(|s| SetValue::String(s.clone())).collect())
}

/// One client file edit, by sets, as a plan node; `None` when nothing changes.
#[allow(clippy::too_many_arguments)]
fn edit_node(id: String, host: &str, path: &str, before: &[u8], sets: &[(String, SetValue)], reason: &str, stage: usize, level: usize, deps: &[String], contents: &mut Contents) -> Option<(Action, Vec<u8>)> {
    let edited = edit::edit_file(path, before, &Replacer::new(vec![]), sets).ok()?;
    if edited.bytes == before {
        return None;
    }
    let after = edited.bytes;
    contents.insert(id.clone(), after.clone());
    let action = Action {
        id,
        host: host.to_string(),
        stage,
        level,
        at: None,
        depends_on: deps.to_vec(),
        kind: ActionKind::Edit(Edit {
            path: path.to_string(),
            before_sha256: crate::farm::sha256_hex(before),
            after_sha256: crate::farm::sha256_hex(&after),
            after_size: after.len(),
            reasons: vec![reason.to_string()],
            diff: diff_text(host, path, before, &after),
        }),
    };
    Some((action, after))
}

/// A client's reload after its edits of one phase.
fn reload_node(farm: &Farm, id: String, host: &str, stage: usize, level: usize, deps: Vec<String>) -> Option<Action> {
    let command = farm.roles[&farm.hosts[host].role].reload.clone()?;
    Some(Action { id, host: host.to_string(), stage, level, at: None, depends_on: deps, kind: ActionKind::Reload { command } })
}

/// The shadow nodes after the canary's gate `after`, from `level`: enter, judge,
/// then both branches. Returns the ids of every node, and the id the next wave
/// must wait for (the judge).
#[allow(clippy::too_many_arguments)]
pub fn nodes(farm: &Farm, live: &LiveFarm, scope: &[String], r: &Rollout, members: &[String], canary: &str, drained: bool, from: &str, stage: usize, level: usize, after: &str, hosts: &mut [HostEntry], actions: &mut Vec<Action>, contents: &mut Contents) -> (Vec<String>, String) {
    let sh = r.shadow.as_ref().expect("a shadow rollout");
    let mut ids = Vec::new();
    let (mut enter_ids, mut promote_ids, mut exit_ids) = (Vec::new(), Vec::new(), Vec::new());
    let judge_id = format!("judge:{}:{canary}@{stage}", r.role);
    for cl in clients(farm, live, scope, sh, members) {
        let mut mirror = cl.mirror.clone();
        if !mirror.iter().any(|m| m == canary) {
            mirror.push(canary.to_string());
        }
        let mut sets = vec![(sh.mirror_key.clone(), list(&mirror))];
        if drained {
            sets.push((sh.active_key.clone(), list(&cl.active.iter().filter(|a| *a != canary).cloned().collect::<Vec<_>>())));
        }
        let enter_id = format!("shadow-enter:{}:{}@{stage}", cl.host, sh.file);
        let reason = format!("{canary} enters shadow: mirrored work, serves no one ({})", sh.mirror_key);
        let Some((enter, entered)) = edit_node(enter_id.clone(), &cl.host, &sh.file, &cl.content, &sets, &reason, stage, level, &[after.to_string()], contents) else { continue };
        actions.push(enter);
        enter_ids.push(enter_id.clone());
        if let Some(rl) = reload_node(farm, format!("shadow-enter-reload:{}@{stage}", cl.host), &cl.host, stage, level, vec![enter_id.clone()]) {
            enter_ids.push(rl.id.clone());
            actions.push(rl);
        }
        // Promotion: out of the mirror list, into the active list.
        let mirror_after: Vec<String> = mirror.iter().filter(|m| *m != canary).cloned().collect();
        let mut active_after: Vec<String> = cl.active.iter().filter(|a| *a != canary).cloned().collect();
        active_after.push(canary.to_string());
        let promote_id = format!("shadow-promote:{}:{}@{stage}", cl.host, sh.file);
        let sets = [(sh.mirror_key.clone(), list(&mirror_after)), (sh.active_key.clone(), list(&active_after))];
        let reason = format!("{canary} is promoted: it met every join condition ({})", sh.active_key);
        if let Some((p, _)) = edit_node(promote_id.clone(), &cl.host, &sh.file, &entered, &sets, &reason, stage, level + 2, std::slice::from_ref(&judge_id), contents) {
            actions.push(p);
            promote_ids.push(promote_id.clone());
            if let Some(rl) = reload_node(farm, format!("shadow-promote-reload:{}@{stage}", cl.host), &cl.host, stage, level + 2, vec![promote_id]) {
                promote_ids.push(rl.id.clone());
                actions.push(rl);
            }
        }
        // Exit: the client file exactly as it was before the shadow.
        let exit_id = format!("shadow-exit:{}:{}@{stage}", cl.host, sh.file);
        contents.insert(exit_id.clone(), cl.content.clone());
        actions.push(Action {
            id: exit_id.clone(),
            host: cl.host.clone(),
            stage,
            level: level + 2,
            at: None,
            depends_on: vec![judge_id.clone()],
            kind: ActionKind::Edit(Edit {
                path: sh.file.clone(),
                before_sha256: crate::farm::sha256_hex(&entered),
                after_sha256: crate::farm::sha256_hex(&cl.content),
                after_size: cl.content.len(),
                reasons: vec![format!("{canary} failed a join condition and leaves the shadow")],
                diff: diff_text(&cl.host, &sh.file, &entered, &cl.content),
            }),
        });
        exit_ids.push(exit_id.clone());
        if let Some(rl) = reload_node(farm, format!("shadow-exit-reload:{}@{stage}", cl.host), &cl.host, stage, level + 2, vec![exit_id]) {
            exit_ids.push(rl.id.clone());
            actions.push(rl);
        }
        if let Some(e) = hosts.iter_mut().find(|e| e.name == cl.host) {
            e.status.mark_changed();
        }
    }
    let baseline: Vec<String> = members.iter().filter(|m| *m != canary).cloned().collect();
    let sampled: Vec<String> = std::iter::once(canary.to_string()).chain(baseline.iter().cloned()).collect();
    let metrics = super::queries::queries(farm, live, r, &sampled, &[canary.to_string()]);
    actions.push(Action {
        id: judge_id.clone(),
        host: canary.to_string(),
        stage,
        level: level + 1,
        at: None,
        depends_on: enter_ids.clone(),
        kind: ActionKind::Judge {
            role: r.role.clone(),
            canary: canary.to_string(),
            baseline,
            health: r.health.clone(),
            metrics,
            window_ms: sh.window.as_millis() as u64,
            interval_ms: r.gate.interval.as_millis() as u64,
            join: sh.join.clone(),
            confidence: sh.test.map(|t| t.confidence),
            promote: promote_ids.clone(),
            exit: exit_ids.clone(),
            from: from.to_string(),
        },
    });
    ids.extend(enter_ids);
    ids.push(judge_id.clone());
    ids.extend(promote_ids);
    ids.extend(exit_ids);
    (ids, judge_id)
}
