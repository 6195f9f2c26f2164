//! The host protocol in types: each operation builds its script (with
//! [`script`]), runs it on the host, and parses what the host printed into a
//! typed report. Nothing outside `transport` sees a script or a report line.

use super::script::{self, FileWrite, Report, RunIds, Trigger};
use super::{AnyHost, Gate, Host, TransportError};

/// What a write script (stage, switch, abort, rollback) said it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Another run holds the host lock; its owner line.
    pub locked_by: Option<String>,
    /// Paths whose content was not what the plan expected.
    pub changed: Vec<String>,
    /// Paths renamed into place, with the host clock's time of the rename (ns).
    pub renamed: Vec<(String, i128)>,
    /// Rollback: paths restored from the backup, and paths already as before.
    pub restored: Vec<String>,
    pub already: Vec<String>,
    /// The reload's result, when one ran.
    pub reload: Option<CommandResult>,
    /// What the script said went wrong, paths named.
    pub error: Option<String>,
    /// Why it went wrong, as a value, when the host could tell.
    pub cause: Option<Cause>,
    /// The script reached its end (staged, or switched and done).
    pub finished: bool,
    /// The script staged everything and waited for a word (or its time).
    pub armed: bool,
    /// The script was told to abort, and removed its staged copies.
    pub aborted: bool,
    pub exit: i32,
    pub stderr: String,
}

/// A cause the host script detected (from errno-style checks), not guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    NoSpace,
    /// EACCES: the user's permissions.
    PermissionDenied,
    /// EPERM: an immutable or append-only file or directory (which even root
    /// cannot replace), or, for a user that is not root, a file it does not own.
    NotPermitted,
    ReadOnly,
    /// EBUSY or EXDEV: the target is a mount point (a bind-mounted file).
    MountPoint,
}

impl Cause {
    pub fn hint(self) -> &'static str {
        match self {
            Cause::NoSpace => "the host's disk is full: free some space, then apply again",
            Cause::PermissionDenied => "the SSH user may not write there: connect as a user who may, or set [ssh] sudo = true",
            Cause::NotPermitted => "the file or its directory may be immutable or append-only (`lsattr` shows `i` or `a`; `chattr -i` clears it), or, if the SSH user is not root there, set [ssh] sudo = true",
            Cause::ReadOnly => "the file system is mounted read-only on the host",
            Cause::MountPoint => "the file is a mount point (a bind mount): a rename cannot replace it; manage the file it is mounted from instead",
        }
    }
}

/// How one operator command (reload, health, retire) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandResult {
    pub status: i32,
    /// The last part of what it printed.
    pub output: String,
}

/// Why a write of the watcher's (a synced file, an address change) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WatcherWriteError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A watcher with a newer lease wrote on this host first: this one's lease is gone.
    #[error("refused: a watcher with a newer lease of service {service} (epoch {newer}) has written here; this watcher's lease (epoch {ours}) is gone")]
    Fenced { service: String, newer: u64, ours: u64 },
    /// What the host said went wrong (`ip` failed, a full disk, ...), in its words.
    #[error("{0}")]
    Host(String),
}

impl CommandResult {
    /// The `name=value` lines it printed (a health check's metrics), each as
    /// (name, value, the whole line); a value that is not a number is no metric.
    pub fn metrics(&self) -> Vec<(&str, f64, &str)> {
        self.output
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                (!k.is_empty() && !k.contains(' ')).then_some(())?;
                Some((k, v.trim().parse::<f64>().ok()?, l))
            })
            .collect()
    }

    /// The first line it printed, trimmed: what a version probe answers.
    pub fn first_line(&self) -> &str {
        self.output.lines().next().unwrap_or("").trim()
    }
}

/// A detached switch on a host, as `status` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmedJob {
    pub id: String,
    pub state: JobState,
    pub at: String,
    /// Host-clock time of its first rename, once fired.
    pub renamed_ns: Option<i128>,
    /// Other lines of its log worth showing (errors, refused files, reloads).
    pub log: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Armed,
    Fired,
    Cancelled,
    Failed,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JobState::Armed => "armed",
            JobState::Fired => "fired",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled(String),
    /// Too late: it had already fired.
    Fired(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnlockOutcome {
    Free,
    /// Left locked: a detached switch is armed and holds it.
    Armed { job: String },
    Unlocked { holder: String },
}

/// The watcher's lease on a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    Ours { epoch: u64 },
    /// `note`: what the holder last wrote about the service (see the watcher).
    Held { holder: String, epoch: u64, left_ms: i64, note: String },
    Released,
    NotOurs,
}

/// Where a service's virtual address is on a member, after the watcher's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressState {
    /// The member holds it on this interface; `changed`: it took it just now.
    Held { interface: String, changed: bool },
    /// The member does not hold it; `changed`: it dropped it just now.
    Free { changed: bool },
}

/// What a client sees of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Up,
    Down,
    /// The client has neither bash with `timeout` nor `nc` to look.
    Unknown,
}

/// What an upgrade script said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeReport {
    pub locked_by: Option<String>,
    /// The host already ran the target: nothing was run.
    pub up_to_date: bool,
    /// With `only_from`: the host ran something else, so nothing was run.
    pub skipped: Option<String>,
    /// The version before and after the command (empty when the probe printed nothing).
    pub was: Option<String>,
    pub now: Option<String>,
    /// How the upgrade command ended.
    pub result: Option<CommandResult>,
    pub error: Option<String>,
    pub finished: bool,
    pub stderr: String,
}

impl WriteReport {
    fn from_output(out: &super::Output, files: &[FileWrite]) -> WriteReport {
        let path = |i: usize| files.get(i).map_or_else(|| format!("file #{i}"), |f| f.path.clone());
        let mut w = WriteReport { exit: out.status, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(), ..Default::default() };
        for r in script::parse_report(&out.stdout) {
            match r {
                Report::Locked(holder) => w.locked_by = Some(if holder.is_empty() { "unknown holder".into() } else { holder }),
                Report::Changed { file, .. } => w.changed.push(path(file)),
                Report::Renamed { file, at_ns } => w.renamed.push((path(file), at_ns)),
                Report::Restored(i) => w.restored.push(path(i)),
                Report::Already(i) => w.already.push(path(i)),
                Report::Reload { status, output } => w.reload = Some(CommandResult { status, output }),
                Report::Error(e) => {
                    let (e, cause) = script::error_cause(&e);
                    // Indexes in the script's words become the paths they stand for.
                    let e = e
                        .split(' ')
                        .map(|word| {
                            let (num, rest) = word.split_at(word.find(|c: char| !c.is_ascii_digit()).unwrap_or(word.len()));
                            match num.parse::<usize>().ok().filter(|i| *i < files.len() && (rest.is_empty() || rest == ":")) {
                                Some(i) => format!("{}{rest}", path(i)),
                                None => word.to_string(),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    w.error.get_or_insert(e);
                    w.cause = w.cause.or(cause);
                }
                Report::Ready | Report::Done => w.finished = true,
                Report::Armed => w.armed = true,
                Report::Aborted => w.aborted = true,
                _ => {}
            }
        }
        w
    }

    /// The first rename's host-clock time, when the host could tell it.
    pub fn first_rename_ns(&self) -> Option<i128> {
        self.renamed
            .iter()
            .map(|(_, t)| *t)
            .filter(|t| *t > 0)
            .min()
    }
}

/// A detached job's log line in words: a reload's exit and output, a refused file.
fn readable_log_line(line: &str) -> String {
    match script::parse_report(line.as_bytes()).into_iter().next() {
        Some(Report::Reload { status: 0, output }) if output.is_empty() => "reload passed".to_string(),
        Some(Report::Reload { status: 0, output }) => format!("reload passed: {output}"),
        Some(Report::Reload { status, output }) if output.is_empty() => format!("reload failed (exit {status})"),
        Some(Report::Reload { status, output }) => format!("reload failed (exit {status}): {output}"),
        Some(Report::Changed { file, .. }) => format!("refused: managed file #{} changed since the plan", file + 1),
        Some(Report::Error(e)) => format!("error: {e}"),
        _ => line.to_string(),
    }
}

impl AnyHost {
    /// The names a run of `plan_id` uses on this host, under the farm's `state_dir`.
    pub fn run_ids(&self, state_dir: &str, plan_id: &str, token: &str) -> RunIds {
        RunIds {
            root: self.root().to_string(),
            state_dir: super::host_state_dir(state_dir, self.name()),
            plan_id: plan_id.to_string(),
            token: token.to_string(),
            host: self.name().to_string(),
            fence: None,
        }
    }

    async fn write_script(&self, s: &str, input: Vec<u8>, files: &[FileWrite], gate: Option<Gate>) -> Result<WriteReport, TransportError> {
        let out = match gate {
            Some(g) => self.run_gated(s, input, Some(g)).await?,
            None => self.run(s, input).await?,
        };
        Ok(WriteReport::from_output(&out, files))
    }

    /// Takes the lock, checks every before-hash, and stages each new content
    /// (from `input`, in order) beside its target. Renames nothing.
    pub async fn stage(&self, ids: &RunIds, owner: &str, files: &[FileWrite], input: Vec<u8>) -> Result<WriteReport, TransportError> {
        self.write_script(&script::stage(ids, owner, files), input, files, None).await
    }

    /// Stages, arms, and on the gate's word checks and switches, in one session.
    pub async fn stage_and_switch(&self, ids: &RunIds, owner: &str, files: &[FileWrite], reload: Option<&str>, input: Vec<u8>, gate: Gate) -> Result<WriteReport, TransportError> {
        self.write_script(&script::stage_and_switch(ids, owner, files, reload), input, files, Some(gate)).await
    }

    /// Leaves a job on the host that switches the staged files at `at` (ns, host clock).
    pub async fn arm(&self, ids: &RunIds, files: &[FileWrite], reload: Option<&str>, at: &str, at_ns: i128) -> Result<WriteReport, TransportError> {
        let job = script::switch(ids, files, reload, Trigger::At(at_ns));
        self.write_script(&script::detach(ids, at), job.into_bytes(), files, None).await
    }

    /// Removes this run's staged copies and releases its lock.
    pub async fn abort(&self, ids: &RunIds, files: &[FileWrite]) -> Result<WriteReport, TransportError> {
        self.write_script(&script::abort(ids, files), Vec::new(), files, None).await
    }

    /// Restores each file that still has its after-hash from the plan's backup.
    pub async fn restore(&self, ids: &RunIds, owner: &str, files: &[FileWrite], reload: Option<&str>) -> Result<WriteReport, TransportError> {
        self.write_script(&script::rollback(ids, owner, files, reload), Vec::new(), files, None).await
    }

    /// Upgrades this host to `target` with `command`, unless `probe` says it runs it already.
    pub async fn upgrade(&self, ids: &RunIds, owner: &str, probe: &str, target: &str, command: &str, only_from: Option<&str>) -> Result<UpgradeReport, TransportError> {
        let out = self.run(&script::upgrade(ids, owner, probe, target, command, only_from), Vec::new()).await?;
        let mut r = UpgradeReport { stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(), ..Default::default() };
        for line in script::parse_report(&out.stdout) {
            match line {
                Report::Locked(h) => r.locked_by = Some(if h.is_empty() { "unknown holder".into() } else { h }),
                Report::UpToDate(v) => {
                    r.up_to_date = true;
                    r.was = Some(v.clone());
                    r.now = Some(v);
                }
                Report::Was(v) => r.was = Some(v),
                Report::Skipped(v) => r.skipped = Some(v),
                Report::Now(v) => r.now = Some(v),
                Report::Reload { status, output } => r.result = Some(CommandResult { status, output }),
                Report::Error(e) => r.error = Some(e),
                Report::Done => r.finished = true,
                _ => {}
            }
        }
        Ok(r)
    }

    /// Takes or renews (or releases) the watcher's lease of `service` on this member.
    pub async fn lease(&self, state_dir: &str, service: &str, holder: &str, ttl_ms: u64, release: bool, note: &str) -> Result<LeaseState, TransportError> {
        let dir = super::host_state_dir(state_dir, self.name());
        let op = if release { script::LeaseOp::Release } else { script::LeaseOp::Acquire };
        let out = self.run(&script::lease(self.root(), &dir, service, holder, ttl_ms, op, note), Vec::new()).await?;
        let line = script::parse_report(&out.stdout).into_iter().find_map(|r| if let Report::Lease(l) = r { Some(l) } else { None }).unwrap_or_default();
        let mut w = line.split(' ');
        Ok(match (w.next(), w.next(), w.next()) {
            (Some("ok"), Some(e), _) => LeaseState::Ours { epoch: e.parse().unwrap_or(0) },
            (Some("held"), Some(e), Some(left)) => LeaseState::Held { epoch: e.parse().unwrap_or(0), left_ms: left.parse().unwrap_or(0), holder: w.next().unwrap_or_default().to_string(), note: w.collect::<Vec<_>>().join(" ") },
            (Some("released"), _, _) => LeaseState::Released,
            _ => LeaseState::NotOurs,
        })
    }

    /// Who holds the watcher's lease of `service` on this member, if anyone does.
    pub async fn lease_holder(&self, state_dir: &str, service: &str) -> Result<LeaseState, TransportError> {
        let dir = super::host_state_dir(state_dir, self.name());
        let out = self.run(&script::lease(self.root(), &dir, service, "", 0, script::LeaseOp::Peek, ""), Vec::new()).await?;
        let line = script::parse_report(&out.stdout).into_iter().find_map(|r| if let Report::Lease(l) = r { Some(l) } else { None }).unwrap_or_default();
        let mut w = line.split(' ');
        Ok(match (w.next(), w.next(), w.next()) {
            (Some("held"), Some(e), Some(left)) => LeaseState::Held { epoch: e.parse().unwrap_or(0), left_ms: left.parse().unwrap_or(0), holder: w.next().unwrap_or_default().to_string(), note: w.collect::<Vec<_>>().join(" ") },
            _ => LeaseState::Released,
        })
    }

    /// Whether this host (a client) has its own answer from `address` to
    /// `talk`, within `deadline`.
    pub async fn reaches(&self, address: &str, talk: &crate::farm::Talk, deadline: std::time::Duration) -> Result<Reach, TransportError> {
        let out = self.run(&script::reach(address, talk, deadline), Vec::new()).await?;
        Ok(match script::parse_report(&out.stdout).into_iter().find_map(|r| if let Report::Reach(l) = r { Some(l) } else { None }).as_deref() {
            Some("up") => Reach::Up,
            Some("down") => Reach::Down,
            _ => Reach::Unknown,
        })
    }

    /// What a fenced write's host said: done, refused by a newer fencing token,
    /// or why not in its own words.
    fn fenced_outcome(out: &super::Output, fence: Option<(&str, u64)>) -> Result<Vec<Report>, WatcherWriteError> {
        let reports = script::parse_report(&out.stdout);
        if reports.contains(&Report::Done) {
            return Ok(reports);
        }
        if let (Some(newer), Some((service, ours))) = (reports.iter().find_map(|r| if let Report::Fenced(t) = r { Some(*t) } else { None }), fence) {
            return Err(WatcherWriteError::Fenced { service: service.to_string(), newer, ours });
        }
        Err(WatcherWriteError::Host(reports.into_iter().find_map(|r| if let Report::Error(e) = r { Some(e) } else { None }).unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string())))
    }

    /// Writes `content` to `path` on this host atomically, checked by sha256;
    /// with a `fence` (service, lease epoch), only if no newer watcher wrote here.
    pub async fn put_file(&self, state_dir: &str, path: &str, content: Vec<u8>, fence: Option<(&str, u64)>) -> Result<(), WatcherWriteError> {
        let sha = crate::farm::sha256_hex(&content);
        let dir = super::host_state_dir(state_dir, self.name());
        let out = self.run(&script::put_file(self.root(), &dir, path, content.len(), &sha, fence), content).await?;
        Self::fenced_outcome(&out, fence).map(|_| ())
    }

    /// Takes or drops a service's virtual address (`A.B.C.D/N`) on this
    /// member, under the watcher's fencing token; `Ok` says where it is now.
    #[allow(clippy::too_many_arguments)]
    pub async fn address(&self, state_dir: &str, service: &str, epoch: u64, op: script::AddressOp, cidr: &str, interface: Option<&str>, own: &str) -> Result<AddressState, WatcherWriteError> {
        let dir = super::host_state_dir(state_dir, self.name());
        let out = self.run(&script::address(&dir, service, epoch, op, cidr, interface, own), Vec::new()).await?;
        let reports = Self::fenced_outcome(&out, Some((service, epoch)))?;
        let words: Vec<String> = reports.into_iter().filter_map(|r| if let Report::Address(a) = r { Some(a) } else { None }).collect();
        let changed = words.iter().any(|w| w == "taken" || w == "dropped");
        Ok(match words.iter().find_map(|w| w.strip_prefix("held ")) {
            Some(interface) => AddressState::Held { interface: interface.to_string(), changed },
            None => AddressState::Free { changed },
        })
    }

    /// Runs one operator command (a health check or a retire). `Ok(None)`: the host gave no answer.
    pub async fn command(&self, cmd: &str) -> Result<Option<CommandResult>, TransportError> {
        let out = self.run(&script::one_command(self.root(), cmd), Vec::new()).await?;
        Ok(WriteReport::from_output(&out, &[]).reload)
    }

    /// Removes the lock if `holder` still holds it, unless a detached switch is
    /// armed there: then the lock stays, and the armed job's id comes back.
    pub async fn break_lock(&self, state_dir: &str, holder: &str) -> Result<Option<String>, TransportError> {
        let dir = super::host_state_dir(state_dir, self.name());
        let out = self.run(&script::break_lock(self.root(), &dir, holder), Vec::new()).await?;
        Ok(script::parse_report(&out.stdout).into_iter().find_map(|r| if let Report::ArmedJob(j) = r { Some(j) } else { None }))
    }

    /// Every detached switch on the host.
    pub async fn armed_jobs(&self, state_dir: &str) -> Result<Vec<ArmedJob>, TransportError> {
        let dir = super::host_state_dir(state_dir, self.name());
        let out = self.run(&script::status(self.root(), &dir), Vec::new()).await?;
        let mut jobs: Vec<ArmedJob> = Vec::new();
        for r in script::parse_report(&out.stdout) {
            match r {
                Report::Job { id, state, at } => {
                    let state = match state.as_str() {
                        "armed" => JobState::Armed,
                        "fired" => JobState::Fired,
                        "cancelled" => JobState::Cancelled,
                        _ => JobState::Failed,
                    };
                    jobs.push(ArmedJob { id, state, at, renamed_ns: None, log: Vec::new() });
                }
                Report::JobLog { id, line } => {
                    let Some(job) = jobs.iter_mut().find(|j| j.id == id) else {
                        continue;
                    };
                    match line
                        .strip_prefix("RENAMED ")
                        .and_then(|l| l.split(' ').nth(1))
                        .and_then(|t| t.parse::<i128>().ok().filter(|t| *t > 0))
                    {
                        Some(t) => job.renamed_ns = Some(job.renamed_ns.map_or(t, |x| x.min(t))),
                        None => job.log.push(readable_log_line(&line)),
                    }
                }
                _ => {}
            }
        }
        Ok(jobs)
    }

    /// Disarms every detached switch that has not fired.
    pub async fn cancel_armed(&self, state_dir: &str) -> Result<Vec<CancelOutcome>, TransportError> {
        let dir = super::host_state_dir(state_dir, self.name());
        let out = self.run(&script::cancel(self.root(), &dir), Vec::new()).await?;
        Ok(script::parse_report(&out.stdout)
            .into_iter()
            .filter_map(|r| match r {
                Report::Cancelled(id) => Some(CancelOutcome::Cancelled(id)),
                Report::Fired(id) => Some(CancelOutcome::Fired(id)),
                _ => None,
            })
            .collect())
    }

    /// Breaks the lock and removes staged copies beside `paths`, unless a switch is armed.
    pub async fn unlock(&self, state_dir: &str, paths: &[String]) -> Result<UnlockOutcome, TransportError> {
        let dir = super::host_state_dir(state_dir, self.name());
        let out = self.run(&script::unlock(self.root(), &dir, self.name(), paths), Vec::new()).await?;
        let reports = script::parse_report(&out.stdout);
        let holder = reports.iter().find_map(|r| if let Report::Holder(h) = r { Some(h.clone()) } else { None }).unwrap_or_default();
        if reports.contains(&Report::Free) {
            return Ok(UnlockOutcome::Free);
        }
        if let Some(job) = reports.iter().find_map(|r| if let Report::ArmedJob(j) = r { Some(j.clone()) } else { None }) {
            return Ok(UnlockOutcome::Armed { job });
        }
        if reports.contains(&Report::Unlocked) {
            return Ok(UnlockOutcome::Unlocked { holder });
        }
        Err(TransportError::Lost { host: self.name().to_string(), detail: format!("unlock gave no answer: {}", String::from_utf8_lossy(&out.stderr).trim()) })
    }
}
