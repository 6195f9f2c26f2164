//! `farmctl schema`, `completions` and `man`: documents about farmctl itself.

use super::{out, Outcome};
use crate::cli::{Cli, CompletionsArgs};
use std::process::ExitCode;

pub fn schema() -> Outcome {
    out(&format!("{}\n", serde_json::to_string_pretty(&crate::farm::farm_schema()).expect("a schema serializes")));
    Ok(ExitCode::SUCCESS)
}

pub fn completions(args: &CompletionsArgs) -> Outcome {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "farmctl", &mut buf);
    out(&String::from_utf8_lossy(&buf));
    Ok(ExitCode::SUCCESS)
}

pub fn man() -> Outcome {
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf).expect("rendering into memory cannot fail");
    out(&String::from_utf8_lossy(&buf));
    Ok(ExitCode::SUCCESS)
}
