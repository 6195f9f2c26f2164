//! What farmctl keeps on this workstation, and where: the journal (every
//! write and upgrade, `$FARMCTL_JOURNAL`), the plans it applied (beside the
//! journal, for `rollback ID`), and the snapshots of a `plan -o` read
//! (`$FARMCTL_CACHE_DIR`, for a prompt `apply PLAN.json`); and how a file
//! here is written (atomically). Nothing on the hosts.

use crate::error::{Error, ErrorKind, Result};
use crate::plan::Plan;
use std::path::{Path, PathBuf};

/// Where the journal lives: `$FARMCTL_JOURNAL`, else `$XDG_STATE_HOME/farmctl/journal.jsonl`,
/// else `~/.local/state/farmctl/journal.jsonl`.
pub fn journal_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FARMCTL_JOURNAL") {
        return PathBuf::from(p);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("farmctl/journal.jsonl")
}

/// Where snapshots of `plan -o` reads are kept: `$FARMCTL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/farmctl/snapshots`, else `~/.cache/farmctl/snapshots`.
pub fn snapshots_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FARMCTL_CACHE_DIR") {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("farmctl/snapshots")
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let fail = |e: std::io::Error| Error::new(ErrorKind::Io, format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(contents.as_bytes()).and_then(|_| f.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Where applied plans are kept on this workstation, beside the journal.
pub fn kept_plans_dir() -> PathBuf {
    let journal = journal_path();
    journal.parent().map(Path::to_path_buf).unwrap_or_default().join("plans")
}

/// Keeps a plan that is about to be applied, so that `rollback ID` can find it.
pub fn keep_applied(plan: &Plan) -> Result<PathBuf> {
    let path = kept_plans_dir().join(format!("{}.json", plan.id));
    write_atomic(&path, &plan.to_json()).map_err(|e| e.hint("farmctl keeps every applied plan for `rollback`; make the state directory writable"))?;
    Ok(path)
}

/// A plan file, or the id of a plan this workstation applied.
pub fn find_plan(arg: &Path) -> Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let id = arg.to_string_lossy();
    if id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        let kept = kept_plans_dir().join(format!("{id}.json"));
        if kept.exists() {
            return Ok(kept);
        }
        return Err(Error::new(ErrorKind::Plan, format!("no plan {id} was applied from this workstation (looked in {})", kept_plans_dir().display()))
            .hint("`farmctl journal` lists the plans applied here; or pass the plan file"));
    }
    Err(Error::new(ErrorKind::Io, format!("cannot read plan {}: no such file", arg.display())).hint("pass a plan file saved with `plan -o`, or the id of an applied plan"))
}
