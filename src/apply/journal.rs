//! The local journal: one JSON line per file write, so that "what changed on
//! ivr-3 last night" has an answer. Appends only; never holds file contents.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub time: String,
    pub plan: String,
    pub farm: String,
    pub host: String,
    pub path: String,
    pub before_sha256: String,
    pub after_sha256: String,
    /// written, refused, failed, aborted, restored, unchanged-since
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// A scheduled switch: when the host renamed the file, by its own clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_at: Option<String>,
    /// A switch by the hosts' clocks: the host's clock against the workstation's
    /// as its check measured it right before the switch, and to within how much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_uncertainty_ms: Option<i64>,
}

/// Where the journal lives: `$FARMCTL_JOURNAL`, else `$XDG_STATE_HOME/farmctl/journal.jsonl`,
/// else `~/.local/state/farmctl/journal.jsonl`.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("FARMCTL_JOURNAL") {
        return PathBuf::from(p);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("farmctl/journal.jsonl")
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn open() -> Journal {
        Journal { path: path() }
    }

    pub fn at(path: PathBuf) -> Journal {
        Journal { path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends entries; a journal that cannot be written is reported, never fatal to an apply.
    pub fn record(&self, entries: &[Entry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut buf = Vec::new();
        for e in entries {
            serde_json::to_writer(&mut buf, e).expect("entries serialize");
            buf.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&buf)?;
        f.sync_data()
    }

    pub fn read(&self) -> std::io::Result<Vec<Entry>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}
