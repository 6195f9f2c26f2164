//! A saved plan is verified, never trusted. Before anything acts on it, its
//! file must be exactly as farmctl wrote it (its id is the digest of its
//! content), its farm file must be unchanged, and the plan derived again now
//! from the farm file and the live hosts must equal it in every action,
//! command, stage, level and hash. Any difference is named.

use super::Session;
use crate::error::{Error, ErrorKind, Result};
use crate::farm::{self, Farm};
use crate::plan::{self, Plan, Planned};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tampered(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Plan, format!("refusing plan {}: {what}; nothing was done", path.display()))
        .hint("a plan file must be exactly as `farmctl plan -o` wrote it: make a new plan and review it")
}

/// Reads a saved plan and checks that it is exactly as farmctl wrote it:
/// its id is the digest of its content, and re-serializing it gives its bytes.
pub fn load_plan(path: &Path) -> Result<Plan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::new(ErrorKind::Io, format!("cannot read plan {}: {e}", path.display())))?;
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        // A farm file given where a plan belongs is the likeliest mistake: said so.
        let farm_file = text.parse::<toml_edit::DocumentMut>().is_ok_and(|d| d.contains_key("farm"));
        let what = if farm_file { format!("{} is a farm file, not a farmctl plan", path.display()) } else { format!("{}:{}:{}: not a farmctl plan: {e}", path.display(), e.line(), e.column()) };
        Error::new(ErrorKind::Plan, what)
            .hint("make a plan with `farmctl plan FARM -o PLAN.json`; `farmctl journal --plans` lists the applied plans by id, which `rollback` also takes")
    })?;
    if plan.format_version != plan::FORMAT_VERSION {
        return Err(Error::new(ErrorKind::Plan, format!("{} is plan format {}; this farmctl reads format {}", path.display(), plan.format_version, plan::FORMAT_VERSION)));
    }
    verify_saved_file(path, &text, &plan)?;
    Ok(plan)
}

/// The digest check of a saved plan's text.
pub fn verify_saved_file(path: &Path, text: &str, plan: &Plan) -> Result<()> {
    let digest = plan.digest();
    if plan.id != digest {
        return Err(tampered(path, format_args!("its content was edited: its id is {} but its content's digest is {digest}", plan.id)));
    }
    if plan.to_json() != text {
        return Err(tampered(path, "it is not as farmctl wrote it (fields were added, reordered or reformatted)"));
    }
    Ok(())
}

/// The farm file a saved plan came from, checked against the plan's hash.
pub fn farm_of(plan: &Plan) -> Result<Farm> {
    let path = PathBuf::from(&plan.farm.path);
    let farm = farm::load(&path).map_err(|e| Error::from(e).hint(format!("the plan was made from {}; run farmctl from the same directory", plan.farm.path)))?;
    if farm.sha256 != plan.farm.sha256 {
        return Err(Error::new(ErrorKind::Plan, format!("the plan no longer matches its farm file: {} changed since plan {} was made", plan.farm.path, plan.id))
            .hint("make a new plan with `farmctl plan` and review it"));
    }
    if farm.name != plan.farm.name {
        return Err(Error::new(ErrorKind::Plan, format!("plan {} names farm `{}`, but {} is farm `{}`", plan.id, plan.farm.name, plan.farm.path, farm.name)));
    }
    Ok(farm)
}

/// Differences between a saved plan and the one derived now, each naming its host, path or action.
pub fn differences(saved: &Plan, fresh: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let fresh_by_id: BTreeMap<&str, &plan::Action> = fresh.actions.iter().map(|a| (a.id.as_str(), a)).collect();
    let saved_ids: BTreeSet<&str> = saved.actions.iter().map(|a| a.id.as_str()).collect();
    for a in &saved.actions {
        let Some(f) = fresh_by_id.get(a.id.as_str()) else {
            out.push(match &a.kind {
                plan::ActionKind::Edit(e) => format!("{}:{}: the planned edit no longer applies (the file changed, or is gone)", a.host, e.path),
                _ => format!("{}: the plan shows the {}, which the farm file and hosts do not give now", a.host, a.in_words()),
            });
            continue;
        };
        if a == *f {
            continue;
        }
        match (&a.kind, &f.kind) {
            (plan::ActionKind::Edit(e), plan::ActionKind::Edit(g)) if e.before_sha256 != g.before_sha256 => {
                out.push(format!("{}:{}: the file changed since the plan", a.host, e.path))
            }
            _ => out.push(format!("{}: the {} differs from what the farm file and hosts give ({})", a.host, a.in_words(), changed_fields(a, f).join(", "))),
        }
    }
    for f in fresh.actions.iter().filter(|f| !saved_ids.contains(f.id.as_str())) {
        out.push(match &f.kind {
            plan::ActionKind::Edit(e) => format!("{}:{}: the file changed since the plan and now needs an edit the plan does not show", f.host, e.path),
            _ => format!("{}: the {} is needed now, and the plan does not show it", f.host, f.in_words()),
        });
    }
    if saved.stages != fresh.stages {
        out.push("the plan's stages (their order, times or members) differ from what the farm file gives".into());
    }
    if saved.hosts != fresh.hosts {
        out.push("the plan's host list differs from the farm's hosts as read now".into());
    }
    if saved.notes != fresh.notes {
        out.push("the plan's notes differ from the ones derived now".into());
    }
    out
}

fn changed_fields(a: &plan::Action, b: &plan::Action) -> Vec<String> {
    let (x, y) = (serde_json::to_value(a).unwrap_or_default(), serde_json::to_value(b).unwrap_or_default());
    let (Some(x), Some(y)) = (x.as_object(), y.as_object()) else { return vec![] };
    let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    keys.into_iter().filter(|k| x.get(*k) != y.get(*k)).map(|k| k.to_string()).collect()
}

/// A saved plan, verified against its farm file and the live hosts, ready to execute.
pub struct SavedRun {
    pub session: Session,
    /// The saved plan itself, with the contents re-derived now (each checked by its after-hash).
    pub planned: Planned,
}

/// Verifies a saved plan end to end and connects what it needs. Nothing is written on any host.
pub async fn prepare_saved(path: &Path, parallel: usize) -> Result<SavedRun> {
    let saved = load_plan(path)?;
    let farm = Arc::new(farm_of(&saved)?);
    let mut session = Session::with_farm(farm.clone(), parallel);
    let scope = session.select(&saved.limit)?;
    if let Some(h) = saved.hosts.iter().find(|h| !farm.hosts.contains_key(&h.name)) {
        return Err(Error::new(ErrorKind::Plan, format!("plan {} names host {}, which the farm file does not have", saved.id, h.name)));
    }
    // Right after `plan -o` on this workstation, what it read stands in for a second read:
    // every host still checks each file's before-hash when it stages.
    match crate::snapshot::load(&saved.id, &farm.sha256) {
        Some(live) if scope.iter().all(|h| live.contains_key(h)) => {
            session.live = live;
            session.read_unproven();
        }
        _ => session.read(&scope).await,
    }
    let fresh = session.plan(&scope, &saved.limit)?;
    if let Some(e) = super::unreachable_error(&fresh.plan, &session.live) {
        return Err(Error { message: format!("refusing to apply plan {}, nothing was written: {}", saved.id, e.message), ..e });
    }
    let diff = differences(&saved, &fresh.plan);
    if !diff.is_empty() || fresh.plan.id != saved.id {
        let detail = if diff.is_empty() { vec!["the plan derived now has another id".to_string()] } else { diff };
        return Err(Error::new(ErrorKind::Plan, format!("refusing to apply plan {}: it differs from what the farm file and the hosts give now; nothing was written:\n  {}", saved.id, detail.join("\n  ")))
            .hint("run `farmctl plan` again and review the new plan"));
    }
    let edit_hosts: Vec<String> = saved.edits().map(|(a, _)| a.host.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    session.connect_or_refuse(&edit_hosts, &format!("apply plan {}", saved.id)).await?;
    Ok(SavedRun { session, planned: Planned { plan: saved, contents: fresh.contents } })
}
