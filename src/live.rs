//! The observed state of hosts, as plain data. No I/O.

use std::collections::BTreeMap;

/// One managed file as read from a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    Present(FileInfo),
    Missing,
    /// It exists but cannot be read or is not a regular file.
    Unreadable(Unreadable),
}

/// Why a managed file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreadable {
    NotRegularFile,
    PermissionDenied,
    Other(String),
}

impl Unreadable {
    /// Reads back what [`Unreadable`]'s `Display` wrote.
    pub fn parse(s: &str) -> Unreadable {
        match s {
            "not a regular file" => Unreadable::NotRegularFile,
            "permission denied" => Unreadable::PermissionDenied,
            other => Unreadable::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::NotRegularFile => f.write_str("not a regular file"),
            Unreadable::PermissionDenied => f.write_str("permission denied"),
            Unreadable::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub content: Vec<u8>,
    pub sha256: String,
    /// Permission bits in octal, as `stat -c %a` prints them.
    pub mode: String,
    pub owner: String,
    pub group: String,
    /// Whether this user may replace it by a rename: its directory (the
    /// link's target's, for a symlink) is writable, as `test -w` says. A
    /// read-only file system or the permissions say no.
    pub replaceable: bool,
}

/// What one read of a host returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveHost {
    pub hostname: String,
    /// The host's clock minus the workstation's, in milliseconds (midpoint estimate).
    pub clock_offset_ms: Option<i64>,
    /// Half the round trip of the read: the offset is known to within this.
    pub clock_uncertainty_ms: i64,
    /// Keyed by the path as the farm file names it.
    pub files: BTreeMap<String, FileState>,
    /// Switches armed on the host by `apply --detach` that have not fired: (job id, time).
    pub armed: Vec<(String, String)>,
    /// The installed version by the role's rollout probe: `None` when the role has
    /// no rollout, `Err` with why when the probe failed.
    pub version: Option<Result<String, String>>,
    /// The IPv4 addresses the host holds (a service's virtual address among
    /// them); empty for a local host, and in a cached reading.
    pub addresses: Vec<String>,
}

/// Why a host could not be read: what happened, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The state of every host in scope: either what was read, or why it could not be.
pub type LiveFarm = BTreeMap<String, Result<LiveHost, ReadError>>;

/// A host's clock against this workstation's, from one round trip (the read's,
/// or a switch check's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub offset_ms: i64,
    /// Half the round trip: the offset is known to within this.
    pub uncertainty_ms: i64,
}

impl Clock {
    /// Whether the clock is certainly off by more than `bound_ms`: the host
    /// read its clock somewhere within the round trip, so the true offset lies
    /// within `uncertainty_ms` of the estimate, and that whole interval must be
    /// beyond the bound. A loaded host, whose answers leave late, is not
    /// refused for its own slowness (200 lab hosts on two cores read up to
    /// +140 ms ± 145 ms for one shared clock); a host far away is judged as
    /// closely as its round trip allows.
    pub fn beyond(&self, bound_ms: i64) -> bool {
        self.offset_ms.abs() - self.uncertainty_ms > bound_ms
    }
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:+} ms (±{} ms)", self.offset_ms, self.uncertainty_ms)
    }
}

impl LiveHost {
    /// The first of `paths` that is present but that this user may not replace.
    pub fn unreplaceable<'a>(&self, mut paths: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        paths.find(|p| matches!(self.files.get(*p), Some(FileState::Present(i)) if !i.replaceable))
    }

    /// This host's clock as the read measured it, when the host could tell.
    pub fn clock(&self) -> Option<Clock> {
        self.clock_offset_ms.map(|offset_ms| Clock { offset_ms, uncertainty_ms: self.clock_uncertainty_ms })
    }
}
