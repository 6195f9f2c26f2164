//! `farmctl journal`: what this workstation applied, file by file.

use super::{out, Outcome};
use crate::apply::journal::Journal;
use crate::cli::JournalArgs;
use crate::error::{Error, ErrorKind};
use std::process::ExitCode;

pub fn run(args: &JournalArgs) -> Outcome {
    let journal = Journal::open();
    let entries = journal.read().map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", journal.path().display())))?;
    let entries: Vec<_> = entries.into_iter().filter(|e| args.host.as_deref().is_none_or(|h| e.host == h)).collect();
    if args.plans {
        // Plans in the order they were first applied, with what happened to their files.
        let mut order: Vec<&str> = Vec::new();
        let mut seen: std::collections::BTreeMap<&str, (String, String, std::collections::BTreeSet<&str>, std::collections::BTreeMap<&str, usize>)> = Default::default();
        for e in &entries {
            let s = seen.entry(e.plan.as_str()).or_insert_with(|| {
                order.push(&e.plan);
                (e.time.clone(), e.farm.clone(), Default::default(), Default::default())
            });
            s.2.insert(&e.host);
            *s.3.entry(e.outcome.as_str()).or_default() += 1;
        }
        for plan in order {
            let (time, farm, hosts, outcomes) = &seen[plan];
            let counts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
            let kept = crate::pipeline::kept_plans_dir().join(format!("{plan}.json"));
            let undo = if kept.exists() { format!("undo: farmctl rollback {plan}") } else { "not kept here".to_string() };
            out(&format!("{time} {plan} farm={farm} hosts={} files: {} ({undo})\n", hosts.len(), counts.join(", ")));
        }
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let short = |h: &str| h[..12.min(h.len())].to_string();
        out(&format!("{} {} {}:{} {} {}..{} {}\n", e.time, e.plan, e.host, e.path, e.outcome, short(&e.before_sha256), short(&e.after_sha256), e.detail));
    }
    Ok(ExitCode::SUCCESS)
}
