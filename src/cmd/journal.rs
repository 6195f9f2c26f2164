//! `farmctl journal`: what this workstation applied, file by file.

use super::{out, Outcome};
use crate::pipeline::journal::{Journal, Record};
use crate::cli::JournalArgs;
use crate::error::{Error, ErrorKind};
use std::process::ExitCode;

pub fn run(args: &JournalArgs) -> Outcome {
    let journal = Journal::open();
    let (entries, bad) = journal.read_all().map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", journal.path().display())))?;
    if !bad.is_empty() {
        let lines: Vec<String> = bad.iter().map(usize::to_string).collect();
        crate::say!("warning: {}: skipped line(s) {} that are not journal records (cut short by a crash, or not UTF-8)", journal.path().display(), lines.join(", "));
    }
    let since = match &args.since {
        None => None,
        Some(w) => Some(since(w).ok_or_else(|| Error::new(ErrorKind::Refused, format!("--since `{w}` is neither a time nor a duration")).hint("give an RFC 3339 time (2026-11-25T04:00:00Z) or a duration back from now (90m, 2h, 3days)"))?),
    };
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| args.host.as_deref().is_none_or(|h| e.host == h))
        .filter(|e| args.plan.as_deref().is_none_or(|p| e.plan == p))
        .filter(|e| since.is_none_or(|s| e.time.parse::<jiff::Timestamp>().is_ok_and(|t| t >= s)))
        .collect();
    if entries.is_empty() && !args.json {
        // An empty answer says why, so that a wrong $FARMCTL_JOURNAL or filter shows.
        let why = if journal.path().exists() { "no record matches" } else { "no journal here yet: nothing was applied from this workstation" };
        crate::say!("{}: {why}", journal.path().display());
    }
    if args.json {
        for e in &entries {
            out(&format!("{}\n", serde_json::to_string(e).expect("an entry serializes")));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.plans {
        // Plans in the order they were first applied, with a count of their records by kind.
        let mut order: Vec<&str> = Vec::new();
        let mut seen: std::collections::BTreeMap<&str, (String, String, std::collections::BTreeSet<&str>, std::collections::BTreeMap<&str, usize>)> = Default::default();
        for e in &entries {
            let s = seen.entry(e.plan.as_str()).or_insert_with(|| {
                order.push(&e.plan);
                (e.time.clone(), e.farm.clone(), Default::default(), Default::default())
            });
            s.2.insert(&e.host);
            *s.3.entry(e.record.word()).or_default() += 1;
        }
        for plan in order {
            let (time, farm, hosts, outcomes) = &seen[plan];
            let counts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
            let kept = crate::pipeline::kept_plans_dir().join(format!("{plan}.json"));
            let undo = if kept.exists() { format!("undo: farmctl rollback {plan}") } else { "not kept here".to_string() };
            out(&format!("{time} {plan} farm={farm} hosts={} records: {} ({undo})\n", hosts.len(), counts.join(", ")));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // In hosts, files and times; the hashes are in --json.
    for e in &entries {
        let time = e.time.parse::<jiff::Timestamp>().map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|_| e.time.clone());
        let what = match e.file() {
            Some((path, _)) => format!("{} {path}", e.host),
            None => e.host.clone(),
        };
        let versions = match &e.record {
            Record::Version { from, to, .. } if !from.is_empty() => format!(" {from} -> {to}"),
            _ => String::new(),
        };
        let plan = if e.plan.is_empty() { String::new() } else { format!(" (plan {})", e.plan) };
        let detail = if e.detail.is_empty() { String::new() } else { format!(": {}", e.detail) };
        out(&format!("{time}  {what}  {}{versions}{plan}{detail}\n", e.record.word()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--since`: an RFC 3339 time, or a duration back from now.
fn since(w: &str) -> Option<jiff::Timestamp> {
    if let Ok(t) = w.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    let back = humantime::parse_duration(w).ok()?;
    jiff::Timestamp::now().checked_sub(jiff::SignedDuration::try_from(back).ok()?).ok()
}
