//! The SSH transport: one multiplexed OpenSSH master per host (`openssh`,
//! native mux), so the operator's ssh_config, agent, ProxyJump and
//! known_hosts all apply. Host keys are checked strictly.

use super::{converse, Gate, Host, Output, TransportError};
use crate::farm::SshSettings;
use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct SshHost {
    name: String,
    address: String,
    builder: SessionBuilder,
    connect_limit: Duration,
    /// Replaced by [`Host::refresh`] when the master has gone away.
    session: tokio::sync::RwLock<Option<Arc<Session>>>,
    /// Where to record the master for the next farmctl to reuse, if masters persist.
    reuse: Option<PathBuf>,
    sudo: bool,
    timeout: Duration,
}

/// A short, private directory for control sockets (socket paths have a length limit).
pub fn control_directory() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let base = std::env::var_os("FARMCTL_CONTROL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        // SAFETY-free uid lookup: the owner of /proc/self is the current user.
        let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(0);
        std::env::temp_dir().join(format!("farmctl-{uid}"))
    });
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&base)?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))?;
    Ok(base)
}

/// The most useful hint for an SSH connection failure, from its message chain.
pub fn connect_hint(chain: &str) -> &'static str {
    let c = chain.to_ascii_lowercase();
    if c.contains("host key verification failed") || c.contains("no matching host key") || c.contains("host key for") {
        "the host key is unknown or has changed; verify it, then add it to known_hosts (or set [ssh] known_hosts_file). farmctl never accepts a key by itself"
    } else if c.contains("permission denied") {
        "authentication failed; check [ssh] user and identity_file, or load the key into ssh-agent"
    } else if c.contains("connection refused") {
        "nothing listens for SSH there; is sshd running, and are address and port right?"
    } else if c.contains("timed out") || c.contains("no route") || c.contains("unreachable") {
        "the host did not answer; check the address, the network, or raise [ssh] connect_timeout"
    } else if c.contains("could not resolve") || c.contains("name or service not known") {
        "the address does not resolve; check `address` for this host"
    } else {
        "check that `ssh` to this host works from this machine with the same user and options"
    }
}

pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !t.trim().is_empty() && !parts.contains(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ").replace('\n', " ").trim().to_string()
}

impl SshHost {
    pub async fn connect(name: &str, address: &str, user: Option<&str>, port: Option<u16>, ssh: &SshSettings) -> Result<Self, TransportError> {
        let fail = |detail: String| {
            let hint = connect_hint(&detail);
            TransportError::Connect { host: name.to_string(), detail, hint }
        };
        let mut b = SessionBuilder::default();
        // A master outlives its farmctl by at most this long once idle (never forever),
        // so that a `plan` and the `apply` after it share one handshake per host.
        // With persistence off, the master is shut down when farmctl drops it; the idle
        // limit then only bounds a master whose farmctl was killed.
        let idle = if ssh.control_persist.is_zero() { 60 } else { ssh.control_persist.as_secs().max(1) as usize };
        b.control_persist(openssh::ControlPersist::IdleFor(std::num::NonZeroUsize::new(idle).expect("at least 1")));
        b.known_hosts_check(KnownHosts::Strict)
            .connect_timeout(ssh.connect_timeout)
            .server_alive_interval(Duration::from_secs(5))
            .control_directory(control_directory().map_err(|e| fail(format!("cannot create the control directory: {e}")))?);
        if let Some(u) = user.or(ssh.user.as_deref()) {
            b.user(u.to_string());
        }
        if let Some(p) = port.or(ssh.port) {
            b.port(p);
        }
        if let Some(k) = &ssh.identity_file {
            b.keyfile(k);
        }
        if let Some(c) = &ssh.config_file {
            b.config_file(c);
        }
        if let Some(k) = &ssh.known_hosts_file {
            b.user_known_hosts_file(k);
        }
        if let Some(j) = &ssh.jump {
            b.jump_hosts([j]);
        }
        // ConnectTimeout covers the TCP connect; a host that accepts and then hangs needs this too.
        let connect_limit = ssh.connect_timeout + Duration::from_secs(5);
        let reuse = if ssh.control_persist.is_zero() {
            None
        } else {
            let key = crate::farm::sha256_hex(format!("{address}\0{user:?}\0{port:?}\0{ssh:?}").as_bytes());
            control_directory().ok().map(|d| d.join("reuse").join(&key[..20]))
        };
        let session = match resume(reuse.as_deref()).await {
            Some(s) => s,
            None => open(name, address, &b, connect_limit).await?,
        };
        Ok(SshHost {
            name: name.to_string(),
            address: address.to_string(),
            builder: b,
            connect_limit,
            session: tokio::sync::RwLock::new(Some(Arc::new(session))),
            reuse,
            sudo: ssh.sudo,
            timeout: ssh.command_timeout,
        })
    }
}

/// A master left by an earlier farmctl for the same destination and options, if it still answers.
async fn resume(record: Option<&std::path::Path>) -> Option<Session> {
    let socket = std::fs::read_to_string(record?).ok()?;
    let socket = PathBuf::from(socket.trim());
    if !socket.exists() {
        return None;
    }
    let session = Session::resume_mux(socket.into_boxed_path(), None);
    match tokio::time::timeout(Duration::from_secs(2), session.check()).await {
        Ok(Ok(())) => Some(session),
        _ => None,
    }
}

impl Drop for SshHost {
    /// With persistence on, leaves the master running (it exits once idle for
    /// `control_persist`) and records its socket for the next farmctl.
    fn drop(&mut self) {
        let Some(record) = self.reuse.take() else {
            // Shutting a master down talks to its control socket, blocking: never
            // on an async worker, where a stuck master would stall every task.
            if let (Some(session), Ok(rt)) = (self.session.get_mut().take(), tokio::runtime::Handle::try_current()) {
                rt.spawn_blocking(move || drop(session));
            }
            return;
        };
        let Some(session) = self.session.get_mut().take() else { return };
        let Ok(session) = Arc::try_unwrap(session) else { return };
        let (socket, _log) = session.detach();
        if let Some(dir) = record.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = record.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, socket.to_string_lossy().as_bytes()).is_ok() {
            let _ = std::fs::rename(&tmp, &record);
        }
    }
}

async fn open(name: &str, address: &str, b: &SessionBuilder, limit: Duration) -> Result<Session, TransportError> {
    tokio::time::timeout(limit, b.connect_mux(address))
        .await
        .map_err(|_| TransportError::Timeout { host: name.to_string(), timeout: limit })?
        .map_err(|e| {
            let detail = error_chain(&e);
            let hint = connect_hint(&detail);
            TransportError::Connect { host: name.to_string(), detail, hint }
        })
}

impl Host for SshHost {
    fn name(&self) -> &str {
        &self.name
    }

    fn root(&self) -> &str {
        ""
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn refresh(&self) -> Result<(), TransportError> {
        let current = self.session.read().await.clone().expect("a session until drop");
        if current.check().await.is_ok() {
            return Ok(());
        }
        let fresh = open(&self.name, &self.address, &self.builder, self.connect_limit).await?;
        *self.session.write().await = Some(Arc::new(fresh));
        Ok(())
    }

    async fn run_gated(&self, script: &str, stdin: Vec<u8>, gate: Option<Gate>) -> Result<Output, TransportError> {
        let lost = |e: openssh::Error| TransportError::Lost { host: self.name.clone(), detail: error_chain(&e) };
        let session = self.session.read().await.clone().expect("a session until drop");
        let mut cmd = if self.sudo {
            let mut c = session.command("sudo");
            c.arg("-n").arg("sh");
            c
        } else {
            session.command("sh")
        };
        cmd.arg("-c").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(lost)?;
        let w = child.stdin().take().expect("piped stdin");
        let r = child.stdout().take().expect("piped stdout");
        let e = child.stderr().take().expect("piped stderr");
        let (stdout, stderr) = converse(w, r, e, stdin, gate).await;
        let status = child.wait().await.map_err(lost)?.code().unwrap_or(-1);
        if self.sudo && status != 0 && stdout.is_empty() {
            if let Some((detail, hint)) = sudo_refusal(&String::from_utf8_lossy(&stderr)) {
                return Err(TransportError::Sudo { host: self.name.clone(), detail: format!("sudo on {} {detail}", self.name), hint });
            }
        }
        if status == 255 && stdout.is_empty() {
            return Err(TransportError::Lost { host: self.name.clone(), detail: String::from_utf8_lossy(&stderr).trim().to_string() });
        }
        Ok(Output { status, stdout, stderr })
    }
}

/// Why sudo would not run farmctl's command, from what it printed, and what
/// to do about it. Its warnings (an unresolvable host name) are not refusals.
fn sudo_refusal(stderr: &str) -> Option<(&'static str, &'static str)> {
    if stderr.contains("a password is required") || stderr.contains("a terminal is required") {
        Some(("asks for a password", "allow farmctl's SSH user to run sudo without one (a NOPASSWD line in /etc/sudoers.d/), or connect as root with sudo = false"))
    } else if stderr.contains("sudo: not found") || stderr.contains("sudo: command not found") || stderr.contains("sudo: No such file") {
        Some(("has no sudo installed", "install sudo on the host, or connect as a user who may write the managed files, with sudo = false"))
    } else if stderr.contains("is not in the sudoers file") || stderr.contains("is not allowed to") || stderr.contains("may not run sudo") {
        Some(("refuses farmctl's SSH user", "allow that user to run sudo without a password (a NOPASSWD line in /etc/sudoers.d/), or connect as another user"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_refusals_are_told_apart_from_its_warnings() {
        let warn = "sudo: unable to resolve host ivr-4: Name or service not known\n";
        assert_eq!(sudo_refusal(warn), None);
        assert_eq!(sudo_refusal(&format!("{warn}sudo: a password is required\n")).map(|r| r.0), Some("asks for a password"));
        assert_eq!(sudo_refusal("sh: 1: sudo: not found\n").map(|r| r.0), Some("has no sudo installed"));
        assert_eq!(sudo_refusal("deploy is not in the sudoers file.\n").map(|r| r.0), Some("refuses farmctl's SSH user"));
    }

    #[test]
    fn hints_follow_the_cause() {
        assert!(connect_hint("failed to connect: Host key verification failed.").contains("known_hosts"));
        assert!(connect_hint("ssh: connect to host 1.2.3.4 port 22: Connection refused").contains("sshd running"));
        assert!(connect_hint("Permission denied (publickey).").contains("identity_file"));
    }
}
