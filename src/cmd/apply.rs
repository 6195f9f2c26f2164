//! `farmctl apply FARM|PLAN.json`: plan and apply a farm file, or apply
//! exactly a saved plan once it has been verified.

use super::{color, confirm, finish, out, Outcome};
use crate::pipeline::{journal::{FileOutcome, Journal}, progress, Summary};
use crate::cli::ApplyArgs;
use crate::error::{Error, ErrorKind};
use crate::live::LiveFarm;
use crate::pipeline::{self, Session};
use std::process::ExitCode;

pub async fn run(args: &ApplyArgs) -> Outcome {
    let parallel = args.reach.parallel as usize;
    let saved = args.target.extension().is_some_and(|e| e == "json");
    let (mut session, planned) = if saved {
        if !args.reach.limit.is_empty() {
            return Err(Error::new(ErrorKind::Refused, "--limit cannot narrow a saved plan: it applies exactly what it shows").hint("make a new plan with --limit"));
        }
        let run = match pipeline::prepare_saved(&args.target, parallel).await {
            Ok(run) => run,
            Err(e) => return Err(already_applied(&args.target).unwrap_or(e)),
        };
        if !run.planned.plan.has_changes() {
            crate::say!("Plan {} has no changes; nothing to do.", run.planned.plan.id);
            return Ok(ExitCode::SUCCESS);
        }
        (run.session, run.planned)
    } else {
        let (session, planned) = Session::read_and_plan(&args.target, &args.reach.limit, parallel).await?;
        // `-q` with `--yes`: no plan on the screen, only what happened (a prompt still shows it).
        if !(super::quiet() && args.yes) {
            out(&crate::render::text(&planned.plan, Some(jiff::Timestamp::now()), color()));
        }
        if let Some(e) = pipeline::unreachable_error(&planned.plan, &session.live) {
            return Err(e);
        }
        if !planned.plan.has_changes() {
            return Ok(ExitCode::SUCCESS);
        }
        (session, planned)
    };
    let plan = &planned.plan;
    pipeline::check_schedule(plan, args.detach)?;
    for w in pipeline::clock_warnings(&session.pool.farm, &session.live) {
        crate::say!("warning: {w}");
    }
    if args.detach && args.switch_by == crate::cli::SwitchBy::Workstation {
        return Err(Error::new(ErrorKind::Refused, "--detach and --switch-by workstation do not go together: a detached switch fires by the host's clock").hint("drop one of them"));
    }
    let by_host = args.detach || args.switch_by == crate::cli::SwitchBy::Host;
    let (switch_by, note) =
        pipeline::switch_by(plan, &session.live, by_host, args.max_clock_offset)?;
    if let Some(note) = note {
        crate::say!("note: {note}");
    }
    if saved {
        crate::say!("Applying plan {}: {}", plan.id, crate::render::summary(plan));
    } else {
        confirm("apply this plan", args.yes)?;
        // A switch time is a promise: one that passed while the prompt waited is refused, not kept late.
        pipeline::check_schedule(plan, args.detach)?;
    }
    // The journal comes first: a run that could not record its writes does not write.
    let journal = Journal::open();
    journal.check_writable().map_err(|e| Error::new(ErrorKind::Io, format!("refusing to apply, nothing was written: {e}")).hint("farmctl journals every write before it reports it; make the journal's directory writable, or point $FARMCTL_JOURNAL elsewhere"))?;
    let kept = pipeline::keep_applied(plan)?;
    let mut opts = session.options(plan, args.max_fail, args.detach);
    opts.switch_by = switch_by;
    let summary = session
        .execute(
            &planned,
            &opts,
            &*progress::reporter(super::quiet()),
            &journal,
        )
        .await;
    if saved {
        crate::snapshot::remove(&plan.id);
    }
    print_offsets(&summary, plan, &session.live);
    let undo = format!("farmctl rollback {} (the plan is kept as {})", plan.id, kept.display());
    finish("apply", &summary, plan, Some(&undo))
}

/// For scheduled switches only: each switched host's clock against this
/// workstation's, as its check measured it right before the switch (or, on the
/// workstation's word, as the read did).
fn print_offsets(summary: &Summary, plan: &crate::plan::Plan, live: &LiveFarm) {
    let timed = |stage: &usize| plan.stages.iter().any(|s| s.index == *stage && s.at.is_some());
    let hosts: std::collections::BTreeSet<&String> = summary.renames.iter().filter(|(s, _)| timed(s)).flat_map(|(_, m)| m.keys()).collect();
    let offsets: Vec<String> = hosts
        .into_iter()
        .filter_map(|h| match summary.clocks.get(h) {
            Some(c) => Some(format!("{h} {c}")),
            None => live.get(h)?.as_ref().ok()?.clock().map(|c| format!("{h} {c}")),
        })
        .collect();
    if !offsets.is_empty() {
        crate::say!("host clock offsets against this workstation: {}", offsets.join(", "));
    }
}

/// A saved plan that no longer matches because this workstation applied it:
/// said as such, with when, instead of as a list of differences.
fn already_applied(target: &std::path::Path) -> Option<Error> {
    let plan = pipeline::load_plan(target).ok()?;
    let entries = Journal::open().read().ok()?;
    let written: Vec<_> = entries.iter().filter(|e| e.plan == plan.id && e.file().is_some_and(|(_, o)| o == FileOutcome::Written)).collect();
    let first = written.first()?;
    let hosts: std::collections::BTreeSet<&str> = written.iter().map(|e| e.host.as_str()).collect();
    Some(
        Error::new(ErrorKind::Plan, format!("plan {} was already applied at {} ({} file(s) written on {} host(s)); nothing was done", plan.id, first.time, written.len(), hosts.len()))
            .hint(format!("`farmctl journal --plan {}` shows what it wrote; to change more, make a new plan with `farmctl plan`", plan.id)),
    )
}
