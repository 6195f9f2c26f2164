//! What the scripts print, read back line by line.

use base64::Engine;

/// Splits a script's error into its words and the cause its errno text names.
pub fn error_cause(e: &str) -> (String, Option<crate::transport::protocol::Cause>) {
    use crate::transport::protocol::Cause;
    let cause = if e.contains("No space left on device") || e.contains("Disc quota exceeded") {
        Some(Cause::NoSpace)
    } else if e.contains("Permission denied") {
        Some(Cause::PermissionDenied)
    } else if e.contains("Operation not permitted") {
        Some(Cause::NotPermitted)
    } else if e.contains("Device or resource busy") || e.contains("cross-device link") {
        Some(Cause::MountPoint)
    } else if e.contains("Read-only file system") {
        Some(Cause::ReadOnly)
    } else {
        None
    };
    (e.to_string(), cause)
}

/// One line of a stage, switch, abort or rollback report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Locked(String),
    Changed { file: usize, now: String },
    Staged(usize),
    Renamed { file: usize, at_ns: i128 },
    Restored(usize),
    Already(usize),
    Reload { status: i32, output: String },
    Error(String),
    Ready,
    Armed,
    Aborted,
    Done,
    /// From `status`: a detached job, its state and its time.
    Job { id: String, state: String, at: String },
    /// From `status`: a line of a detached job's log.
    JobLog { id: String, line: String },
    Cancelled(String),
    Fired(String),
    Holder(String),
    ArmedJob(String),
    Unlocked,
    Free,
    /// From `upgrade`: the version before, after, or that it already was the target.
    Was(String),
    Now(String),
    UpToDate(String),
    Skipped(String),
    /// From `lease`: "ok EPOCH", "held EPOCH MS_LEFT HOLDER" or "released".
    Lease(String),
    /// From `address`: "taken", "dropped", "held IFACE" or "free".
    Address(String),
    /// From `reach`: "up", "down" or "unknown".
    Reach(String),
    /// From a fenced write: the newer fencing token that refused it.
    Fenced(u64),
}

/// Reads a script's report lines; unknown lines are ignored.
pub fn parse_report(out: &[u8]) -> Vec<Report> {
    let text = String::from_utf8_lossy(out);
    let mut reports = Vec::new();
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let num = |s: &str| s.split(' ').next().and_then(|n| n.parse::<usize>().ok());
        let r = match word {
            "LOCKED" => Report::Locked(rest.to_string()),
            "CHANGED" => match rest.split_once(' ') {
                Some((i, now)) => match i.parse() {
                    Ok(file) => Report::Changed { file, now: now.to_string() },
                    Err(_) => continue,
                },
                None => continue,
            },
            "STAGED" => match num(rest) {
                Some(i) => Report::Staged(i),
                None => continue,
            },
            "RESTORED" => match num(rest) {
                Some(i) => Report::Restored(i),
                None => continue,
            },
            "ALREADY" => match num(rest) {
                Some(i) => Report::Already(i),
                None => continue,
            },
            "RENAMED" => match rest.split_once(' ') {
                Some((i, t)) => match (i.parse(), t.parse()) {
                    // 0: the host's `stat` could not say; the rename happened, its time is unknown.
                    (Ok(file), Ok(at_ns)) => Report::Renamed { file, at_ns },
                    _ => continue,
                },
                None => continue,
            },
            "RELOAD" => {
                let (status, out) = rest.split_once(' ').unwrap_or((rest, ""));
                let output = base64::engine::general_purpose::STANDARD
                    .decode(out)
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .unwrap_or_default();
                Report::Reload { status: status.parse().unwrap_or(-1), output }
            }
            "ERR" => Report::Error(rest.to_string()),
            "FENCED" => match rest.trim().parse() {
                Ok(t) => Report::Fenced(t),
                Err(_) => continue,
            },
            "READY" => Report::Ready,
            "ARMED" => Report::Armed,
            "ABORTED" => Report::Aborted,
            "DONE" => Report::Done,
            "JOB" => {
                let mut p = rest.splitn(3, ' ');
                match (p.next(), p.next(), p.next()) {
                    (Some(id), Some(state), Some(at)) => Report::Job { id: id.into(), state: state.into(), at: at.into() },
                    _ => continue,
                }
            }
            "LOG" => match rest.split_once(' ') {
                Some((id, line)) => Report::JobLog { id: id.into(), line: line.into() },
                None => continue,
            },
            "CANCELLED" => Report::Cancelled(rest.to_string()),
            "HOLDER" => Report::Holder(rest.to_string()),
            "ARMEDJOB" => Report::ArmedJob(rest.to_string()),
            "UNLOCKED" => Report::Unlocked,
            "FREE" => Report::Free,
            "FIRED" => Report::Fired(rest.to_string()),
            "WAS" => Report::Was(rest.trim().to_string()),
            "NOW" => Report::Now(rest.trim().to_string()),
            "UPTODATE" => Report::UpToDate(rest.trim().to_string()),
            "SKIPPED" => Report::Skipped(rest.trim().to_string()),
            "LEASE" => Report::Lease(rest.trim().to_string()),
            "REACH" => Report::Reach(rest.trim().to_string()),
            "ADDRESS" => Report::Address(rest.trim().to_string()),
            _ => continue,
        };
        reports.push(r);
    }
    reports
}

