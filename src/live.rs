//! The observed state of hosts, as plain data. No I/O.

use std::collections::BTreeMap;

/// One managed file as read from a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    Present(FileInfo),
    Missing,
    /// It exists but cannot be read or is not a regular file.
    Unreadable(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub content: Vec<u8>,
    pub sha256: String,
    /// Permission bits in octal, as `stat -c %a` prints them.
    pub mode: String,
    pub owner: String,
    pub group: String,
}

/// What one read of a host returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostState {
    pub hostname: String,
    /// The host's clock minus the workstation's, in milliseconds (midpoint estimate).
    pub clock_offset_ms: Option<i64>,
    /// Half the round trip of the read: the offset is known to within this.
    pub clock_uncertainty_ms: i64,
    /// Keyed by the path as the farm file names it.
    pub files: BTreeMap<String, FileState>,
}

/// The state of every host in scope: either what was read, or why it could not be.
pub type LiveFarm = BTreeMap<String, Result<HostState, String>>;
