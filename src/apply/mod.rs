//! Executes a Plan through `transport`: stage every host, then switch them
//! together, stage by stage. Records each write in the journal and reports
//! progress through the [`Reporter`] trait.
//!
//! Nothing is renamed into place until every host of a stage has staged its
//! new content (compare-and-swap checked, fsynced, backed up). If more hosts
//! fail than `max_fail` allows, the staged copies are removed everywhere and
//! no target file is touched. Each node kind runs in exactly one place:
//! edits and reloads in `switch`, gates and retires in `commands`, upgrades
//! and wave gates in `rollout`, shadow judgements in `shadow`.

mod commands;
mod detach;
mod health;
pub mod journal;
mod outcome;
mod owner;
pub mod progress;
mod rollback;
mod rollout;
mod shadow;
mod switch;

pub(crate) use outcome::and_said;
pub use outcome::{AbortReason, Failure, HostFailure, HostState, NotStarted};
pub use owner::{LockOwner, NotAnOwner};
pub use rollback::{rollback, undo_upgrades};
pub use detach::lock_is_stale;

use crate::live::Clock;
use crate::plan::{ActionKind, Contents, Edit, Plan};
use crate::transport::{FileWrite, Pool, TransportError, WriteReport};
use journal::{Entry, FileOutcome, Journal, Record};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Options {
    /// Turns true when the operator interrupts (SIGINT, SIGTERM): every host
    /// not yet switched is told to abort, and no later stage starts.
    pub interrupted: tokio::sync::watch::Receiver<bool>,
    pub parallel: usize,
    /// How many hosts may fail before the run stops (and, while staging, aborts everywhere).
    pub max_fail: usize,
    /// Written into each host lock, so that a second operator is told who holds it.
    pub owner: LockOwner,
    pub state_dir: String,
    /// Arm a timer on each host for timed stages instead of waiting here.
    pub detach: bool,
    /// A watcher's failover: its service and lease epoch, which each host
    /// checks before it writes (a watcher whose lease is gone is refused).
    pub fence: Option<(String, u64)>,
    /// Who fires a scheduled switch.
    pub switch_by: SwitchBy,
}

/// Who fires a scheduled switch (`apply --switch-by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchBy {
    /// Each host renames at T by its own clock. The workstation asks every
    /// host to check, [`SwitchBy::lead`] before T, and once all have answered
    /// tells each `at T`. The skew is then the clocks' error, not the network's.
    /// `one_way`: the slowest host's one-way delay, as the read measured it.
    /// `max_offset`: a host whose clock is further off this workstation's, as
    /// its answer to the check measures it, does not switch. `hosts`: how many
    /// switch; this workstation sends each its words through its own `ssh`.
    HostClock {
        one_way: Duration,
        max_offset: Duration,
        hosts: usize,
    },
    /// The workstation says `go` down every session at T: hosts switch one
    /// network delay after T, each its own.
    Workstation,
}

impl SwitchBy {
    pub fn max_offset_ms(self) -> i64 {
        match self {
            SwitchBy::HostClock { max_offset, .. } => max_offset.as_millis() as i64,
            SwitchBy::Workstation => i64::MAX,
        }
    }

    /// How long before T the hosts are asked to check: time for the check's
    /// round trip, the `at` word's way out, and a margin for a loaded host.
    pub fn lead(self) -> Duration {
        match self {
            SwitchBy::HostClock { one_way, hosts, .. } => (one_way * 6 + Duration::from_millis(700 + 15 * hosts as u64)).min(Duration::from_secs(30)),
            SwitchBy::Workstation => Duration::ZERO,
        }
    }

    /// How long before T every answer must be in, so that `at T` reaches the
    /// slowest host, and it has looked at its files and started the process
    /// that renames them, before T. A host that has not answered by then does
    /// not switch. The words go out one `ssh` after another: a few ms a host.
    pub fn answers_by(self) -> Duration {
        match self {
            SwitchBy::HostClock { one_way, hosts, .. } => (one_way * 2 + Duration::from_millis(300 + 8 * hosts as u64)).min(Duration::from_secs(15)),
            SwitchBy::Workstation => Duration::ZERO,
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
    /// Each host's clock as measured by its check right before a switch by the hosts' clocks.
    pub clocks: BTreeMap<String, Clock>,
    pub journal_error: Option<String>,
    /// Failures that leave every file in place (a retire command, say).
    pub problems: Vec<String>,
    /// Work the run deliberately left for later (a retire after a detached switch).
    pub deferred: Vec<String>,
    /// The gate whose failure stopped the run, if one did.
    pub stopped_by_gate: Option<String>,
    /// The operator interrupted the run.
    pub interrupted: bool,
    /// Where each host of a rollout ended, by host (beside its file edits in `hosts`).
    pub upgrades: BTreeMap<String, HostState>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.journal_error.is_none() && self.problems.is_empty() && self.hosts.values().chain(self.upgrades.values()).all(HostState::is_ok)
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
    let failed = |h: &str| skip.get(h).is_some_and(|s| !matches!(s, HostState::Applied { .. }));
    let ids: Vec<String> = plan.actions.iter().filter(|a| a.stage == stage && a.level == level && !failed(&a.host)).map(|a| a.id.clone()).collect();
    work_for(plan, &ids, contents)
}

/// The writes of exactly these edit and reload actions, host by host.
fn work_for(plan: &Plan, ids: &[String], contents: &Contents) -> Vec<HostStage> {
    let ids: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut by_host: BTreeMap<&str, HostStage> = BTreeMap::new();
    for a in plan.actions.iter().filter(|a| ids.contains(a.id.as_str())) {
        let w = by_host.entry(&a.host).or_insert_with(|| HostStage { host: a.host.clone(), files: vec![], input: vec![], reload: None });
        match &a.kind {
            ActionKind::Edit(e) => {
                let bytes = &contents[&a.id];
                w.files.push(file_write(e, bytes.len()));
                w.input.extend_from_slice(bytes);
            }
            ActionKind::Reload { command } => w.reload = Some(command.clone()),
            _ => {}
        }
    }
    by_host.into_values().filter(|w| !w.files.is_empty()).collect()
}

fn file_write(e: &Edit, len: usize) -> FileWrite {
    FileWrite { path: e.path.clone(), before_sha256: e.before_sha256.clone(), after_sha256: e.after_sha256.clone(), len }
}

/// Why a retire did not run, and what is left to the operator: a later plan
/// has a retire only while some client still has to switch away from it.
fn not_retired(retire: &crate::plan::Action, why: &str) -> String {
    let old = &retire.host;
    match &retire.kind {
        ActionKind::Retire { command: Some(_), .. } => format!("{old} is not retired: {why} (a later apply retires it only if a client is still left to switch; once none is, run its role's `retire` on it yourself)"),
        _ => format!("{old} is not retired: {why}"),
    }
}

/// Turns what a stage/switch script reported into a host state.
fn judge(out: &Result<WriteReport, TransportError>, success: HostState) -> HostState {
    let r = match out {
        Ok(r) => r,
        Err(e) => return HostState::failed_for(e.clone()),
    };
    // Files put back from their backups after a later rename failed are as before.
    let renamed: Vec<String> = r.renamed.iter().map(|(p, _)| p.clone()).filter(|p| !r.restored.contains(p)).collect();
    if let Some(holder) = &r.locked_by {
        return HostState::Locked { holder: holder.clone() };
    }
    if !r.changed.is_empty() {
        return HostState::Refused { changed: r.changed.clone() };
    }
    if let Some(e) = &r.error {
        let error = if r.restored.is_empty() { e.clone() } else { format!("{e}; put back as before from the backups: {}", r.restored.join(", ")) };
        return HostState::Failed { why: Failure::Host { error, cause: r.cause }, written: renamed };
    }
    if !r.finished {
        return HostState::Failed { why: Failure::Host { error: format!("the host's script stopped early (exit {}){}", r.exit, outcome::and_said(&r.stderr)), cause: None }, written: renamed };
    }
    if let Some(reload) = r.reload.as_ref().filter(|c| c.status != 0) {
        return HostState::ReloadFailed { status: reload.status, output: reload.output.clone(), files: renamed };
    }
    match success {
        HostState::Applied { .. } => HostState::Applied { files: renamed },
        other => other,
    }
}

fn entries(plan: &Plan, host: &str, files: &[FileWrite], outcome: &HostState) -> Vec<Entry> {
    let time = jiff::Timestamp::now().to_string();
    files
        .iter()
        .map(|f| {
            let (outcome, detail) = match outcome {
                s if s.written().contains(&f.path) => (FileOutcome::Written, if matches!(s, HostState::Applied { .. }) { String::new() } else { s.to_string() }),
                HostState::Refused { changed } if changed.contains(&f.path) => (FileOutcome::Refused, "changed since the plan".into()),
                HostState::Aborted { why } => (FileOutcome::Aborted, why.to_string()),
                HostState::NotStarted { .. } => (FileOutcome::NotReached, outcome.to_string()),
                HostState::Armed { at } => (FileOutcome::Armed, format!("switches at {at}")),
                _ => (FileOutcome::NotWritten, outcome.to_string()),
            };
            let record = Record::File { path: f.path.clone(), before_sha256: f.before_sha256.clone(), after_sha256: f.after_sha256.clone(), outcome };
            Entry { time: time.clone(), ..Entry::now(&plan.id, &plan.farm.name, host, record, detail) }
        })
        .collect()
}

fn record(journal: &Journal, summary: &mut Summary, entries: Vec<Entry>) {
    if let Err(e) = journal.record(&entries) {
        summary.journal_error = Some(format!("{}: {e}", journal.path().display()));
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

/// Waits until `early` before `at`, reporting a countdown to `at` every few
/// seconds. Returns false if the operator interrupted the wait.
async fn wait_until(
    at: &str,
    early: Duration,
    reporter: &dyn Reporter,
    interrupted: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let Ok(t) = at.parse::<jiff::Timestamp>() else {
        return true;
    };
    loop {
        if *interrupted.borrow() {
            return false;
        }
        let remaining_ms =
            t.as_millisecond() - early.as_millis() as i64 - jiff::Timestamp::now().as_millisecond();
        if remaining_ms <= 0 {
            return true;
        }
        let remaining = Duration::from_millis(remaining_ms as u64);
        reporter.event(Event::Countdown {
            at: at.to_string(),
            remaining: remaining + early,
        });
        let step = if remaining > Duration::from_secs(60) {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(5)
        };
        // The last stretch: one precise sleep, so every host's switch is sent at T.
        let last = remaining <= step + Duration::from_millis(200);
        let nap = if last { remaining } else { step };
        tokio::select! {
            _ = tokio::time::sleep(nap) => if last { return !*interrupted.borrow() },
            _ = interrupted.changed() => {}
        }
    }
}

/// What every level of one stage of a run shares.
#[derive(Clone, Copy)]
struct Level<'a> {
    plan: &'a Plan,
    stage: &'a crate::plan::Stage,
    opts: &'a Options,
    /// Names this run's backups, staged copies and jobs on the hosts.
    run_id: &'a crate::plan::RunId,
    token: &'a str,
    reporter: &'a dyn Reporter,
    journal: &'a Journal,
}

/// What runs one level of a stage. Chosen here and only here, by the apply
/// and by the rollout stage alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Executor {
    /// Upgrades in batches, then the wave's gate (`apply/rollout.rs`).
    Wave,
    /// A shadow canary's judgement, and its branch (`apply/shadow.rs`).
    Judge,
    /// The edits that take a shadow canary in or out (`apply/shadow.rs`).
    ShadowEdits,
    /// Staged files switched together, at the stage's time or now (`apply/switch.rs`).
    Switch,
    /// Staged files armed for a job on each host (`apply/detach.rs`).
    Detach,
}

impl Executor {
    /// Whether the level belongs to a rollout stage, which runs level by level.
    fn is_rollout(self) -> bool {
        matches!(self, Executor::Wave | Executor::Judge | Executor::ShadowEdits)
    }
}

/// The executor of `level` of `stage`. A stage with upgrades or wave gates is
/// a rollout (it may hold gates alone: a rollout killed during its last gate
/// is gated again); its other levels are a judgement or a shadow's edits.
fn executor(plan: &Plan, stage: usize, level: usize, detached: bool) -> Executor {
    let in_stage = || plan.actions.iter().filter(|a| a.stage == stage);
    let in_level = || in_stage().filter(|a| a.level == level);
    if in_level().any(|a| matches!(a.kind, ActionKind::WaveGate { .. } | ActionKind::Upgrade { .. })) {
        Executor::Wave
    } else if in_level().any(|a| matches!(a.kind, ActionKind::Judge { .. })) {
        Executor::Judge
    } else if in_stage().any(|a| matches!(a.kind, ActionKind::WaveGate { .. } | ActionKind::Upgrade { .. })) {
        Executor::ShadowEdits
    } else if detached {
        Executor::Detach
    } else {
        Executor::Switch
    }
}

/// Applies `plan` (with its `contents`) through `conns`.
pub async fn execute(plan: &Plan, contents: &Contents, conns: &mut Pool, opts: &Options, reporter: &dyn Reporter, journal: &Journal) -> Summary {
    let mut summary = Summary::default();
    let token = format!("{}-{}-{}", plan.id, std::process::id(), jiff::Timestamp::now().as_nanosecond());
    let mut failures = 0usize;
    let total = plan.stages.len();
    'stages: for stage in &plan.stages {
        if *opts.interrupted.borrow() {
            summary.interrupted = true;
            break;
        }
        let levels: std::collections::BTreeSet<usize> = plan.actions.iter().filter(|a| a.stage == stage.index).map(|a| a.level).collect();
        // Hosts the stage writes, upgrades or gates.
        let hosts_in_stage = plan
            .actions
            .iter()
            .filter(|a| a.stage == stage.index)
            .flat_map(|a| match &a.kind {
                ActionKind::Edit(_) | ActionKind::Upgrade { .. } => vec![&a.host],
                ActionKind::WaveGate { hosts, .. } => hosts.iter().collect(),
                _ => Vec::new(),
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        reporter.event(Event::Stage { index: stage.index, total, at: stage.at.clone(), hosts: hosts_in_stage });
        let run_id = crate::plan::RunId::switch(&plan.id, stage.index);
        let detached = opts.detach && stage.at.is_some();
        let run = Level { plan, stage, opts, run_id: &run_id, token: &token, reporter, journal };
        let gates_of = |level: usize| -> Vec<&crate::plan::Action> {
            plan.actions.iter().filter(|a| a.stage == stage.index && a.level == level && matches!(a.kind, ActionKind::Gate { .. })).collect()
        };
        let flow = if levels.iter().any(|&l| executor(plan, stage.index, l, detached).is_rollout()) {
            rollout::run_stage(&run, conns, &mut summary, contents).await
        } else if detached {
            // `detach_problem` allows one level only: there is no workstation between levels.
            let mut flow = std::ops::ControlFlow::Continue(());
            for &level in &levels {
                let work = stage_work(plan, stage.index, level, contents, &summary.hosts);
                flow = detach::detach_level(&run, &work, gates_of(level), conns, &mut summary, &mut failures).await;
                if flow.is_break() {
                    break;
                }
            }
            flow
        } else {
            let work: Vec<switch::LevelWork> = levels.iter().map(|&level| switch::LevelWork { work: stage_work(plan, stage.index, level, contents, &summary.hosts), gates: gates_of(level) }).collect();
            switch::switch_stage(&run, work, conns, &mut summary, &mut failures).await
        };
        // An interrupt that came after the stage's switch (during its reloads, say).
        summary.interrupted |= *opts.interrupted.borrow();
        if flow.is_break() {
            // The retires of this stage and the ones after it never run: said so.
            for a in plan.actions.iter().filter(|a| a.stage >= stage.index && matches!(a.kind, ActionKind::Retire { .. })) {
                let why = if summary.interrupted { "the run was interrupted" } else { "the run stopped before its retire" };
                summary.problems.push(not_retired(a, why));
            }
            break 'stages;
        }
        // Retire the hosts nothing refers to any more; a detached switch has not happened yet.
        let retires: Vec<_> = plan.actions.iter().filter(|a| a.stage == stage.index && matches!(a.kind, ActionKind::Retire { .. })).collect();
        if detached {
            for a in retires {
                summary.deferred.push(format!("{} is not retired yet: it can be retired once the switch at {} has fired everywhere", a.host, stage.at.as_deref().unwrap_or("?")));
            }
        } else {
            let mut safe = Vec::new();
            for a in retires {
                let interrupted = *opts.interrupted.borrow();
                summary.interrupted |= interrupted;
                let why = commands::retire_blockers(plan, stage.index, &a.host, conns, &summary, interrupted).await;
                if why.is_empty() {
                    safe.push(a);
                } else {
                    summary.problems.push(not_retired(a, &why.join("; ")));
                }
            }
            for (id, r) in commands::run_commands(conns, safe, reporter).await {
                if let Err(e) = r {
                    summary.problems.push(format!("{id}: {e}"));
                }
            }
        }
    }
    // Hosts the run never reached: said so, and journaled as such.
    let mut unreached: BTreeMap<&str, Vec<FileWrite>> = BTreeMap::new();
    for (a, e) in plan.edits().filter(|(a, _)| !summary.hosts.contains_key(&a.host)) {
        unreached.entry(&a.host).or_default().push(file_write(e, e.after_size));
    }
    let why = match (&summary.stopped_by_gate, summary.interrupted) {
        (_, true) => NotStarted::Interrupted,
        (Some(g), _) => NotStarted::NotReady(g.clone()),
        (None, _) => NotStarted::EarlierFailure,
    };
    for a in plan.actions.iter().filter(|a| matches!(a.kind, ActionKind::Upgrade { .. })) {
        summary.upgrades.entry(a.host.clone()).or_insert_with(|| HostState::NotStarted { why: why.clone() });
    }
    for (host, files) in unreached {
        let why = match (&summary.stopped_by_gate, summary.interrupted) {
            (_, true) => NotStarted::Interrupted,
            (Some(g), _) => NotStarted::NotReady(g.clone()),
            (None, _) => NotStarted::EarlierFailure,
        };
        let state = HostState::NotStarted { why };
        record(journal, &mut summary, entries(plan, host, &files, &state));
        summary.hosts.insert(host.to_string(), state);
    }
    reporter.finish();
    summary
}
