//! `farmctl validate`: check a farm file without contacting any host.

use super::{out, Outcome};
use crate::cli::ValidateArgs;
use std::process::ExitCode;

pub fn run(args: &ValidateArgs) -> Outcome {
    let farm = crate::farm::load(&args.farm)?;
    out(&format!(
        "{}: farm \"{}\" is valid: {} host(s), {} role(s), {} replacement(s)\n",
        args.farm.display(),
        farm.name,
        farm.hosts.len(),
        farm.roles.len(),
        farm.replacements.len()
    ));
    for w in &farm.warnings {
        crate::say!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
