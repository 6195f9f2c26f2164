//! The local transport: a directory stands in for a host's `/`. For demos and
//! fast tests; it runs the very same scripts as SSH, through the local `sh`.

use super::{Host, Output, TransportError};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

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

    async fn run(&self, script: &str, stdin: Vec<u8>) -> Result<Output, TransportError> {
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
        let mut input = child.stdin.take().expect("piped stdin");
        let feed = async move {
            // The script may stop reading early (a refused check); that is not an error here.
            let _ = input.write_all(&stdin).await;
            drop(input);
        };
        let run = async { tokio::join!(feed, child.wait_with_output()).1 };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| TransportError::Timeout { host: self.name.clone(), timeout: self.timeout })?
            .map_err(lost)?;
        Ok(Output { status: out.status.code().unwrap_or(-1), stdout: out.stdout, stderr: out.stderr })
    }
}
