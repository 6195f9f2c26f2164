//! Executes a Plan through `transport`: stage every host, then switch them
//! together, stage by stage. Records each write in the journal and reports
//! progress through the [`Reporter`] trait.
//!
//! Nothing is renamed into place until every host of a stage has staged its
//! new content (compare-and-swap checked, fsynced, backed up). If more hosts
//! fail than `max_fail` allows, the staged copies are removed everywhere and
//! no target file is touched.

pub mod journal;
pub mod progress;

use crate::plan::{ActionKind, Contents, Edit, Plan};
use crate::transport::script::{self, FileWrite, Report, RunIds};
use crate::transport::{AnyHost, Host, Word};
use journal::{Entry, Journal};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Options {
    pub parallel: usize,
    /// How many hosts may fail before the run stops (and, while staging, aborts everywhere).
    pub max_fail: usize,
    /// Written into each host lock, so that a second operator is told who holds it.
    pub owner: String,
    pub state_dir: String,
    /// Arm a timer on each host for timed stages instead of waiting here.
    pub detach: bool,
}

/// Where one host stands.
#[derive(Clone, Debug, PartialEq)]
pub enum HostState {
    Staging,
    Staged,
    Switching,
    /// Every file renamed into place; the reload (if any) passed.
    Applied { files: usize },
    /// Files are in place but the reload failed.
    ReloadFailed { status: i32, output: String },
    /// A file changed since the plan; nothing written on this host.
    Refused { changed: Vec<String> },
    /// Another apply holds this host's lock; nothing written on this host.
    Locked { holder: String },
    /// Staged fine, but other hosts failed, so the staged copies were removed.
    Aborted { why: String },
    Failed { error: String, written: Vec<String> },
    /// A detached switch waits on the host for its time.
    Armed { at: String },
    RolledBack { restored: usize, already: usize, changed: Vec<String> },
}

impl HostState {
    pub fn is_final(&self) -> bool {
        !matches!(self, HostState::Staging | HostState::Staged | HostState::Switching)
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, HostState::Applied { .. } | HostState::Staged | HostState::Armed { .. })
            || matches!(self, HostState::RolledBack { changed, .. } if changed.is_empty())
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostState::Staging => write!(f, "staging"),
            HostState::Staged => write!(f, "staged, waiting to switch"),
            HostState::Switching => write!(f, "switching"),
            HostState::Applied { files } => write!(f, "applied ({files} file{})", if *files == 1 { "" } else { "s" }),
            HostState::ReloadFailed { status, output } => write!(f, "files in place, but the reload failed (exit {status}): {output}"),
            HostState::Refused { changed } => write!(f, "refused, nothing written: changed since the plan: {}", changed.join(", ")),
            HostState::Locked { holder } => write!(f, "refused, nothing written: another apply holds the lock ({holder})"),
            HostState::Aborted { why } => write!(f, "aborted, nothing written ({why})"),
            HostState::Failed { error, written } if written.is_empty() => write!(f, "failed, nothing written: {error}"),
            HostState::Failed { error, written } => write!(f, "failed after writing {}: {error}", written.join(", ")),
            HostState::Armed { at } => write!(f, "armed on the host: switches at {at} without this workstation"),
            HostState::RolledBack { restored, already, changed } => {
                write!(f, "rolled back {restored} file(s), {already} already as before")?;
                if !changed.is_empty() {
                    write!(f, "; left alone, changed since the apply: {}", changed.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// What the executor tells the operator.
#[derive(Clone, Debug)]
pub enum Event {
    Stage { index: usize, total: usize, at: Option<String>, hosts: usize },
    Host { host: String, state: HostState },
    Countdown { at: String, remaining: Duration },
    Note(String),
}

impl Event {
    pub fn line(&self) -> String {
        match self {
            Event::Stage { index, total, at: Some(at), hosts } => format!("stage {}/{total}: {hosts} host(s), switch at {at}", index + 1),
            Event::Stage { index, total, at: None, hosts } => format!("stage {}/{total}: {hosts} host(s)", index + 1),
            Event::Host { host, state } => format!("{host}: {state}"),
            Event::Countdown { at, remaining } => format!("switching at {at}, in {}s", remaining.as_secs()),
            Event::Note(n) => n.clone(),
        }
    }
}

pub trait Reporter: Send + Sync {
    fn event(&self, e: Event);
    fn finish(&self) {}
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub hosts: BTreeMap<String, HostState>,
    /// Rename times (ns since the epoch, host clocks) per timed stage, by host.
    pub renames: BTreeMap<usize, BTreeMap<String, i128>>,
    pub journal_error: Option<String>,
    /// Failures that leave every file in place (a retire command, say).
    pub problems: Vec<String>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.journal_error.is_none() && self.problems.is_empty() && self.hosts.values().all(HostState::is_ok)
    }

    /// Latest minus earliest first rename of a stage, in milliseconds.
    pub fn skew_ms(&self, stage: usize) -> Option<f64> {
        let t = self.renames.get(&stage)?;
        let (min, max) = (t.values().min()?, t.values().max()?);
        Some((max - min) as f64 / 1e6)
    }
}

struct HostStage {
    host: String,
    files: Vec<FileWrite>,
    input: Vec<u8>,
    reload: Option<String>,
}

fn stage_work(plan: &Plan, stage: usize, level: usize, contents: &Contents, skip: &BTreeMap<String, HostState>) -> Vec<HostStage> {
    let mut by_host: BTreeMap<&str, HostStage> = BTreeMap::new();
    let failed = |h: &str| skip.get(h).is_some_and(|s| !matches!(s, HostState::Applied { .. }));
    for a in plan.actions.iter().filter(|a| a.stage == stage && a.level == level && !failed(&a.host)) {
        let w = by_host.entry(&a.host).or_insert_with(|| HostStage { host: a.host.clone(), files: vec![], input: vec![], reload: None });
        match &a.kind {
            ActionKind::Edit(e) => {
                let bytes = &contents[&a.id];
                w.files.push(file_write(e, bytes.len()));
                w.input.extend_from_slice(bytes);
            }
            ActionKind::Reload { command } => w.reload = Some(command.clone()),
            ActionKind::Gate { .. } | ActionKind::Retire { .. } => {}
        }
    }
    by_host.into_values().filter(|w| !w.files.is_empty()).collect()
}

fn file_write(e: &Edit, len: usize) -> FileWrite {
    FileWrite { path: e.path.clone(), before_sha256: e.before_sha256.clone(), after_sha256: e.after_sha256.clone(), len }
}

fn paths(files: &[FileWrite], which: impl Iterator<Item = usize>) -> Vec<String> {
    which.filter_map(|i| files.get(i)).map(|f| f.path.clone()).collect()
}

/// Turns a stage/switch script's answer into a host state.
fn judge(out: &Result<crate::transport::Output, crate::transport::TransportError>, files: &[FileWrite], success: HostState) -> HostState {
    let out = match out {
        Ok(o) => o,
        Err(e) => return HostState::Failed { error: format!("{e} (hint: {})", e.hint()), written: vec![] },
    };
    let reports = script::parse_report(&out.stdout);
    let renamed = paths(files, reports.iter().filter_map(|r| if let Report::Renamed { file, .. } = r { Some(*file) } else { None }));
    for r in &reports {
        if let Report::Locked(holder) = r {
            return HostState::Locked { holder: if holder.is_empty() { "unknown holder".into() } else { holder.clone() } };
        }
    }
    let changed = paths(files, reports.iter().filter_map(|r| if let Report::Changed { file, .. } = r { Some(*file) } else { None }));
    if !changed.is_empty() {
        return HostState::Refused { changed };
    }
    if let Some(Report::Error(e)) = reports.iter().find(|r| matches!(r, Report::Error(_))) {
        let e = e.split(' ').map(|w| w.parse::<usize>().ok().and_then(|i| files.get(i)).map_or(w.to_string(), |f| f.path.clone())).collect::<Vec<_>>().join(" ");
        return HostState::Failed { error: e, written: renamed };
    }
    let finished = reports.iter().any(|r| matches!(r, Report::Ready | Report::Done));
    if !finished {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return HostState::Failed {
            error: format!("the host's script stopped early (exit {}): {}", out.status, stderr.trim()),
            written: renamed,
        };
    }
    for r in &reports {
        if let Report::Reload { status, output } = r {
            if *status != 0 {
                return HostState::ReloadFailed { status: *status, output: output.clone() };
            }
        }
    }
    success
}

fn entries(plan: &Plan, host: &str, files: &[FileWrite], outcome: &HostState) -> Vec<Entry> {
    let time = jiff::Timestamp::now().to_string();
    files
        .iter()
        .map(|f| {
            let (word, detail) = match outcome {
                HostState::Applied { .. } => ("written", String::new()),
                HostState::ReloadFailed { .. } => ("written", outcome.to_string()),
                HostState::Failed { written, .. } if written.contains(&f.path) => ("written", outcome.to_string()),
                HostState::Refused { changed } if changed.contains(&f.path) => ("refused", "changed since the plan".into()),
                HostState::Aborted { why } => ("aborted", why.clone()),
                _ => ("not-written", outcome.to_string()),
            };
            Entry {
                time: time.clone(),
                plan: plan.id.clone(),
                farm: plan.farm.name.clone(),
                host: host.to_string(),
                path: f.path.clone(),
                before_sha256: f.before_sha256.clone(),
                after_sha256: f.after_sha256.clone(),
                outcome: word.into(),
                detail,
            }
        })
        .collect()
}

/// Runs `f` on every item, at most `parallel` at a time, keeping input order.
async fn each<T, R, F, Fut>(items: Vec<T>, parallel: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let f = Arc::new(f);
    let mut set = tokio::task::JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let (gate, f) = (gate.clone(), f.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            (i, f(item).await)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("host task panicked"));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn run_ids<'a>(host: &'a AnyHost, state_dir: &'a str, plan_stage: &'a str, token: &'a str) -> RunIds<'a> {
    RunIds { root: host.root(), state_dir, plan_id: plan_stage, token }
}

/// Waits for `at`, reporting a countdown every few seconds.
async fn wait_until(at: &str, reporter: &dyn Reporter) {
    let Ok(t) = at.parse::<jiff::Timestamp>() else { return };
    loop {
        let remaining_ms = t.as_millisecond() - jiff::Timestamp::now().as_millisecond();
        if remaining_ms <= 0 {
            return;
        }
        let remaining = Duration::from_millis(remaining_ms as u64);
        reporter.event(Event::Countdown { at: at.to_string(), remaining });
        let step = if remaining > Duration::from_secs(60) { Duration::from_secs(30) } else { Duration::from_secs(5) };
        if remaining <= step + Duration::from_millis(200) {
            // The last stretch: one precise sleep, so every host's switch is sent at T.
            tokio::time::sleep(remaining).await;
            return;
        }
        tokio::time::sleep(step).await;
    }
}

/// Open connections, and the farm to open more (gates and retires may name hosts outside the plan's edits).
pub struct Connections {
    pub farm: Arc<crate::farm::Farm>,
    pub hosts: BTreeMap<String, Arc<AnyHost>>,
}

impl Connections {
    pub async fn get(&mut self, name: &str) -> Result<Arc<AnyHost>, String> {
        if let Some(h) = self.hosts.get(name) {
            return Ok(h.clone());
        }
        if !self.farm.hosts.contains_key(name) {
            return Err(format!("{name} is not in the farm file"));
        }
        let h = Arc::new(crate::transport::connect(&self.farm, name).await.map_err(|e| format!("{e} (hint: {})", e.hint()))?);
        self.hosts.insert(name.to_string(), h.clone());
        Ok(h)
    }
}

/// Why a plan cannot be detached, if it cannot.
pub fn detach_problem(plan: &Plan) -> Option<String> {
    let timed: Vec<_> = plan.stages.iter().filter(|s| s.at.is_some()).collect();
    if timed.is_empty() {
        return Some("the plan has no scheduled switch (`at`), so there is nothing to arm".into());
    }
    if timed.len() > 1 {
        return Some("the plan has more than one scheduled switch; each later one must be staged after the one before has fired".into());
    }
    if plan.stages.last().is_some_and(|s| s.at.is_none()) {
        return Some("the plan has changes after its scheduled switch".into());
    }
    let stage = timed[0].index;
    if plan.actions.iter().any(|a| a.stage == stage && a.level > 0) {
        return Some("the scheduled switch waits for a host to become ready between switches, which needs this workstation".into());
    }
    None
}

/// Runs the operator command of each gate or retire, on its host.
async fn run_commands(
    conns: &mut Connections,
    actions: Vec<&crate::plan::Action>,
    reporter: &dyn Reporter,
) -> Vec<(String, Result<(), String>)> {
    let mut jobs = Vec::new();
    for a in actions {
        let command = match &a.kind {
            ActionKind::Gate { command } => command.clone(),
            ActionKind::Retire { command, .. } => command.clone(),
            _ => None,
        };
        let host = conns.get(&a.host).await;
        jobs.push((a.id.clone(), host, command));
    }
    let results = each(jobs, 64, |(id, host, command)| async move {
        let host = match host {
            Ok(h) => h,
            Err(e) => return (id, Err(e)),
        };
        if let Err(e) = host.refresh().await {
            return (id, Err(format!("{e} (hint: {})", e.hint())));
        }
        let script = script::one_command(host.root(), command.as_deref().unwrap_or("true"));
        let r = match host.run(&script, Vec::new()).await {
            Err(e) => Err(format!("{e} (hint: {})", e.hint())),
            Ok(out) => match script::parse_report(&out.stdout).into_iter().find(|r| matches!(r, Report::Reload { .. })) {
                Some(Report::Reload { status: 0, .. }) => Ok(()),
                Some(Report::Reload { status, output }) => Err(format!("`{}` failed (exit {status}): {output}", command.unwrap_or_default())),
                _ => Err(format!("no answer: {}", String::from_utf8_lossy(&out.stderr).trim())),
            },
        };
        (id, r)
    })
    .await;
    for (id, r) in &results {
        let line = match r {
            Ok(()) => format!("{id}: passed"),
            Err(e) => format!("{id}: failed: {e}"),
        };
        reporter.event(Event::Note(line));
    }
    results
}

/// Applies `plan` (with its `contents`) through `conns`.
pub async fn execute(
    plan: &Plan,
    contents: &Contents,
    conns: &mut Connections,
    opts: &Options,
    reporter: &dyn Reporter,
    journal: &Journal,
) -> Summary {
    let mut summary = Summary::default();
    let token = format!("{}-{}-{}", plan.id, std::process::id(), jiff::Timestamp::now().as_nanosecond());
    let mut failures = 0usize;
    let total = plan.stages.len();
    'stages: for stage in &plan.stages {
        let levels: std::collections::BTreeSet<usize> = plan.actions.iter().filter(|a| a.stage == stage.index).map(|a| a.level).collect();
        let hosts_in_stage = plan.actions.iter().filter(|a| a.stage == stage.index && matches!(a.kind, ActionKind::Edit(_))).map(|a| &a.host).collect::<std::collections::BTreeSet<_>>().len();
        reporter.event(Event::Stage { index: stage.index, total, at: stage.at.clone(), hosts: hosts_in_stage });
        let plan_stage = format!("{}-{}", plan.id, stage.index);
        let mut waited = false;
        for &level in &levels {
            let gates: Vec<_> = plan.actions.iter().filter(|a| a.stage == stage.index && a.level == level && matches!(a.kind, ActionKind::Gate { .. })).collect();
            let work = stage_work(plan, stage.index, level, contents, &summary.hosts);
            let detached = opts.detach && stage.at.is_some();
            let run = Level { plan, stage, opts, plan_stage: &plan_stage, token: &token, reporter, journal };
            let flow = if detached {
                detach_level(&run, &work, gates, conns, &mut summary, &mut failures).await
            } else {
                switch_level(&run, &work, gates, conns, !waited, &mut summary, &mut failures).await
            };
            waited = true;
            if flow.is_break() {
                break 'stages;
            }
        }
        // 5. Retire the hosts nothing refers to any more.
        if !opts.detach || stage.at.is_none() {
            let retires: Vec<_> = plan.actions.iter().filter(|a| a.stage == stage.index && matches!(a.kind, ActionKind::Retire { .. })).collect();
            for (id, r) in run_commands(conns, retires, reporter).await {
                if let Err(e) = r {
                    summary.problems.push(format!("{id}: {e}"));
                }
            }
        }
    }
    for a in plan.actions.iter().filter(|a| matches!(a.kind, ActionKind::Edit(_))) {
        summary.hosts.entry(a.host.clone()).or_insert(HostState::Applied { files: 0 });
    }
    reporter.finish();
    summary
}

/// Gates that failed, as "id: why"; the edits they guard are reported as not started.
fn gate_failures(plan: &Plan, stage: usize, results: Vec<(String, Result<(), String>)>, summary: &mut Summary) -> bool {
    let failed: Vec<String> = results.into_iter().filter_map(|(id, r)| r.err().map(|e| format!("{id}: {e}"))).collect();
    if failed.is_empty() {
        return false;
    }
    for a in plan.actions.iter().filter(|a| a.stage >= stage && matches!(a.kind, ActionKind::Edit(_))) {
        summary.hosts.entry(a.host.clone()).or_insert_with(|| HostState::Failed {
            error: format!("not started: a host it would point to is not ready: {}", failed.join("; ")),
            written: vec![],
        });
    }
    true
}

/// What every level of one stage of a run shares.
#[derive(Clone, Copy)]
struct Level<'a> {
    plan: &'a Plan,
    stage: &'a crate::plan::Stage,
    opts: &'a Options,
    plan_stage: &'a str,
    token: &'a str,
    reporter: &'a dyn Reporter,
    journal: &'a Journal,
}

/// One host's whole write in one session: stage, arm, and (on the word) check and switch.
/// A lock left by a dead farmctl of this workstation is broken and the session tried once more.
async fn stage_and_switch_host(
    host: Arc<AnyHost>,
    script_text: String,
    input: Vec<u8>,
    word: tokio::sync::watch::Receiver<Word>,
    armed_out: tokio::sync::oneshot::Sender<()>,
    checked_out: tokio::sync::oneshot::Sender<bool>,
    state_dir: String,
) -> Result<crate::transport::Output, crate::transport::TransportError> {
    host.refresh().await?;
    let (mut armed_out, mut checked_out) = (Some(armed_out), Some(checked_out));
    let mut attempt = 0;
    loop {
        let (a_tx, a_rx) = tokio::sync::oneshot::channel();
        let (c_tx, c_rx) = tokio::sync::oneshot::channel();
        let gate = crate::transport::Gate { armed: a_tx, checked: c_tx, word: word.clone() };
        let forward = async {
            if a_rx.await.is_ok() {
                if let Some(o) = armed_out.take() {
                    let _ = o.send(());
                }
                if let Ok(c) = c_rx.await {
                    if let Some(o) = checked_out.take() {
                        let _ = o.send(c);
                    }
                }
            }
        };
        let (out, ()) = tokio::join!(host.run_gated(&script_text, input.clone(), Some(gate)), forward);
        attempt += 1;
        let stale = out.as_ref().ok().and_then(|o| {
            script::parse_report(&o.stdout).into_iter().find_map(|r| match r {
                Report::Locked(holder) if lock_is_stale(&holder) => Some(holder),
                _ => None,
            })
        });
        match stale {
            Some(holder) if attempt == 1 => {
                let _ = host.run(&script::break_lock(host.root(), &state_dir, &holder), Vec::new()).await;
            }
            _ => return out,
        }
    }
}

/// One level of a stage, with the workstation holding every connection: each
/// host stages and arms in one session while the gates run; then at T every
/// host checks, and all get `go` together (or `abort`, if anything failed).
async fn switch_level(
    run: &Level<'_>,
    work: &[HostStage],
    gates: Vec<&crate::plan::Action>,
    conns: &mut Connections,
    wait_for_time: bool,
    summary: &mut Summary,
    failures: &mut usize,
) -> std::ops::ControlFlow<()> {
    let Level { plan, stage, opts, plan_stage, token, reporter, journal } = *run;
    use std::ops::ControlFlow;
    let (word_tx, word_rx) = tokio::sync::watch::channel(Word::Wait);
    let mut running = tokio::task::JoinSet::new();
    let mut signals = Vec::new();
    let limit = conns.farm.ssh.command_timeout;
    let spawn = |i: usize, w: &HostStage, running: &mut tokio::task::JoinSet<_>| {
        let host = conns.hosts[&w.host].clone();
        let (armed_tx, armed_rx) = tokio::sync::oneshot::channel();
        let (checked_tx, checked_rx) = tokio::sync::oneshot::channel();
        let s = script::stage_and_switch(&run_ids(&host, &opts.state_dir, plan_stage, token), &opts.owner, &w.files, w.reload.as_deref());
        let (input, word, state_dir) = (w.input.clone(), word_rx.clone(), opts.state_dir.clone());
        running.spawn(async move { (i, stage_and_switch_host(host, s, input, word, armed_tx, checked_tx, state_dir).await) });
        (armed_rx, checked_rx)
    };
    // The first host alone, then the rest: of two applies started together, one
    // gets the first lock and goes ahead, and the other is refused at once.
    let mut armed: Vec<(bool, tokio::sync::oneshot::Receiver<bool>)> = Vec::new();
    let mut spawned = 0;
    if let Some(first) = work.first() {
        let (a, c) = spawn(0, first, &mut running);
        spawned = 1;
        let ok = tokio::time::timeout(limit, a).await.is_ok_and(|r| r.is_ok());
        armed.push((ok, c));
        if ok || opts.max_fail > 0 {
            for (i, w) in work.iter().enumerate().skip(1) {
                signals.push(spawn(i, w, &mut running));
            }
            spawned = work.len();
        }
    }
    let gates_failed = gate_failures(plan, stage.index, run_commands(conns, gates, reporter).await, summary);
    for (a, c) in signals {
        let ok = tokio::time::timeout(limit, a).await.is_ok_and(|r| r.is_ok());
        armed.push((ok, c));
    }
    for (w, (ok, _)) in work.iter().zip(&armed) {
        if *ok {
            reporter.event(Event::Host { host: w.host.clone(), state: HostState::Staged });
        }
    }
    let armed_flags: Vec<bool> = armed.iter().map(|(ok, _)| *ok).collect();
    let not_armed = work.len() - armed_flags.iter().filter(|ok| **ok).count();
    let mut go = !gates_failed && not_armed + *failures <= opts.max_fail;
    if go && wait_for_time {
        if let Some(at) = &stage.at {
            wait_until(at, reporter).await;
        }
    }
    // At the switch time: every host checks once more, then all get the word at once.
    if go {
        let _ = word_tx.send(Word::Check);
        let mut bad = 0;
        for (ok, checked_rx) in armed {
            if ok && !tokio::time::timeout(limit, checked_rx).await.is_ok_and(|r| r == Ok(true)) {
                bad += 1;
            }
        }
        go = bad + not_armed + *failures <= opts.max_fail;
    }
    let _ = word_tx.send(if go { Word::Go } else { Word::Abort });
    let mut results: Vec<Option<Result<crate::transport::Output, crate::transport::TransportError>>> = (0..work.len()).map(|_| None).collect();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, running.join_next()).await {
        let (i, out) = r.expect("switch task panicked");
        results[i] = Some(out);
    }
    running.abort_all();
    let mut failed_here = 0;
    let why = match summary.hosts.values().find_map(|s| match s {
        HostState::Failed { error, .. } if gates_failed => Some(error.trim_start_matches("not started: ").to_string()),
        _ => None,
    }) {
        Some(gate) => gate,
        None => "other hosts failed".to_string(),
    };
    let aborted = || HostState::Aborted { why: why.clone() };
    for (i, w) in work.iter().enumerate() {
        let reports = match &results[i] {
            Some(Ok(o)) => script::parse_report(&o.stdout),
            _ => Vec::new(),
        };
        let state = match &results[i] {
            // Never started: the first host was refused.
            None if i >= spawned => aborted(),
            // Never armed, so it cannot have switched.
            None if !armed_flags.get(i).copied().unwrap_or(false) => {
                HostState::Failed { error: format!("{} did not answer within {limit:?}", w.host), written: vec![] }
            }
            None => HostState::Failed { error: "no answer after the switch was fired; the host may or may not have switched (check with `farmctl plan`)".into(), written: vec![] },
            Some(Ok(_)) if !go && reports.contains(&Report::Aborted) && !reports.iter().any(|x| matches!(x, Report::Changed { .. })) => aborted(),
            Some(out) => judge(out, &w.files, HostState::Applied { files: w.files.len() }),
        };
        if let Some(t) = reports.iter().find_map(|r| if let Report::Renamed { at_ns, .. } = r { Some(*at_ns) } else { None }) {
            summary.renames.entry(stage.index).or_default().insert(w.host.clone(), t);
        }
        reporter.event(Event::Host { host: w.host.clone(), state: state.clone() });
        record(journal, summary, entries(plan, &w.host, &w.files, &state));
        if !matches!(state, HostState::Applied { .. } | HostState::Aborted { .. }) {
            failed_here += 1;
        }
        summary.hosts.insert(w.host.clone(), state);
    }
    *failures += failed_here;
    if gates_failed || !go || *failures > opts.max_fail {
        skip_rest(plan, stage.index, summary);
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

/// One level of a timed stage with `--detach`: gates now, then each host stages
/// and gets a job that switches at T by itself.
async fn detach_level(
    run: &Level<'_>,
    work: &[HostStage],
    gates: Vec<&crate::plan::Action>,
    conns: &mut Connections,
    summary: &mut Summary,
    failures: &mut usize,
) -> std::ops::ControlFlow<()> {
    let Level { plan, stage, opts, plan_stage, token, reporter, journal } = *run;
    use std::ops::ControlFlow;
    if gate_failures(plan, stage.index, run_commands(conns, gates, reporter).await, summary) {
        return ControlFlow::Break(());
    }
    let jobs: Vec<_> = work.iter().map(|w| (conns.hosts[&w.host].clone(), w.host.clone(), w.files.clone(), w.input.clone())).collect();
    let (state_dir, ps, tk, owner) = (opts.state_dir.clone(), plan_stage.to_string(), token.to_string(), opts.owner.clone());
    let staged = each(jobs, opts.parallel, move |(host, name, files, input)| {
        let (state_dir, ps, tk, owner) = (state_dir.clone(), ps.clone(), tk.clone(), owner.clone());
        async move { (name, stage_host(&host, &RunIds { root: host.root(), state_dir: &state_dir, plan_id: &ps, token: &tk }, &owner, &files, input).await) }
    })
    .await;
    let mut ready = Vec::new();
    for ((name, state), w) in staged.into_iter().zip(work) {
        reporter.event(Event::Host { host: name.clone(), state: state.clone() });
        if state == HostState::Staged {
            ready.push(w);
        } else {
            *failures += 1;
            record(journal, summary, entries(plan, &name, &w.files, &state));
            summary.hosts.insert(name, state);
        }
    }
    if *failures > opts.max_fail {
        abort(run, &ready, conns, summary).await;
        skip_rest(plan, stage.index, summary);
        return ControlFlow::Break(());
    }
    let at = stage.at.clone().unwrap_or_default();
    let ns = at.parse::<jiff::Timestamp>().map(|t| t.as_nanosecond()).unwrap_or_default();
    let jobs: Vec<_> = ready.iter().map(|w| (conns.hosts[&w.host].clone(), w.host.clone(), w.files.clone(), w.reload.clone())).collect();
    let (state_dir, ps, tk) = (opts.state_dir.clone(), plan_stage.to_string(), token.to_string());
    let armed = each(jobs, opts.parallel, move |(host, name, files, reload)| {
        let (state_dir, ps, tk, at) = (state_dir.clone(), ps.clone(), tk.clone(), at.clone());
        async move {
            let ids = run_ids(&host, &state_dir, &ps, &tk);
            let job = script::switch(&ids, &files, reload.as_deref(), script::Trigger::At(ns));
            let out = host.run(&script::detach(&ids, &at), job.into_bytes()).await;
            let ok = out.as_ref().is_ok_and(|o| script::parse_report(&o.stdout).contains(&Report::Armed));
            let state = if ok { HostState::Armed { at: at.clone() } } else { judge(&out, &files, HostState::Failed { error: "the switch job did not start".into(), written: vec![] }) };
            (name, state)
        }
    })
    .await;
    for (name, state) in armed {
        reporter.event(Event::Host { host: name.clone(), state: state.clone() });
        summary.hosts.insert(name, state);
    }
    ControlFlow::Continue(())
}

fn record(journal: &Journal, summary: &mut Summary, entries: Vec<Entry>) {
    if let Err(e) = journal.record(&entries) {
        summary.journal_error = Some(format!("{}: {e}", journal.path().display()));
    }
}

/// All or nothing: removes every staged copy of the ready hosts; no target was touched.
async fn abort(run: &Level<'_>, ready: &[&HostStage], conns: &Connections, summary: &mut Summary) {
    let Level { plan, opts, plan_stage, token, reporter, journal, .. } = *run;
    let jobs: Vec<_> = ready.iter().map(|w| (conns.hosts[&w.host].clone(), w.files.clone())).collect();
    let (state_dir, ps, tk) = (opts.state_dir.clone(), plan_stage.to_string(), token.to_string());
    each(jobs, opts.parallel, move |(host, files)| {
        let (state_dir, ps, tk) = (state_dir.clone(), ps.clone(), tk.clone());
        async move { host.run(&script::abort(&run_ids(&host, &state_dir, &ps, &tk), &files), Vec::new()).await }
    })
    .await;
    for w in ready {
        let state = HostState::Aborted { why: "other hosts failed".into() };
        reporter.event(Event::Host { host: w.host.clone(), state: state.clone() });
        record(journal, summary, entries(plan, &w.host, &w.files, &state));
        summary.hosts.insert(w.host.clone(), state);
    }
}

/// Stages one host. A lock left by a farmctl of this workstation that is no
/// longer running is broken (its staged copies go with it), and staging is
/// tried once more.
async fn stage_host(host: &AnyHost, ids: &RunIds<'_>, owner: &str, files: &[FileWrite], input: Vec<u8>) -> HostState {
    if let Err(e) = host.refresh().await {
        return HostState::Failed { error: format!("{e} (hint: {})", e.hint()), written: vec![] };
    }
    let s = script::stage(ids, owner, files);
    let state = judge(&host.run(&s, input.clone()).await, files, HostState::Staged);
    match &state {
        HostState::Locked { holder } if lock_is_stale(holder) => {
            let _ = host.run(&script::break_lock(ids.root, ids.state_dir, holder), Vec::new()).await;
            judge(&host.run(&s, input).await, files, HostState::Staged)
        }
        _ => state,
    }
}

/// Whether a lock's holder line names a farmctl on this workstation that is gone.
pub fn lock_is_stale(holder: &str) -> bool {
    let mut words = holder.split_whitespace();
    let who = words.next().unwrap_or("");
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let same_host = who.rsplit_once('@').is_some_and(|(_, h)| h == here.trim());
    let pid = words.find_map(|w| w.strip_prefix("pid=")).and_then(|p| p.parse::<u32>().ok());
    match (same_host, pid) {
        (true, Some(pid)) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() != "farmctl"
        }
        _ => false,
    }
}

/// Hosts with work only in later stages are reported as not started.
fn skip_rest(plan: &Plan, after: usize, summary: &mut Summary) {
    for a in plan.actions.iter().filter(|a| a.stage > after) {
        summary.hosts.entry(a.host.clone()).or_insert_with(|| HostState::Failed {
            error: "not started: the run stopped at an earlier stage".into(),
            written: vec![],
        });
    }
}

/// Restores every file of the plan that still has its after-hash, latest stage first.
pub async fn rollback(plan: &Plan, hosts: &BTreeMap<String, Arc<AnyHost>>, opts: &Options, reporter: &dyn Reporter, journal: &Journal) -> Summary {
    let mut summary = Summary::default();
    let token = format!("rollback-{}-{}", plan.id, std::process::id());
    let jobs: Vec<_> = hosts.iter().map(|(n, h)| (n.clone(), h.clone())).collect();
    let (plan_c, state_dir, owner) = (Arc::new(plan.clone()), opts.state_dir.clone(), opts.owner.clone());
    let results = each(jobs, opts.parallel, move |(name, host)| {
        let (plan, state_dir, token, owner) = (plan_c.clone(), state_dir.clone(), token.clone(), owner.clone());
        async move {
            let (mut restored, mut already, mut changed, mut log) = (0, 0, Vec::new(), Vec::new());
            for stage in plan.stages.iter().rev() {
                let files: Vec<FileWrite> = plan
                    .edits()
                    .filter(|(a, _)| a.host == name && a.stage == stage.index)
                    .map(|(_, e)| file_write(e, e.after_size))
                    .collect();
                if files.is_empty() {
                    continue;
                }
                let reload = plan.actions.iter().find_map(|a| match &a.kind {
                    ActionKind::Reload { command } if a.host == name && a.stage == stage.index => Some(command.clone()),
                    _ => None,
                });
                let ps = format!("{}-{}", plan.id, stage.index);
                let s = script::rollback(&run_ids(&host, &state_dir, &ps, &token), &owner, &files, reload.as_deref());
                let out = host.run(&s, Vec::new()).await;
                let state = judge(&out, &files, HostState::Staged);
                let reports = out.as_ref().map(|o| script::parse_report(&o.stdout)).unwrap_or_default();
                for r in &reports {
                    let (i, word) = match r {
                        Report::Restored(i) => { restored += 1; (*i, "restored") }
                        Report::Already(i) => { already += 1; (*i, "unchanged-since") }
                        Report::Changed { file, .. } => { changed.push(files[*file].path.clone()); (*file, "changed-since") }
                        _ => continue,
                    };
                    log.push((files[i].clone(), word));
                }
                match state {
                    HostState::Staged | HostState::Refused { .. } => {}
                    other => return (name, other, log),
                }
            }
            (name, HostState::RolledBack { restored, already, changed }, log)
        }
    })
    .await;
    let time = jiff::Timestamp::now().to_string();
    for (name, state, log) in results {
        reporter.event(Event::Host { host: name.clone(), state: state.clone() });
        let entries: Vec<Entry> = log
            .into_iter()
            .map(|(f, word)| Entry {
                time: time.clone(),
                plan: plan.id.clone(),
                farm: plan.farm.name.clone(),
                host: name.clone(),
                path: f.path,
                before_sha256: f.after_sha256,
                after_sha256: f.before_sha256,
                outcome: word.into(),
                detail: "rollback".into(),
            })
            .collect();
        if let Err(e) = journal.record(&entries) {
            summary.journal_error = Some(e.to_string());
        }
        summary.hosts.insert(name, state);
    }
    reporter.finish();
    summary
}
