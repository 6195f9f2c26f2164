//! The farmctl binary: parse arguments, run one command, render any error
//! with its hints, and pick the exit code: 0 ok, 1 error (usage errors
//! included), 2 changes pending (`plan --detailed-exitcode` only).

use clap::Parser;
use farmctl::cli::{Cli, Command};
use farmctl::cmd;
use farmctl::error::{Error, ErrorKind};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and --version are not errors; a usage error must not exit 2,
            // which `--detailed-exitcode` reserves for "changes pending".
            let _ = e.print();
            return if e.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    cmd::set_voice(cli.color, cli.quiet, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return report(Error::new(ErrorKind::Io, format!("cannot start the async runtime: {e}"))),
    };
    let outcome = runtime.block_on(async {
        match &cli.command {
            Command::Plan(a) => cmd::plan::run(a).await,
            Command::Apply(a) => cmd::apply::run(a).await,
            Command::Show(a) => cmd::show::run(a),
            Command::Rollback(a) => cmd::rollback::run(a).await,
            Command::Status(a) => cmd::switches::status(a).await,
            Command::Cancel(a) => cmd::switches::cancel(a).await,
            Command::Unlock(a) => cmd::switches::unlock(a).await,
            Command::Graph(a) => cmd::graph::run(a).await,
            Command::Validate(a) => cmd::validate::run(a),
            Command::Watch(a) => cmd::watch::run(a).await,
            Command::Journal(a) => cmd::journal::run(a),
            Command::Schema(a) => cmd::meta::schema(a),
            Command::Completions(a) => cmd::meta::completions(a),
            Command::Man(a) => cmd::meta::man(a),
            Command::Import(a) => cmd::meta::import(a),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => report(e),
    }
}

/// The one place an error is rendered: its message, then each hint.
fn report(e: Error) -> ExitCode {
    farmctl::say!("error: {}", e.message);
    for h in &e.hints {
        farmctl::say!("hint: {h}");
    }
    ExitCode::FAILURE
}
