//! Pure: the graph's extra nodes and its layering. Gates before the clients
//! that switch to a host, retires after the last client left a host, and the
//! levels within a stage that each host switches in.

use super::{stamp, Action, ActionKind};
use crate::farm::Farm;
use std::collections::BTreeMap;

/// Gates: an edit caused by a replacement waits for its new host to be ready,
/// and that host is ready only after its own edits of the stage. Retires: once
/// no host in the farm refers to the old host, its role's `retire` runs.
pub(super) fn add_gates_and_retires(
    farm: &Farm,
    times: &[Option<jiff::Timestamp>],
    actions: &mut Vec<Action>,
    caused_by: &BTreeMap<String, Vec<usize>>,
    referred: &std::collections::BTreeSet<(usize, String)>,
) {
    let mut extra: BTreeMap<String, Action> = BTreeMap::new();
    let own_work: BTreeMap<(String, usize), Vec<String>> = actions.iter().fold(BTreeMap::new(), |mut m, a| {
        if let ActionKind::Reload { .. } = a.kind {
            m.insert((a.host.clone(), a.stage), vec![a.id.clone()]);
        } else {
            m.entry((a.host.clone(), a.stage)).or_insert_with(Vec::new).push(a.id.clone());
        }
        m
    });
    for a in actions.iter_mut() {
        for &i in caused_by.get(&a.id).into_iter().flatten() {
            let r = &farm.replacements[i];
            let new = &farm.hosts[&r.new];
            if a.host == r.new {
                // A host's own files never wait for the host itself to be ready.
                continue;
            }
            let gate = format!("gate:{}@{}", r.new, a.stage);
            extra.entry(gate.clone()).or_insert_with(|| Action {
                id: gate.clone(),
                host: r.new.clone(),
                stage: a.stage,
                level: 0,
                at: stamp(&times[a.stage]),
                depends_on: own_work.get(&(r.new.clone(), a.stage)).cloned().unwrap_or_default(),
                kind: ActionKind::Gate { command: farm.roles[&new.role].health.clone() },
            });
            if !a.depends_on.contains(&gate) {
                a.depends_on.push(gate);
            }
            // Retired only if no host refers to it from this stage to the end of the plan.
            if referred.range((a.stage, String::new())..).any(|(_, x)| *x == r.old) {
                continue;
            }
            let retire = format!("retire:{}@{}", r.old, a.stage);
            let old = &farm.hosts[&r.old];
            let entry = extra.entry(retire.clone()).or_insert_with(|| Action {
                id: retire,
                host: r.old.clone(),
                stage: a.stage,
                level: 0,
                at: stamp(&times[a.stage]),
                depends_on: vec![],
                kind: ActionKind::Retire { replaced_by: r.new.clone(), command: farm.roles[&old.role].retire.clone() },
            });
            let after = own_work.get(&(a.host.clone(), a.stage)).cloned().unwrap_or_default();
            for d in after {
                if !entry.depends_on.contains(&d) {
                    entry.depends_on.push(d);
                }
            }
        }
    }
    actions.extend(extra.into_values());
}

pub(super) fn group(k: &ActionKind) -> u8 {
    match k {
        ActionKind::Gate { .. } => 0,
        ActionKind::Edit(_) | ActionKind::Reload { .. } => 1,
        ActionKind::Retire { .. } => 2,
        ActionKind::Upgrade { .. } => 3,
        ActionKind::WaveGate { .. } | ActionKind::Judge { .. } => 4,
    }
}

pub(super) fn kind_rank(k: &ActionKind) -> u8 {
    match k {
        ActionKind::Gate { .. } => 0,
        ActionKind::Edit(_) => 1,
        ActionKind::Reload { .. } => 2,
        ActionKind::Retire { .. } => 3,
        ActionKind::Upgrade { .. } => 4,
        ActionKind::WaveGate { .. } | ActionKind::Judge { .. } => 5,
    }
}

/// Levels within a stage: a gate comes one level after the work it waits for;
/// all of one host's edits and its reload share a level, so each host
/// switches once per stage. `actions` must be in dependency order.
pub(super) fn assign_levels(actions: &mut [Action]) {
    loop {
        let level: BTreeMap<String, usize> = actions.iter().map(|a| (a.id.clone(), a.level)).collect();
        let mut changed = false;
        for a in actions.iter_mut() {
            let bump = usize::from(matches!(a.kind, ActionKind::Gate { .. }));
            let want = a.depends_on.iter().filter_map(|d| level.get(d)).map(|l| l + bump).max().unwrap_or(0);
            if want > a.level {
                a.level = want;
                changed = true;
            }
        }
        let mut host_level: BTreeMap<(String, usize), usize> = BTreeMap::new();
        for a in actions.iter().filter(|a| matches!(a.kind, ActionKind::Edit(_) | ActionKind::Reload { .. })) {
            let l = host_level.entry((a.host.clone(), a.stage)).or_default();
            *l = (*l).max(a.level);
        }
        for a in actions.iter_mut().filter(|a| matches!(a.kind, ActionKind::Edit(_) | ActionKind::Reload { .. })) {
            let l = host_level[&(a.host.clone(), a.stage)];
            if l > a.level {
                a.level = l;
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

