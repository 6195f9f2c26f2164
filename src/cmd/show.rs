//! `farmctl show`: render a saved plan, after checking that it is exactly as
//! farmctl wrote it and that its farm file has not changed.

use super::{color, out, Outcome};
use crate::cli::ShowArgs;
use crate::pipeline;
use std::process::ExitCode;

pub fn run(args: &ShowArgs) -> Outcome {
    let plan = pipeline::load_plan(&args.plan)?;
    out(&crate::render::render(&plan, args.format.into(), Some(jiff::Timestamp::now()), color()));
    pipeline::farm_of(&plan)?;
    Ok(ExitCode::SUCCESS)
}
