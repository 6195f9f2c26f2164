//! The local journal: one JSON line per record (a file write, a version
//! change, a passed gate, a shadow's verdict, a watcher's event; see
//! [`Record`]), so that "what changed on ivr-3 last night" has an answer.
//! Appends only; never holds file contents.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

mod record;

pub use record::{Entry, FileOutcome, NotARecord, Record, ServiceEvent, ShadowOutcome, VersionOutcome};

/// Hosts a rollout brought to a version, or found there, whose wave gate has
/// not passed since, by host: that version. Read in journal order: an upgrade
/// (started, done or found done) makes a host unproven; a passed gate or a
/// rollback proves or undoes it.
pub fn unproven(entries: &[Entry]) -> crate::plan::rollout::Unproven {
    let mut out = crate::plan::rollout::Unproven::new();
    for e in entries {
        match &e.record {
            Record::Version { to, outcome: VersionOutcome::UpgradeStarted | VersionOutcome::Upgraded | VersionOutcome::UpgradeSkipped, .. } => {
                out.insert(e.host.clone(), to.clone());
            }
            Record::GatePassed | Record::Version { outcome: VersionOutcome::RolledBack, .. } => {
                out.remove(&e.host);
            }
            _ => {}
        }
    }
    out
}

/// Where the journal lives (see [`crate::workstation::journal_path`]).
pub fn path() -> PathBuf {
    crate::workstation::journal_path()
}

pub struct Journal {
    path: PathBuf,
}

/// The journal cannot be appended to, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the journal {}: {error}", .path.display())]
pub struct Unwritable {
    pub path: std::path::PathBuf,
    pub error: std::io::Error,
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

    fn open_append(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new().create(true).append(true).read(true).open(&self.path)
    }

    /// Whether the journal can be appended to, checked before any host is
    /// touched: a run that cannot journal its writes does not write.
    pub fn check_writable(&self) -> Result<(), Unwritable> {
        self.open_append().map(drop).map_err(|error| Unwritable { path: self.path.clone(), error })
    }

    /// Appends entries, fsynced. A last line cut short (as a crash leaves
    /// it) is ended first, so that it never swallows the next record.
    pub fn record(&self, entries: &[Entry]) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut f = self.open_append()?;
        let mut buf = Vec::new();
        if ends_torn(&mut f)? {
            buf.push(b'\n');
        }
        for e in entries {
            serde_json::to_writer(&mut buf, e).expect("entries serialize");
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_data()
    }

    /// Every record that can be read. Lines that cannot (cut short, not
    /// UTF-8, not a record) are skipped; see [`Journal::read_all`].
    pub fn read(&self) -> std::io::Result<Vec<Entry>> {
        Ok(self.read_all()?.0)
    }

    /// Every record that can be read, and the numbers (from 1) of the lines
    /// that could not, so that a caller can name them.
    pub fn read_all(&self) -> std::io::Result<(Vec<Entry>, Vec<usize>)> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e),
        };
        let (mut entries, mut bad) = (Vec::new(), Vec::new());
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => entries.push(e),
                Err(_) => bad.push(i + 1),
            }
        }
        Ok((entries, bad))
    }
}

/// Whether the file's last byte is not a newline (a record cut short).
fn ends_torn(f: &mut std::fs::File) -> std::io::Result<bool> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str) -> Entry {
        Entry::now("p", "f", host, Record::File { path: "/etc/x".into(), before_sha256: String::new(), after_sha256: String::new(), outcome: FileOutcome::Written }, "")
    }

    // See issue 25: a truncated last line (as a crash leaves) swallowed the next record.
    #[test]
    fn a_torn_last_line_never_swallows_the_next_record() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::at(d.path().join("j.jsonl"));
        j.record(&[entry("a")]).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(b"{\"time\":\"2026").unwrap();
        j.record(&[entry("b")]).unwrap();
        let (entries, bad) = j.read_all().unwrap();
        assert_eq!(entries.iter().map(|e| e.host.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(bad, [2], "the torn line is named by its number");
    }

    // See issue 25: one non-UTF-8 line made `farmctl journal` fail.
    #[test]
    fn a_line_that_is_not_utf8_is_skipped_and_named() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::at(d.path().join("j.jsonl"));
        j.record(&[entry("a")]).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(b"\xff\xfe garbage\n").unwrap();
        j.record(&[entry("b")]).unwrap();
        let (entries, bad) = j.read_all().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(bad, [2]);
    }

    #[test]
    fn a_journal_in_a_place_that_cannot_be_written_is_refused_up_front() {
        let d = tempfile::tempdir().unwrap();
        // A file where the journal's directory should be: no uid can create it.
        std::fs::write(d.path().join("state"), b"").unwrap();
        let j = Journal::at(d.path().join("state/journal.jsonl"));
        let e = j.check_writable().unwrap_err().to_string();
        assert!(e.contains("state/journal.jsonl") && e.len() > "cannot write the journal ".len() + 20, "{e}");
    }
}
