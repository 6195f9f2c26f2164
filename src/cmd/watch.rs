//! `farmctl watch FARM`: keep the farm's services up until stopped.

use super::Outcome;
use crate::cli::WatchArgs;
use crate::pipeline::watch::{watch, Log};
use std::process::ExitCode;

pub async fn run(args: &WatchArgs) -> Outcome {
    watch(&args.farm, Log { json: args.json }).await?;
    Ok(ExitCode::SUCCESS)
}
