//! The local transport: a directory stands in for a host's `/`. For demos and
//! fast tests; it runs the very same scripts as SSH, through the local `sh`.

use super::{converse, Gate, Host, Output, TransportError};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

pub struct LocalHost {
    name: String,
    root: String,
    timeout: Duration,
}

impl LocalHost {
    pub fn new(name: &str, root: &Path, timeout: Duration) -> Self {
        // An absolute, resolved root, so that scripts may `cd` without losing
        // their way, and confinement can compare resolved paths with it.
        let root = root.canonicalize().or_else(|_| std::path::absolute(root)).unwrap_or_else(|_| root.to_path_buf());
        LocalHost { name: name.to_string(), root: root.display().to_string().trim_end_matches('/').to_string(), timeout }
    }
}

/// Checks that `host_path`, taken under `root`, stays under `root` once every
/// symlink on the way is resolved: a local host never reads or writes the
/// workstation's own files.
pub fn confined(root: &Path, host_path: &str) -> Result<(), String> {
    let base = root.canonicalize().map_err(|e| format!("the local root {} cannot be used: {e}", root.display()))?;
    let mut p = base.clone();
    for part in Path::new(host_path).components().filter(|c| matches!(c, std::path::Component::Normal(_))) {
        p.push(part);
        if std::fs::symlink_metadata(&p).is_err() {
            // Nothing there yet: what would be created stays under the resolved prefix.
            continue;
        }
        let resolved = p.canonicalize().map_err(|_| format!("{host_path}: {} is a symlink that leads nowhere", p.display()))?;
        if !resolved.starts_with(&base) {
            return Err(format!("{host_path} leads outside the host's root {} (to {})", base.display(), resolved.display()));
        }
        p = resolved;
    }
    Ok(())
}

impl Host for LocalHost {
    fn name(&self) -> &str {
        &self.name
    }

    fn root(&self) -> &str {
        &self.root
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn run_gated(&self, script: &str, stdin: Vec<u8>, gate: Option<Gate>) -> Result<Output, TransportError> {
        let lost = |e: std::io::Error| TransportError::Lost { host: self.name.clone(), detail: e.to_string() };
        if !Path::new(&self.root).is_dir() {
            return Err(TransportError::Connect {
                host: self.name.clone(),
                detail: format!("the local root {} is not a directory", self.root),
                hint: "check `root` for this host in the farm file (it is relative to the farm file)",
            });
        }
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, as a remote host's script is on its own
            // host: a terminal's Ctrl-C reaches farmctl, which tells the host.
            .process_group(0)
            .spawn()
            .map_err(lost)?;
        let (w, r, e) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let (stdout, stderr) = converse(w, r, e, stdin, gate).await;
        let status = child.wait().await.map_err(lost)?;
        Ok(Output { status: status.code().unwrap_or(-1), stdout, stderr })
    }
}
