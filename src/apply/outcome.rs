//! Where each host ends: the outcome of a run on one host, as a value the
//! summary, the journal and the exit code are made from.

use crate::transport::{Cause, TransportError};
use std::fmt;

/// `": OUTPUT"` after a failure's words, or nothing when the host said nothing
/// (a message never ends in a bare colon).
pub(crate) fn and_said(output: &str) -> String {
    let output = output.trim();
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// Why a host could not be reached, or an operator's command on it (a gate
/// or a retire) did not pass. Shown with the transport's hint, once.
#[derive(Debug, thiserror::Error)]
pub enum HostFailure {
    #[error("{0} ({hint})", hint = .0.hint())]
    Transport(#[from] crate::transport::TransportError),
    #[error("`{command}` failed (exit {status}){}", and_said(.output))]
    Exit { command: String, status: i32, output: String },
    #[error("the host gave no answer")]
    Silent,
}

/// Why a host failed: the cause its hint comes from, shown once, in the
/// summary's hints, never folded into the host's line.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The session to the host: unreachable, hung, lost, or sudo refused.
    Transport(TransportError),
    /// The host's script failed, in its own words, with the class of its
    /// errno when it is known.
    Host { error: String, cause: Option<Cause> },
    /// What farmctl found on its side (a version it cannot go back to, a
    /// host that did not answer in time).
    Found(String),
}

impl Failure {
    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Failure::Transport(e) => Some(e.hint()),
            Failure::Host { cause, .. } => cause.map(Cause::hint),
            Failure::Found(_) => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Host { error, .. } => write!(f, "{error}"),
            Failure::Found(what) => write!(f, "{what}"),
        }
    }
}

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Failure {
        Failure::Transport(e)
    }
}

/// Why a host's work never started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotStarted {
    /// A host its clients would be pointed at did not pass its gate.
    NotReady(String),
    /// The run stopped at an earlier stage or level.
    EarlierFailure,
    /// The operator interrupted the run first.
    Interrupted,
}

/// Why a staged host was told to drop its staged copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    NotReady(String),
    OtherHostsFailed,
    Interrupted,
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::NotReady(gate) => write!(f, "a host it would point to is not ready: {gate}"),
            AbortReason::OtherHostsFailed => write!(f, "other hosts failed"),
            AbortReason::Interrupted => write!(f, "interrupted before the switch"),
        }
    }
}

/// Where one host stands.
#[derive(Clone, Debug, PartialEq)]
pub enum HostState {
    Staging,
    Staged,
    Switching,
    /// Every file renamed into place; the reload (if any) passed.
    Applied { files: Vec<String> },
    /// Files are in place but the reload failed.
    ReloadFailed { status: i32, output: String, files: Vec<String> },
    /// A file changed since the plan; nothing written on this host.
    Refused { changed: Vec<String> },
    /// Another apply holds this host's lock; nothing written on this host.
    Locked { holder: String },
    /// Staged fine, but the run stopped, so the staged copies were removed.
    Aborted { why: AbortReason },
    /// Never reached: nothing was sent to this host.
    NotStarted { why: NotStarted },
    Failed { why: Failure, written: Vec<String> },
    /// A detached switch waits on the host for its time.
    Armed { at: String },
    /// A rollout brought the host to a version (or found it there).
    Upgraded { from: String, to: String },
    /// A failed gate sent the host back to the version it had.
    UpgradeRolledBack { from: String, to: String, healthy: bool },
    /// The host fell silent after it was told to switch: it may or may not have.
    Unknown { error: String },
    RolledBack { restored: usize, already: usize, changed: Vec<String> },
}

impl HostState {
    pub fn is_final(&self) -> bool {
        !matches!(self, HostState::Staging | HostState::Staged | HostState::Switching)
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, HostState::Applied { .. } | HostState::Staged | HostState::Armed { .. } | HostState::Upgraded { .. } | HostState::UpgradeRolledBack { healthy: true, .. })
            || matches!(self, HostState::RolledBack { changed, .. } if changed.is_empty())
    }

    /// Whether the run found the host as it should be and changed nothing: a
    /// rollback with nothing to restore, or a version the host already ran.
    pub fn as_found(&self) -> bool {
        match self {
            HostState::RolledBack { restored, changed, .. } => *restored == 0 && changed.is_empty(),
            HostState::Upgraded { from, to } => from == to,
            _ => false,
        }
    }

    /// Whether nothing was written on the host, for certain.
    pub fn untouched(&self) -> bool {
        match self {
            HostState::Refused { .. } | HostState::Locked { .. } | HostState::Aborted { .. } | HostState::NotStarted { .. } => true,
            HostState::Failed { written, .. } => written.is_empty(),
            _ => false,
        }
    }

    /// The files this state says were written on the host.
    pub fn written(&self) -> &[String] {
        match self {
            HostState::Applied { files } | HostState::ReloadFailed { files, .. } => files,
            HostState::Failed { written, .. } => written,
            _ => &[],
        }
    }

    /// Failed with nothing written, for what farmctl found.
    pub(super) fn failed(what: impl Into<String>) -> HostState {
        HostState::Failed { why: Failure::Found(what.into()), written: vec![] }
    }

    /// Failed with nothing written, for `why`.
    pub(super) fn failed_for(why: impl Into<Failure>) -> HostState {
        HostState::Failed { why: why.into(), written: vec![] }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostState::Staging => write!(f, "staging"),
            HostState::Staged => write!(f, "staged, waiting to switch"),
            HostState::Switching => write!(f, "switching"),
            HostState::Applied { files } => write!(f, "applied ({} file{}: {})", files.len(), plural(files.len()), files.join(", ")),
            HostState::ReloadFailed { status, output, .. } => write!(f, "files in place, but the reload failed (exit {status}){}", and_said(output)),
            HostState::Refused { changed } => write!(f, "refused, nothing written: changed since the plan: {}", changed.join(", ")),
            HostState::Locked { holder } => write!(f, "refused, nothing written: another apply holds the lock ({holder})"),
            HostState::Aborted { why } => write!(f, "aborted, nothing written ({why})"),
            HostState::NotStarted { why: NotStarted::NotReady(gate) } => write!(f, "not reached, nothing written: a host it would point to is not ready: {gate}"),
            HostState::NotStarted { why: NotStarted::EarlierFailure } => write!(f, "not reached, nothing written: the run stopped before this host's turn"),
            HostState::NotStarted { why: NotStarted::Interrupted } => write!(f, "not reached, nothing written: interrupted before this host's turn"),
            HostState::Failed { why, written } if written.is_empty() => write!(f, "failed, nothing written: {why}"),
            HostState::Failed { why, written } => write!(f, "failed after writing {}: {why}", written.join(", ")),
            HostState::Armed { at } => write!(f, "armed on the host: switches at {at} without this workstation"),
            HostState::Unknown { error } => write!(f, "unknown: {error}"),
            HostState::Upgraded { from, to } if from == to => write!(f, "runs {to} (it already did)"),
            HostState::Upgraded { from, to } => write!(f, "upgraded {from} -> {to}"),
            HostState::UpgradeRolledBack { from, to, healthy } => {
                write!(f, "rolled back to {from} (from {to}), {}", if *healthy { "healthy again" } else { "NOT healthy: check it" })
            }
            HostState::RolledBack { restored, already, changed } => {
                write!(f, "rolled back {restored} file(s), {already} already as before")?;
                if !changed.is_empty() {
                    write!(f, "; left alone, changed since the apply: {}", changed.join(", "))?;
                }
                Ok(())
            }
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_cause_and_gives_its_hint_apart_from_the_hosts_line() {
        let hung = HostState::failed_for(TransportError::Timeout { host: "ivr-3".into(), timeout: std::time::Duration::from_secs(4) });
        assert_eq!(hung.to_string(), "failed, nothing written: ivr-3 did not answer within 4s");
        let HostState::Failed { why, .. } = &hung else { unreachable!() };
        assert!(matches!(why, Failure::Transport(TransportError::Timeout { .. })));
        assert_eq!(why.hint(), Some("the host may be hung or overloaded; check it, or raise [ssh] command_timeout"));
        let immutable = HostState::Failed { why: Failure::Host { error: "mv: Operation not permitted".into(), cause: Some(Cause::NotPermitted) }, written: vec!["/etc/a".into()] };
        assert_eq!(immutable.to_string(), "failed after writing /etc/a: mv: Operation not permitted");
        assert!(immutable.written() == ["/etc/a"] && !immutable.untouched());
        let HostState::Failed { why, .. } = &immutable else { unreachable!() };
        assert_eq!(why.hint(), Some(Cause::NotPermitted.hint()));
        assert_eq!(Failure::Found("its old version is unknown".into()).hint(), None);
    }
}
