//! `farmctl journal`: what this workstation applied, file by file.

use super::{out, Outcome};
use crate::apply::journal::Journal;
use crate::cli::JournalArgs;
use crate::error::{Error, ErrorKind};
use std::process::ExitCode;

pub fn run(args: &JournalArgs) -> Outcome {
    let journal = Journal::open();
    let entries = journal.read().map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", journal.path().display())))?;
    for e in entries.iter().filter(|e| args.host.as_deref().is_none_or(|h| e.host == h)) {
        let short = |h: &str| h[..12.min(h.len())].to_string();
        out(&format!("{} {} {}:{} {} {}..{} {}\n", e.time, e.plan, e.host, e.path, e.outcome, short(&e.before_sha256), short(&e.after_sha256), e.detail));
    }
    Ok(ExitCode::SUCCESS)
}
