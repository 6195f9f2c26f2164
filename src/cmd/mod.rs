//! The commands: one thin file each (or per family). Each takes its typed
//! args, calls the library (`pipeline`, `render`, `apply`), and prints.
//! This module holds only what they share for talking to the operator; no
//! command file imports another.

pub mod apply;
pub mod graph;
pub mod journal;
pub mod meta;
pub mod plan;
pub mod rollback;
pub mod show;
pub mod switches;
pub mod validate;
pub mod watch;

use crate::pipeline::{HostState, Summary};
use crate::error::{Error, ErrorKind, Result};
use crate::plan::Plan;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// What a command ends with: an exit code, or an error to render.
pub type Outcome = Result<ExitCode>;

/// The exit code of `plan --detailed-exitcode` when changes are pending.
pub const EXIT_CHANGES: u8 = 2;

/// `--color`, `-q` and `-v`, set once by `main`.
static VOICE: std::sync::OnceLock<(crate::cli::ColorChoice, bool, bool)> = std::sync::OnceLock::new();

/// Records the global output options, for every command to honour.
pub fn set_voice(color: crate::cli::ColorChoice, quiet: bool, verbose: bool) {
    let _ = VOICE.set((color, quiet, verbose));
}

/// Whether stdout gets colour: `--color always`, or `auto` on a terminal without NO_COLOR.
pub(crate) fn color() -> bool {
    use crate::cli::ColorChoice;
    match VOICE.get().map_or(ColorChoice::Auto, |v| v.0) {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    }
}

/// `-q`: progress is not shown, only problems and results.
pub(crate) fn quiet() -> bool {
    VOICE.get().is_some_and(|v| v.1)
}

/// The most detailed event level shown: WARN with `-q`, DEBUG with `-v`, else INFO.
pub(crate) fn log_level() -> tracing::Level {
    match VOICE.get() {
        Some((_, true, _)) => tracing::Level::WARN,
        Some((_, _, true)) => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    }
}

/// Writes to stdout. A reader that went away (`farmctl journal | head`) ends
/// the output quietly; it never panics and never stops an apply half-way.
pub(crate) fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

/// Asks for "yes" on a terminal; `--yes` skips the question.
pub(crate) fn confirm(what: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::new(ErrorKind::Refused, format!("refusing to {what} without confirmation: stdin is not a terminal")).hint("review the plan, then pass --yes"));
    }
    {
        let mut e = std::io::stderr();
        let _ = write!(e, "\nDo you want to {what}? Only 'yes' will be accepted: ");
        let _ = e.flush();
    }
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::Refused, format!("{what}: cancelled, nothing was changed")))
    }
}

fn state_word(state: &HostState) -> &'static str {
    match state {
        HostState::Applied { .. } => "applied",
        HostState::Armed { .. } => "armed (switches on the host at its time)",
        // A rollback that found every file as before rolled nothing back.
        HostState::RolledBack { .. } if state.as_found() => "already as before (nothing to roll back)",
        HostState::RolledBack { changed, .. } if changed.is_empty() => "rolled back",
        HostState::RolledBack { .. } => "rolled back in part",
        HostState::ReloadFailed { .. } => "files in place, reload failed",
        HostState::Refused { .. } => "refused (changed since the plan)",
        HostState::Locked { .. } => "refused (locked by another apply)",
        HostState::Aborted { .. } => "aborted (nothing written)",
        HostState::NotStarted { .. } => "not reached (nothing written)",
        HostState::Failed { written, .. } if written.is_empty() => "failed (nothing written)",
        HostState::Failed { .. } => "failed part-way",
        HostState::Unknown { .. } => "unknown (may have switched)",
        // An apply's host that ran the version already, or a rollback's that still ran the old one.
        HostState::Upgraded { .. } if state.as_found() => "already at that version",
        HostState::Upgraded { .. } => "at the new version",
        HostState::UpgradeRolledBack { .. } => "rolled back to the old version",
        HostState::Staging | HostState::Staged | HostState::Switching => "unfinished",
    }
}

/// Prints where each host ended, and turns the summary into the outcome.
/// `undo` is the command that takes the run back, when there is one.
pub(crate) fn finish(what: &str, summary: &Summary, plan: &Plan, undo: Option<&str>) -> Outcome {
    crate::say!("");
    for (title, states) in [("", &summary.hosts), ("rollout: ", &summary.upgrades)] {
        let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (host, state) in states {
            by_state.entry(state_word(state)).or_default().push(host);
        }
        for (word, hosts) in &by_state {
            // Numbered hosts fold into ranges: one short line at any farm size.
            crate::say!("{title}{word}: {}", crate::render::host_ranges(hosts));
        }
    }
    for (stage, renames) in &summary.renames {
        if let (Some(skew), Some(at)) = (
            summary.skew_ms(*stage),
            plan.stages
                .iter()
                .find(|s| s.index == *stage)
                .and_then(|s| s.at.as_ref()),
        ) {
            // The hosts' own records: each rename's time on its host's clock, against T.
            let t = at
                .parse::<jiff::Timestamp>()
                .map(|t| t.as_nanosecond())
                .unwrap_or_default();
            let (first, last) = (
                renames.values().min().copied().unwrap_or(t),
                renames.values().max().copied().unwrap_or(t),
            );
            let ms = |ns: i128| format!("{:+.1} ms", (ns - t) as f64 / 1e6);
            crate::say!("switch at {at}: skew {skew:.1} ms across {} host(s), renames from {} to {} after T by the hosts' clocks", renames.len(), ms(first), ms(last));
        }
    }
    for d in &summary.deferred {
        crate::say!("note: {d}");
    }
    if let Some(e) = &summary.journal_error {
        crate::say!("warning: could not write the journal: {e}");
    }
    let wrote = summary.hosts.values().any(|s| !s.written().is_empty() || matches!(s, HostState::Armed { .. }));
    if summary.ok() {
        let armed = summary.hosts.values().any(|s| matches!(s, HostState::Armed { .. }));
        if armed {
            crate::say!("{what}: every switch is armed; nothing has switched yet. Follow it with `farmctl status FARM`.");
        } else {
            let all: std::collections::BTreeSet<&String> = summary.hosts.keys().chain(summary.upgrades.keys()).collect();
            if summary.hosts.values().chain(summary.upgrades.values()).all(HostState::as_found) {
                crate::say!("{what} complete: nothing needed changing on {} host(s).", all.len());
            } else {
                crate::say!("{what} complete: {} host(s).", all.len());
            }
        }
        if let (Some(undo), true) = (undo, wrote) {
            crate::say!("To undo: {undo}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut problems: Vec<String> = summary.problems.clone();
    problems.extend(summary.hosts.iter().chain(&summary.upgrades).filter(|(_, s)| !s.is_ok()).map(|(h, s)| format!("{h}: {s}")));
    let mut err = Error::new(ErrorKind::Incomplete, format!("{what} did not complete:\n  {}", problems.join("\n  ")));
    let states = || summary.hosts.values();
    if summary.stopped_by_gate.is_some() {
        err = err.hint("a host that clients would switch to is not ready (its role's `health` failed); fix it, then apply again");
    }
    if states().any(|s| matches!(s, HostState::Refused { .. })) {
        err = err.hint("someone changed a file since the plan: run `farmctl plan` again and review the new plan");
    }
    if states().any(|s| matches!(s, HostState::Locked { .. })) {
        err = err.hint("wait for the other apply to finish; a switch armed with --detach is disarmed with `farmctl cancel FARM`; if an apply died on another workstation, run `farmctl unlock FARM --limit HOST`");
    }
    if states().any(|s| matches!(s, HostState::ReloadFailed { .. })) {
        err = err.hint("the new files are in place but the reload failed: fix the service and reload it");
    }
    // Each failure's hint once, whatever the number of hosts it failed.
    for hint in states().filter_map(|s| if let HostState::Failed { why, .. } = s { why.hint() } else { None }) {
        err = err.hint(hint);
    }
    if summary.interrupted {
        // A host that did not answer the clean-up wrote nothing, but may still hold its staged copies and lock.
        let left: Vec<&str> = summary.hosts.iter().filter(|(_, s)| !matches!(s, HostState::Applied { .. } | HostState::Aborted { .. } | HostState::NotStarted { .. } | HostState::Refused { .. } | HostState::Locked { .. })).map(|(h, _)| h.as_str()).collect();
        if left.is_empty() {
            err = err.hint("interrupted: every host that had not switched dropped its staged copies and released its lock");
        } else {
            err = err.hint(format!("interrupted: {} did not confirm; check them with `farmctl plan`, and `farmctl unlock FARM --limit HOST` if a lock is left", left.join(", ")));
        }
    }
    let upgrades_undone = summary.upgrades.values().all(|s| matches!(s, HostState::NotStarted { .. } | HostState::UpgradeRolledBack { healthy: true, .. }));
    let any_rolled_back = summary.upgrades.values().any(|s| matches!(s, HostState::UpgradeRolledBack { .. }));
    if summary.hosts.values().all(HostState::untouched) && upgrades_undone {
        if any_rolled_back {
            err = err.hint("no file was written on any host, and every host this run upgraded is back on its old version and healthy; fix the cause and run apply again");
        } else {
            err = err.hint("no file was written on any host; fix the cause and run apply again");
        }
    } else if let Some(undo) = undo {
        err = err.hint(format!("files may have been written on some hosts; to undo them: {undo}"));
    }
    Err(err)
}
