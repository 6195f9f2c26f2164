//! `farmctl graph`: the plan's dependency graph as Graphviz DOT.

use super::{out, Outcome};
use crate::cli::FarmArgs;
use crate::pipeline::{self, Session};
use std::process::ExitCode;

pub async fn run(args: &FarmArgs) -> Outcome {
    let (session, planned) = Session::read_and_plan(&args.farm, &args.reach.limit, args.reach.parallel as usize).await?;
    if let Some(e) = pipeline::unreachable_error(&planned.plan, &session.live) {
        return Err(e);
    }
    out(&crate::render::dot(&planned.plan));
    Ok(ExitCode::SUCCESS)
}
