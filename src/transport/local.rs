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
        // An absolute root, so that scripts may `cd` without losing their way.
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        LocalHost { name: name.to_string(), root: root.display().to_string().trim_end_matches('/').to_string(), timeout }
    }
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
            .spawn()
            .map_err(lost)?;
        let (w, r, e) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let (stdout, stderr) = converse(w, r, e, stdin, gate).await;
        let status = child.wait().await.map_err(lost)?;
        Ok(Output { status: status.code().unwrap_or(-1), stdout, stderr })
    }
}
