//! `farmctl plan`: read the hosts and show what would change.

use super::{color, out, Outcome, EXIT_CHANGES};
use crate::cli::PlanArgs;
use crate::pipeline::{self, Session};
use std::collections::BTreeSet;
use std::process::ExitCode;

pub async fn run(args: &PlanArgs) -> Outcome {
    let (session, planned) = Session::read_and_plan(&args.farm, &args.reach.limit, args.reach.parallel as usize).await?;
    let plan = &planned.plan;
    out(&crate::render::render(plan, args.format.into(), Some(jiff::Timestamp::now()), color()));
    if let Some(e) = pipeline::unreachable_error(plan, &session.live) {
        return Err(e);
    }
    for w in pipeline::clock_warnings(&session.pool.farm, &session.live) {
        crate::say!("warning: {w}");
    }
    if let Some(path) = &args.out {
        pipeline::write_atomic(path, &plan.to_json())?;
        let read: Vec<String> = session.live.keys().cloned().collect();
        crate::snapshot::save(&plan.id, &session.pool.farm.sha256, &session.live, &read);
        crate::say!("Saved plan {} to {}. Apply exactly this plan with: farmctl apply {}", plan.id, path.display(), path.display());
    }
    if !args.reach.limit.is_empty() && plan.has_changes() {
        let hosts: BTreeSet<&str> = plan.hosts.iter().map(|h| h.name.as_str()).collect();
        crate::say!("note: --limit planned {} of {} host(s); hosts outside it were not read", hosts.len(), session.pool.farm.hosts.len());
    }
    Ok(if args.detailed_exitcode && plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS })
}
