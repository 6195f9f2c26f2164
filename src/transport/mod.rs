//! The only layer that touches hosts: a small `Host` trait with an SSH and a
//! local implementation, and compound operations built on `run`.
//!
//! Scripts come from `script` (pure, tested) and are private to this layer;
//! [`protocol`] runs them and hands back typed reports. Nothing above
//! `transport` builds a script or parses a host's answer.

pub mod local;
mod pool;
pub mod protocol;
mod script;
pub mod ssh;

pub use protocol::{AddressState, ArmedJob, CancelOutcome, Cause, CommandResult, JobState, LeaseState, Reach, UnlockOutcome, UpgradeReport, WatcherWriteError, WriteReport};
pub use pool::Pool;
pub use script::AddressOp;
pub use script::{FileWrite, RunIds};

use crate::farm::{Farm, Transport};
use crate::live::{Clock, LiveHost, ReadError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {host}: {detail}")]
    Connect { host: String, detail: String, hint: &'static str },
    #[error("{host} did not answer within {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("lost the connection to {host}: {detail}")]
    Lost { host: String, detail: String },
    /// `[ssh] sudo = true`, and sudo on the host would not run farmctl's
    /// command: it wants a password, is missing, or refuses the user.
    #[error("{host}: {detail}")]
    Sudo { host: String, detail: String, hint: &'static str },
    #[error("{host} is not in the farm file")]
    NotInFarm { host: String },
}

impl TransportError {
    pub fn hint(&self) -> &'static str {
        match self {
            TransportError::Connect { hint, .. } => hint,
            TransportError::Timeout { .. } => "the host may be hung or overloaded; check it, or raise [ssh] command_timeout",
            TransportError::Lost { .. } => "check the host; nothing is renamed into place until every host is staged",
            TransportError::Sudo { hint, .. } => hint,
            TransportError::NotInFarm { .. } => "add the host to the farm file, or remove what names it",
        }
    }
}

/// A host farmctl can run POSIX sh scripts on.
pub trait Host: Send + Sync {
    fn name(&self) -> &str;

    /// Prefix for host paths: "" over SSH, the root directory for the local transport.
    fn root(&self) -> &str;

    /// How long a command may take before the host counts as hung.
    fn timeout(&self) -> Duration;

    /// Runs a sh script with `stdin` as its input. With a [`Gate`], the script's
    /// `ARMED` line is reported, and `go` or `abort` is written once the gate
    /// fires; no timeout applies then (the caller keeps time).
    fn run_gated(&self, script: &str, stdin: Vec<u8>, gate: Option<Gate>) -> impl Future<Output = Result<Output, TransportError>> + Send;

    /// Makes sure the connection still stands, reconnecting if it has gone
    /// idle and closed (as after a long confirmation prompt).
    fn refresh(&self) -> impl Future<Output = Result<(), TransportError>> + Send {
        async { Ok(()) }
    }

    /// Runs a sh script with `stdin` as its input, within the host's timeout.
    fn run(&self, script: &str, stdin: Vec<u8>) -> impl Future<Output = Result<Output, TransportError>> + Send {
        async move {
            let limit = self.timeout();
            tokio::time::timeout(limit, self.run_gated(script, stdin, None))
                .await
                .map_err(|_| TransportError::Timeout { host: self.name().to_string(), timeout: limit })?
        }
    }

    /// Reads hostname, clock, armed switches and every managed file in one round trip.
    fn read_state(&self, state_dir: &str, paths: &[String], probe: Option<&str>) -> impl Future<Output = Result<LiveHost, ReadError>> + Send {
        async move {
            let script = script::read_state(self.root(), &host_state_dir(state_dir, self.name()), paths, probe);
            let sent = now_ms();
            let out = self.run(&script, Vec::new()).await.map_err(ReadError::from)?;
            let received = now_ms();
            let mut state = script::parse_read_state(&out.stdout, paths, sent, received).map_err(|e| {
                let stderr = String::from_utf8_lossy(&out.stderr);
                ReadError { message: format!("{}: {e} {}", self.name(), stderr.trim()).trim_end().to_string(), hint: None }
            })?;
            if !self.root().is_empty() {
                // A local host has no hostname of its own.
                state.hostname = self.name().to_string();
                state.clock_offset_ms = Some(0);
            }
            Ok(state)
        }
    }
}

/// Where farmctl keeps one farm host's lock, backups, staged work and armed
/// switches: per farm host, so that two farm hosts on one machine (two names
/// for one server, or a shared `/var/lib`) never lock each other out.
pub fn host_state_dir(state_dir: &str, host: &str) -> String {
    format!("{}/hosts/{host}", state_dir.trim_end_matches('/'))
}

impl From<TransportError> for ReadError {
    fn from(e: TransportError) -> Self {
        ReadError { message: e.to_string(), hint: Some(e.hint().to_string()) }
    }
}

/// What the workstation tells an armed switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    Wait,
    /// Re-check every file now and say so (`CHECKED ok|bad`).
    Check,
    Go,
    /// Switch at this instant (ns since the epoch) by the host's own clock:
    /// committed, like `Go`, but simultaneous however far the host is.
    At(i128),
    Abort,
}

/// A host's answer to `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Every file still holds what the plan expects.
    pub ok: bool,
    /// The host's clock when the word arrived and when it answered (ns since
    /// the epoch), when it said.
    pub host_ns: Option<(i128, i128)>,
    /// This workstation's clock when the word was written and when the answer arrived.
    pub asked_ns: i128,
    pub received_ns: i128,
}

impl Checked {
    /// The host's clock, when it told its times: the midpoint of
    /// the host's two readings against the midpoint of the workstation's,
    /// known to within half the round trip less the host's own time between
    /// its readings (its hashing).
    pub fn clock(&self) -> Option<Clock> {
        let (arrived, answered) = self.host_ns?;
        if self.asked_ns <= 0 {
            return None;
        }
        let offset = (arrived + answered) / 2 - (self.asked_ns + self.received_ns) / 2;
        let transit = (self.received_ns - self.asked_ns) - (answered - arrived).max(0);
        Some(Clock { offset_ms: (offset / 1_000_000) as i64, uncertainty_ms: (transit.max(0) / 2_000_000) as i64 })
    }
}

/// The workstation side of a switch handshake.
pub struct Gate {
    /// Fires when the script prints `ARMED`: every check passed, it waits for a word.
    pub armed: tokio::sync::oneshot::Sender<()>,
    /// Fires with the script's answer to `check`.
    pub checked: tokio::sync::oneshot::Sender<Checked>,
    pub word: tokio::sync::watch::Receiver<Word>,
}

/// Feeds a script its input (and, with a gate, its go/abort word) while
/// reading what it prints. Shared by both transports.
pub(crate) async fn converse<W, R, E>(mut w: W, r: R, mut e: E, input: Vec<u8>, gate: Option<Gate>) -> (Vec<u8>, Vec<u8>)
where
    W: tokio::io::AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
    E: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (armed, checked, word) = match gate {
        Some(g) => (Some(g.armed), Some(g.checked), Some(g.word)),
        None => (None, None, None),
    };
    // The reader says when the script's output has ended: a script that exited
    // without arming will never read a word, so the writer must stop waiting.
    let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel::<()>();
    // When `check` was written: the clock measurement's start.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let asked_w = asked.clone();
    let writer = async move {
        // The script may stop reading early (a refused check); that is not an error here.
        let _ = w.write_all(&input).await;
        if let Some(mut word) = word {
            let mut sent_check = false;
            loop {
                let now = *word.borrow_and_update();
                let line: Vec<u8> = match now {
                    Word::Check if !sent_check => b"check\n".to_vec(),
                    Word::Go => b"go\n".to_vec(),
                    Word::At(ns) => format!("at {ns}\n").into_bytes(),
                    Word::Abort => b"abort\n".to_vec(),
                    _ => Vec::new(),
                };
                if !line.is_empty() {
                    if now == Word::Check {
                        asked_w.store(jiff::Timestamp::now().as_nanosecond() as i64, std::sync::atomic::Ordering::Relaxed);
                    }
                    let _ = w.write_all(&line).await;
                    let _ = w.flush().await;
                    sent_check |= now == Word::Check;
                }
                if matches!(now, Word::Go | Word::At(_) | Word::Abort) {
                    break;
                }
                tokio::select! {
                    changed = word.changed() => {
                        if changed.is_err() {
                            let _ = w.write_all(b"abort\n").await;
                            break;
                        }
                    }
                    _ = &mut ended_rx => break,
                }
            }
        }
        let _ = w.shutdown().await;
    };
    let reader = async move {
        let mut out = Vec::new();
        let mut r = tokio::io::BufReader::new(r);
        let (mut armed, mut checked) = (armed, checked);
        loop {
            let start = out.len();
            match r.read_until(b'\n', &mut out).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            match &out[start..] {
                b"ARMED\n" => {
                    if let Some(a) = armed.take() {
                        let _ = a.send(());
                    }
                }
                line if line.starts_with(b"CHECKED ") => {
                    let received_ns = jiff::Timestamp::now().as_nanosecond();
                    let mut words = std::str::from_utf8(line).unwrap_or("").split_whitespace().skip(1);
                    let ok = words.next() == Some("ok");
                    let mut time = || words.next().and_then(|t| t.parse::<i128>().ok());
                    let host_ns = time().zip(time());
                    let asked_ns = asked.load(std::sync::atomic::Ordering::Relaxed) as i128;
                    if let Some(c) = checked.take() {
                        let _ = c.send(Checked { ok, host_ns, asked_ns, received_ns });
                    }
                }
                _ => {}
            }
        }
        let _ = ended_tx.send(());
        out
    };
    let errors = async move {
        let mut b = Vec::new();
        let _ = e.read_to_end(&mut b).await;
        b
    };
    let ((), out, err) = tokio::join!(writer, reader, errors);
    (out, err)
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Either kind of host, so that hosts of both kinds can be driven together.
pub enum AnyHost {
    Ssh(ssh::SshHost),
    Local(local::LocalHost),
}

impl Host for AnyHost {
    fn name(&self) -> &str {
        match self {
            AnyHost::Ssh(h) => h.name(),
            AnyHost::Local(h) => h.name(),
        }
    }

    fn root(&self) -> &str {
        match self {
            AnyHost::Ssh(h) => h.root(),
            AnyHost::Local(h) => h.root(),
        }
    }

    fn timeout(&self) -> Duration {
        match self {
            AnyHost::Ssh(h) => h.timeout(),
            AnyHost::Local(h) => h.timeout(),
        }
    }

    async fn refresh(&self) -> Result<(), TransportError> {
        match self {
            AnyHost::Ssh(h) => h.refresh().await,
            AnyHost::Local(h) => h.refresh().await,
        }
    }

    async fn run_gated(&self, script: &str, stdin: Vec<u8>, gate: Option<Gate>) -> Result<Output, TransportError> {
        match self {
            AnyHost::Ssh(h) => h.run_gated(script, stdin, gate).await,
            AnyHost::Local(h) => h.run_gated(script, stdin, gate).await,
        }
    }
}

/// Connects to one host of the farm. For SSH this starts a multiplexed master.
pub async fn connect(farm: &Farm, name: &str) -> Result<AnyHost, TransportError> {
    let host = &farm.hosts[name];
    match &host.transport {
        Transport::Local { root } => {
            let files = &farm.paths_of(name);
            let state = host_state_dir(&farm.state_dir, name);
            for path in files.iter().chain(std::iter::once(&state)) {
                local::confined(root, path).map_err(|detail| TransportError::Connect {
                    host: name.to_string(),
                    detail,
                    hint: "a local host's files and state must stay under its `root`; remove the symlink or fix the path",
                })?;
            }
            Ok(AnyHost::Local(local::LocalHost::new(name, root, farm.ssh.command_timeout)))
        }
        Transport::Ssh { user, port } => {
            ssh::SshHost::connect(name, host.address.as_deref().unwrap_or(name), user.as_deref(), *port, &farm.ssh)
                .await
                .map(AnyHost::Ssh)
        }
    }
}

/// Connects to many hosts at once, at most `parallel` handshakes at a time.
pub async fn connect_all(farm: &Arc<Farm>, names: &[String], parallel: usize) -> Vec<(String, Result<Arc<AnyHost>, TransportError>)> {
    let farm = farm.clone();
    crate::fanout::each(names.to_vec(), parallel, move |name| {
        let farm = farm.clone();
        async move {
            let r = connect(&farm, &name).await.map(Arc::new);
            (name, r)
        }
    })
    .await
}
