//! The one error type the commands return: what went wrong (its kind, as a
//! value to match on), what to say, and what to do about it. Rendered once, in
//! `main`. No decision anywhere depends on the text of a message.

use std::fmt;

/// What kind of failure this is. Callers match on this, never on the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The farm file cannot be read or is not valid.
    Farm,
    /// A saved plan cannot be read, was edited, or no longer matches its farm or hosts.
    Plan,
    /// Hosts could not be reached or read.
    Unreachable,
    /// The operator did not confirm, or the command line asks for something impossible.
    Refused,
    /// An apply, rollback or other run on hosts did not complete.
    Incomplete,
    /// A file on this workstation could not be read or written.
    Io,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hints: Vec<String>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), hints: Vec::new() }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        let h = hint.into();
        if !h.is_empty() && !self.hints.contains(&h) {
            self.hints.push(h);
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::farm::FarmError> for Error {
    fn from(e: crate::farm::FarmError) -> Self {
        match e {
            crate::farm::FarmError::Read { .. } => Error::new(ErrorKind::Farm, e.to_string()).hint("check the path to the farm file"),
            crate::farm::FarmError::Invalid(_) => Error::new(ErrorKind::Farm, e.to_string()),
        }
    }
}

impl From<crate::plan::PlanError> for Error {
    fn from(e: crate::plan::PlanError) -> Self {
        use crate::plan::{rollout::RolloutError, PlanError};
        let hint = match &e {
            PlanError::Cycle(_) => "break the circle in the farm file's replacements",
            PlanError::Rollout(RolloutError::Circle(_)) => "break the circle of `requires` between the rollouts",
            PlanError::Rollout(RolloutError::Requires(_)) => "roll the required role out first (a [rollout] whose version meets the requirement), or change `requires`",
        };
        Error::new(ErrorKind::Farm, e.to_string()).hint(hint)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
