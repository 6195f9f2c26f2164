//! `farmctl watch FARM`: keep the farm's services up until stopped.

use super::Outcome;
use crate::cli::WatchArgs;
use crate::pipeline::watch::{watch, WatchOptions};
use crate::pipeline::Log;
use std::process::ExitCode;

pub async fn run(args: &WatchArgs) -> Outcome {
    crate::logging::init(args.json, super::log_level());
    watch(&args.farm, Log, WatchOptions { no_wait: args.no_wait, metrics: args.metrics }).await?;
    Ok(ExitCode::SUCCESS)
}
