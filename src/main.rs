//! The farmctl binary: parse arguments, run one command, print any error with
//! its hint, and pick the exit code (0 ok, 1 error, 2 changes pending).

use clap::Parser;
use farmctl::app::{self, Failure};
use farmctl::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return report(Failure::new(format!("cannot start the async runtime: {e}"))),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Plan { farm, out, format, detailed_exitcode, reach } => {
                app::plan_cmd(&farm, out.as_deref(), format.into(), detailed_exitcode, &reach.limit, reach.parallel as usize).await
            }
            Command::Apply { target, yes, max_fail, detach, reach } => {
                let flags = app::ApplyFlags { yes, detach, max_fail, parallel: reach.parallel as usize };
                app::apply_cmd(&target, &reach.limit, flags).await
            }
            Command::Status { farm, reach } => app::status_cmd(&farm, &reach.limit, reach.parallel as usize).await,
            Command::Cancel { farm, reach } => app::cancel_cmd(&farm, &reach.limit, reach.parallel as usize).await,
            Command::Unlock { farm, yes, reach } => app::unlock_cmd(&farm, yes, &reach.limit, reach.parallel as usize).await,
            Command::Graph { farm, reach } => app::graph_cmd(&farm, &reach.limit, reach.parallel as usize).await,
            Command::Show { plan, format } => app::show_cmd(&plan, format.into()),
            Command::Rollback { plan, yes, parallel } => app::rollback_cmd(&plan, yes, parallel as usize).await,
            Command::Validate { farm } => app::validate_cmd(&farm),
            Command::Journal { host } => app::journal_cmd(host.as_deref()),
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "farmctl", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Schema => {
                println!("{}", serde_json::to_string_pretty(&farmctl::farm::farm_schema()).expect("a schema serializes"));
                Ok(ExitCode::SUCCESS)
            }
            Command::Man => {
                let cmd = <Cli as clap::CommandFactory>::command();
                clap_mangen::Man::new(cmd)
                    .render(&mut std::io::stdout())
                    .or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) })
                    .map(|_| ExitCode::SUCCESS)
                    .map_err(|e| Failure::new(format!("cannot write the man page: {e}")))
            }
        }
    });
    match outcome {
        Ok(code) => code,
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    farmctl::say!("error: {}", f.message);
    if let Some(h) = f.hint {
        farmctl::say!("hint: {h}");
    }
    ExitCode::FAILURE
}
