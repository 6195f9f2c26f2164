//! Pure: a role's rollout as nodes of the plan graph. Each host that does not
//! run the version gets an `upgrade`, grouped into the canary and waves; each
//! wave ends in a `wave_gate` that the next wave waits for. Roles are ordered
//! so that every `requires` holds at every moment, or the plan is refused.

use super::{graph, Action, ActionKind, Contents, HostEntry, Stage};
use crate::farm::{parse_version, Farm, Rollout};
use crate::live::LiveFarm;

/// Hosts a rollout brought to a version (or found there) whose wave gate has
/// not passed since, by host: the version. From the workstation's journal.
pub type Unproven = std::collections::BTreeMap<String, String>;

/// Why a rollout cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RolloutError {
    #[error("{0}")]
    Requires(String),
    #[error("the rollouts require each other in a circle: {}", .0.members.join(" -> "))]
    Circle(graph::Cycle),
}

/// The version a host reports, as the plan records it.
fn installed(live: &LiveFarm, host: &str) -> Option<Result<String, String>> {
    match live.get(host) {
        Some(Ok(h)) => h.version.clone(),
        _ => None,
    }
}

/// A note for each host upgraded from a version its probe did not tell: the
/// reviewer sees why, and that its upgrade has no rollback.
pub fn unknown_versions(live: &LiveFarm, actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match &a.kind {
            ActionKind::Upgrade { from, probe, .. } if from == "unknown" => {
                let why = match installed(live, &a.host) {
                    Some(Err(e)) => e,
                    _ => "the host did not answer it".to_string(),
                };
                Some(format!("{}: the probe `{probe}` did not tell its version ({why}); it is upgraded from an unknown version, which a rollback cannot put back", a.host))
            }
            _ => None,
        })
        .collect()
}

/// The command that brings a host to `version`, with the version quoted for sh.
pub fn upgrade_command(r: &Rollout, version: &str) -> String {
    let quoted = shlex::try_quote(version).map(|c| c.into_owned()).unwrap_or_else(|_| "''".into());
    r.upgrade.replace("{version}", &quoted)
}

/// Host names in natural order, so that ivr-2 comes before ivr-10.
pub fn natural(names: &mut [String]) {
    names.sort_by_key(|n| natural_key(n));
}

/// A sort key that orders runs of digits by their value: ivr-2 < ivr-10.
pub fn natural_key(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                num.clear();
            }
            text.push(c);
        }
    }
    out.push((text, num.parse().unwrap_or(0)));
    out
}

/// Roles with a rollout, in an order where each comes after the roles it requires.
fn role_order(farm: &Farm) -> Result<Vec<&Rollout>, RolloutError> {
    let roles: Vec<&Rollout> = farm.rollouts.values().collect();
    let ids: Vec<String> = roles.iter().map(|r| r.role.clone()).collect();
    let deps: Vec<Vec<String>> = roles.iter().map(|r| r.requires.iter().map(|(o, _)| o.clone()).collect()).collect();
    let order = graph::order(&ids, &deps).map_err(RolloutError::Circle)?;
    Ok(order.into_iter().map(|i| roles[i]).collect())
}

/// Checks that every requirement of `r` holds once the roles before it are rolled out.
fn check_requires(farm: &Farm, live: &LiveFarm, scope: &[String], r: &Rollout) -> Result<(), RolloutError> {
    for (other, req) in &r.requires {
        let target = farm.rollouts.get(other).map(|o| o.version.clone());
        let mut breaks = Vec::new();
        for h in farm.hosts.values().filter(|h| h.role == *other) {
            // A host that is upgraded first runs its rollout's version; others run what they run.
            let now = if !scope.contains(&h.name) {
                None
            } else {
                match installed(live, &h.name) {
                    Some(Ok(v)) if Some(&v) != target.as_ref() => target.clone().or(Some(v)),
                    Some(Ok(v)) => Some(v),
                    _ => target.clone(),
                }
            };
            let ok = now.as_deref().and_then(parse_version).is_some_and(|v| req.matches(&v));
            if !ok {
                let what = match &now {
                    None => "not read (outside --limit)".to_string(),
                    Some(v) => format!("would run {v}"),
                };
                breaks.push(format!("{} {what}", h.name));
            }
        }
        if !breaks.is_empty() {
            return Err(RolloutError::Requires(format!(
                "[rollout.{}] requires {other} {req} while {} runs {}, and no rollout order can keep it: {}",
                r.role,
                r.role,
                r.version,
                breaks.join(", ")
            )));
        }
    }
    Ok(())
}

/// Adds the upgrades and wave gates of every rollout, each role in a stage of
/// its own after `first_stage - 1`, and marks the hosts it changes.
#[allow(clippy::too_many_arguments)]
pub fn plan_rollouts(farm: &Farm, live: &LiveFarm, scope: &[String], unproven: &Unproven, first_stage: usize, hosts: &mut [HostEntry], actions: &mut Vec<Action>, stages: &mut Vec<Stage>, contents: &mut Contents) -> Result<(), RolloutError> {
    let mut stage = first_stage;
    for r in role_order(farm)? {
        let mut members: Vec<String> = farm.hosts.values().filter(|h| h.role == r.role && scope.contains(&h.name)).map(|h| h.name.clone()).collect();
        natural(&mut members);
        let needs = |h: &String| !matches!(installed(live, h), Some(Ok(v)) if v == r.version);
        // At the version, but its wave's gate never passed (a run killed during it).
        let unproven_here = |h: &String| unproven.get(h) == Some(&r.version) && !needs(h);
        // Hosts that could not be read, or whose files could not be planned, are
        // not upgraded: the plan reports them as failed, and the apply exits 1.
        let failed: std::collections::BTreeSet<String> = hosts.iter().filter(|e| e.status.is_failure()).map(|e| e.name.clone()).collect();
        let readable = |h: &String| matches!(live.get(h), Some(Ok(_))) && !failed.contains(h);
        if !members.iter().any(|h| readable(h) && (needs(h) || unproven_here(h))) {
            continue;
        }
        check_requires(farm, live, scope, r)?;
        // A shadow canary goes first, alone: one the clients do not list as active, if there is one.
        let candidates: Vec<String> = members.iter().filter(|h| readable(h) && needs(h)).cloned().collect();
        let shadow = super::shadow::pick_canary(farm, live, scope, r, &members, &candidates);
        if let Some((c, _)) = &shadow {
            members.retain(|m| m != c);
            members.insert(0, c.clone());
        }
        // Wave boundaries over all the role's hosts, so a resumed rollout keeps them.
        let n = members.len();
        let mut bounds: Vec<(String, usize)> = Vec::new();
        if shadow.is_some() {
            bounds.push(("shadow canary".into(), 1));
        } else if r.canary.of(n) > 0 {
            bounds.push(("canary".into(), r.canary.of(n)));
        }
        for (i, w) in r.waves.iter().enumerate() {
            bounds.push((format!("wave {}", i + 1), w.of(n)));
        }
        let mut start = 0;
        let mut level = 0;
        let mut previous_gate: Option<String> = None;
        let mut ids = Vec::new();
        for (name, end) in bounds {
            let end = end.max(start).min(n);
            // Every readable host of the wave is gated, those already at the
            // version too: a rollout resumed after it was killed mid-wave gates
            // that wave again before any later wave starts (see issue 25).
            let gated: Vec<&String> = members[start..end].iter().filter(|h| readable(h)).collect();
            let wave: Vec<&String> = gated.iter().copied().filter(|h| needs(h)).collect();
            start = end;
            if gated.is_empty() {
                continue;
            }
            let mut ups = Vec::new();
            for h in &wave {
                let from = match installed(live, h) {
                    Some(Ok(v)) => v,
                    _ => "unknown".to_string(),
                };
                let rollback = (from != "unknown").then(|| upgrade_command(r, &from));
                let id = format!("upgrade:{h}@{stage}");
                ups.push(id.clone());
                actions.push(Action {
                    id,
                    host: (*h).clone(),
                    stage,
                    level,
                    at: None,
                    depends_on: previous_gate.iter().cloned().collect(),
                    kind: ActionKind::Upgrade { role: r.role.clone(), from, to: r.version.clone(), probe: r.probe.clone(), command: upgrade_command(r, &r.version), rollback },
                });
                if let Some(e) = hosts.iter_mut().find(|e| e.name == **h) {
                    e.status.mark_changed();
                }
            }
            let gate = format!("wave:{}:{level}@{stage}", r.role);
            actions.push(Action {
                id: gate.clone(),
                host: gated[0].clone(),
                stage,
                level,
                at: None,
                depends_on: if ups.is_empty() { previous_gate.iter().cloned().collect() } else { ups.clone() },
                kind: ActionKind::WaveGate {
                    role: r.role.clone(),
                    wave: name,
                    hosts: gated.iter().map(|h| (*h).clone()).collect(),
                    watch: members.clone(),
                    health: r.health.clone(),
                    metrics: super::queries::queries(farm, live, r, &members, &gated.iter().map(|h| (*h).clone()).collect::<Vec<_>>()),
                    conditions: r.gate.conditions.clone(),
                    samples: r.gate.samples,
                    failure_limit: r.gate.failure_limit,
                    version: r.version.clone(),
                    probe: r.probe.clone(),
                    interval_ms: r.gate.interval.as_millis() as u64,
                    timeout_ms: r.gate.timeout.as_millis() as u64,
                    max_unavailable: r.max_unavailable.of(n).max(1),
                },
            });
            ids.extend(ups);
            ids.push(gate.clone());
            previous_gate = Some(gate.clone());
            level += 1;
            if let (Some((canary, drained)), true) = (&shadow, level == 1) {
                let from = match installed(live, canary) {
                    Some(Ok(v)) => v,
                    _ => "unknown".to_string(),
                };
                let (shadow_ids, judge) = super::shadow::nodes(farm, live, scope, r, &members, canary, *drained, &from, stage, level, &gate, hosts, actions, contents);
                ids.extend(shadow_ids);
                previous_gate = Some(judge);
                level += 3;
            }
        }
        stages.push(Stage { index: stage, at: None, actions: ids });
        stage += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_ivr_2_before_ivr_10() {
        let mut v: Vec<String> = ["ivr-10", "ivr-2", "ivr-1", "asr-1"].iter().map(|s| s.to_string()).collect();
        natural(&mut v);
        assert_eq!(v, ["asr-1", "ivr-1", "ivr-2", "ivr-10"]);
    }
}
