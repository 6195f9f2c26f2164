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
use crate::transport::{AnyHost, Host};
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
    Aborted,
    Failed { error: String, written: Vec<String> },
    RolledBack { restored: usize, already: usize, changed: Vec<String> },
}

impl HostState {
    pub fn is_final(&self) -> bool {
        !matches!(self, HostState::Staging | HostState::Staged | HostState::Switching)
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, HostState::Applied { .. } | HostState::Staged)
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
            HostState::Aborted => write!(f, "aborted, nothing written (other hosts failed)"),
            HostState::Failed { error, written } if written.is_empty() => write!(f, "failed, nothing written: {error}"),
            HostState::Failed { error, written } => write!(f, "failed after writing {}: {error}", written.join(", ")),
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
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.journal_error.is_none() && self.hosts.values().all(HostState::is_ok)
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

fn stage_work(plan: &Plan, stage: usize, contents: &Contents, skip: &BTreeMap<String, HostState>) -> Vec<HostStage> {
    let mut by_host: BTreeMap<&str, HostStage> = BTreeMap::new();
    for a in plan.actions.iter().filter(|a| a.stage == stage && !skip.contains_key(&a.host)) {
        let w = by_host.entry(&a.host).or_insert_with(|| HostStage { host: a.host.clone(), files: vec![], input: vec![], reload: None });
        match &a.kind {
            ActionKind::Edit(e) => {
                let bytes = &contents[&a.id];
                w.files.push(file_write(e, bytes.len()));
                w.input.extend_from_slice(bytes);
            }
            ActionKind::Reload { command } => w.reload = Some(command.clone()),
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
                HostState::Aborted => ("aborted", String::new()),
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

/// Applies `plan` (with its `contents`) to the connected `hosts`.
pub async fn execute(
    plan: &Plan,
    contents: &Contents,
    hosts: &BTreeMap<String, Arc<AnyHost>>,
    opts: &Options,
    reporter: &dyn Reporter,
    journal: &Journal,
) -> Summary {
    let mut summary = Summary::default();
    let token = format!("{}-{}-{}", plan.id, std::process::id(), jiff::Timestamp::now().as_nanosecond());
    let mut failures = 0usize;
    let total = plan.stages.len();
    for stage in &plan.stages {
        let work = stage_work(plan, stage.index, contents, &summary.hosts);
        if work.is_empty() {
            continue;
        }
        reporter.event(Event::Stage { index: stage.index, total, at: stage.at.clone(), hosts: work.len() });
        let plan_stage = format!("{}-{}", plan.id, stage.index);

        // 1. Stage every host: lock, compare-and-swap check, write dotfiles, back up.
        let jobs: Vec<_> = work
            .iter()
            .map(|w| (hosts[&w.host].clone(), w.host.clone(), w.files.clone(), w.input.clone()))
            .collect();
        let (state_dir, ps, tk, owner) = (opts.state_dir.clone(), plan_stage.clone(), token.clone(), opts.owner.clone());
        let staged = each(jobs, opts.parallel, move |(host, name, files, input)| {
            let (state_dir, ps, tk, owner) = (state_dir.clone(), ps.clone(), tk.clone(), owner.clone());
            async move {
                let s = script::stage(&run_ids(&host, &state_dir, &ps, &tk), &owner, &files);
                let out = host.run(&s, input).await;
                (name, judge(&out, &files, HostState::Staged))
            }
        })
        .await;
        let mut ready = Vec::new();
        for ((name, state), w) in staged.into_iter().zip(&work) {
            reporter.event(Event::Host { host: name.clone(), state: state.clone() });
            if state == HostState::Staged {
                ready.push(w);
            } else {
                failures += 1;
                let _ = journal.record(&entries(plan, &name, &w.files, &state)).map_err(|e| summary.journal_error = Some(e.to_string()));
                summary.hosts.insert(name, state);
            }
        }
        if failures > opts.max_fail {
            // All or nothing: remove every staged copy; no target was touched.
            let jobs: Vec<_> = ready.iter().map(|w| (hosts[&w.host].clone(), w.host.clone(), w.files.clone())).collect();
            let (state_dir, ps, tk) = (opts.state_dir.clone(), plan_stage.clone(), token.clone());
            each(jobs, opts.parallel, move |(host, _name, files)| {
                let (state_dir, ps, tk) = (state_dir.clone(), ps.clone(), tk.clone());
                async move { host.run(&script::abort(&run_ids(&host, &state_dir, &ps, &tk), &files), Vec::new()).await }
            })
            .await;
            for w in ready {
                reporter.event(Event::Host { host: w.host.clone(), state: HostState::Aborted });
                let _ = journal.record(&entries(plan, &w.host, &w.files, &HostState::Aborted));
                summary.hosts.insert(w.host.clone(), HostState::Aborted);
            }
            skip_rest(plan, stage.index, &mut summary);
            reporter.finish();
            return summary;
        }

        // 2. Wait for the switch time, holding the connections.
        if let Some(at) = &stage.at {
            wait_until(at, reporter).await;
        }

        // 3. Switch every ready host at once: re-check, rename, reload.
        let jobs: Vec<_> = ready
            .iter()
            .map(|w| (hosts[&w.host].clone(), w.host.clone(), w.files.clone(), w.reload.clone()))
            .collect();
        let (state_dir, ps, tk) = (opts.state_dir.clone(), plan_stage.clone(), token.clone());
        let switched = each(jobs, usize::MAX >> 4, move |(host, name, files, reload)| {
            let (state_dir, ps, tk) = (state_dir.clone(), ps.clone(), tk.clone());
            async move {
                let s = script::switch(&run_ids(&host, &state_dir, &ps, &tk), &files, reload.as_deref());
                let out = host.run(&s, Vec::new()).await;
                let first = out.as_ref().ok().and_then(|o| {
                    script::parse_report(&o.stdout).into_iter().find_map(|r| if let Report::Renamed { at_ns, .. } = r { Some(at_ns) } else { None })
                });
                (name, judge(&out, &files, HostState::Applied { files: files.len() }), first)
            }
        })
        .await;
        for ((name, state, first), w) in switched.into_iter().zip(&ready) {
            reporter.event(Event::Host { host: name.clone(), state: state.clone() });
            if let Err(e) = journal.record(&entries(plan, &name, &w.files, &state)) {
                summary.journal_error = Some(format!("{}: {e}", journal.path().display()));
            }
            if let Some(t) = first {
                summary.renames.entry(stage.index).or_default().insert(name.clone(), t);
            }
            if !matches!(state, HostState::Applied { .. }) {
                failures += 1;
            }
            summary.hosts.insert(name, state);
        }
        if failures > opts.max_fail {
            skip_rest(plan, stage.index, &mut summary);
            break;
        }
    }
    for a in &plan.actions {
        summary.hosts.entry(a.host.clone()).or_insert(HostState::Applied { files: 0 });
    }
    reporter.finish();
    summary
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
