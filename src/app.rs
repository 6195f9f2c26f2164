//! The commands: each wires farm, transport, plan, apply and render together.
//! Prints results on stdout, progress and errors on stderr; returns the exit code.

use crate::apply::{self, journal::Journal, HostState, Summary};
use crate::farm::{self, Farm};
use crate::live::LiveFarm;
use crate::plan::{self, Plan, Planned};
use crate::render::{self, Format};
use crate::transport::{self, AnyHost, Host};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// An error for the operator: what went wrong, and what to do about it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Failure { message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<farm::FarmError> for Failure {
    fn from(e: farm::FarmError) -> Self {
        match e {
            farm::FarmError::Read { .. } => Failure::new(e.to_string()).hint("check the path to the farm file"),
            farm::FarmError::Invalid(_) => Failure::new(e.to_string()),
        }
    }
}

impl From<plan::graph::Cycle> for Failure {
    fn from(e: plan::graph::Cycle) -> Self {
        Failure::new(e.to_string()).hint("break the circle in the farm file's replacements")
    }
}

pub type Outcome = Result<ExitCode, Failure>;

pub const EXIT_CHANGES: u8 = 2;

/// Connects to and reads every host in `names`, at most `parallel` at a time.
pub async fn read_hosts(farm: &Arc<Farm>, names: &[String], parallel: usize) -> (LiveFarm, BTreeMap<String, Arc<AnyHost>>) {
    let paths: Arc<BTreeMap<String, Vec<String>>> =
        Arc::new(farm.roles.iter().map(|(n, r)| (n.clone(), r.files.clone())).collect());
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for name in names {
        let (farm, gate, name, paths) = (farm.clone(), gate.clone(), name.clone(), paths.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let host = match transport::connect(&farm, &name).await {
                Ok(h) => Arc::new(h),
                Err(e) => return (name, Err(format!("{e}\nhint: {}", e.hint())), None),
            };
            let files = &paths[&farm.hosts[&name].role];
            let state = host.read_state(files).await;
            (name, state, Some(host))
        });
    }
    let (mut live, mut hosts) = (LiveFarm::new(), BTreeMap::new());
    while let Some(r) = set.join_next().await {
        let (name, state, host) = r.expect("read task panicked");
        live.insert(name.clone(), state);
        if let Some(h) = host {
            hosts.insert(name, h);
        }
    }
    (live, hosts)
}

fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn unreachable_failure(plan: &Plan) -> Option<Failure> {
    let failed = plan.failed_hosts();
    if failed.is_empty() {
        return None;
    }
    let mut lines = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    for (host, error) in &failed {
        let (what, hint) = match error.split_once("\nhint: ") {
            Some((w, h)) => (w, Some(h)),
            None => (*error, None),
        };
        lines.push(format!("  {host}: {}", what.replace('\n', " ")));
        if let Some(h) = hint.filter(|h| !hints.iter().any(|x| x == h)) {
            hints.push(h.to_string());
        }
    }
    if failed.len() < plan.hosts.len() {
        let excl: Vec<String> = failed.iter().map(|(n, _)| format!("!{n}")).collect();
        hints.push(format!("to go ahead without them, pass --limit '{}'", excl.join(",")));
    }
    let n = failed.len();
    let mut f = Failure::new(format!("{n} host{} could not be planned:\n{}", if n == 1 { "" } else { "s" }, lines.join("\n")));
    if !hints.is_empty() {
        f = f.hint(hints.join("\nhint: "));
    }
    Some(f)
}

/// Connects to every host of `names`; any that cannot be reached is an error naming it.
async fn connect_hosts(farm: &Arc<Farm>, names: &[String], parallel: usize) -> Result<BTreeMap<String, Arc<AnyHost>>, Failure> {
    let mut hosts = BTreeMap::new();
    let mut down = Vec::new();
    for (name, r) in transport::connect_all(farm, names, parallel).await {
        match r {
            Ok(h) => {
                hosts.insert(name, h);
            }
            Err(e) => down.push(format!("{name}: {e}")),
        }
    }
    if !down.is_empty() {
        return Err(Failure::new(format!("refusing to apply, nothing was written: cannot reach\n  {}", down.join("\n  "))).hint("fix the host, or make a new plan with --limit"));
    }
    Ok(hosts)
}

type Made = (Arc<Farm>, Planned, BTreeMap<String, Arc<AnyHost>>, LiveFarm);

/// Loads the farm, selects hosts, reads them and plans.
async fn make_plan_live(farm_path: &Path, limit: &[String], parallel: usize) -> Result<Made, Failure> {
    let farm = Arc::new(farm::load(farm_path)?);
    let scope = plan::select(&farm, limit).map_err(|e| Failure::new(e).hint("--limit takes host names, roles or globs; `!name` excludes"))?;
    let (live, hosts) = read_hosts(&farm, &scope, parallel).await;
    let planned = plan::plan(&farm, &live, &scope, limit)?;
    Ok((farm, planned, hosts, live))
}

fn write_atomic(path: &Path, contents: &str) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::new(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(contents.as_bytes()).and_then(|_| f.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

pub async fn plan_cmd(farm_path: &Path, out: Option<&Path>, format: Format, detailed: bool, limit: &[String], parallel: usize) -> Outcome {
    let (farm, planned, _hosts, live) = make_plan_live(farm_path, limit, parallel).await?;
    let plan = planned.plan;
    print(&render::render(&plan, format, Some(jiff::Timestamp::now()), color()));
    if let Some(f) = unreachable_failure(&plan) {
        return Err(f);
    }
    warn_clocks(&farm, &live);
    if let Some(out) = out {
        write_atomic(out, &plan.to_json())?;
        let changed: Vec<String> = plan.edits().map(|(a, _)| a.host.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        crate::snapshot::save(&plan.id, &farm.sha256, &live, &changed);
        crate::say!("Saved plan {} to {}. Apply exactly this plan with: farmctl apply {}", plan.id, out.display(), out.display());
    }
    Ok(if detailed && plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS })
}

fn confirm(what: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(format!("refusing to {what} without confirmation: stdin is not a terminal")).hint("review the plan, then pass --yes"));
    }
    { use std::io::Write as _; let mut e = std::io::stderr(); let _ = write!(e, "\nDo you want to {what}? Only 'yes' will be accepted: "); let _ = e.flush(); }
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Failure::new(e.to_string()))?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(Failure::new(format!("{what}: cancelled, nothing was changed")))
    }
}

fn owner(plan: &Plan) -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host} pid={} plan={} since={}", std::process::id(), plan.id, jiff::Timestamp::now())
}

fn options(farm: &Farm, plan: &Plan, parallel: usize, max_fail: usize, detach: bool) -> apply::Options {
    apply::Options { parallel, max_fail, owner: owner(plan), state_dir: farm.state_dir.clone(), detach }
}

fn print_summary(what: &str, summary: &Summary, plan: &Plan) -> Outcome {
    let mut by_state: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (host, state) in &summary.hosts {
        let word = match state {
            HostState::Applied { .. } => "applied",
            HostState::Armed { .. } => "armed (switches on the host at its time)",
            HostState::RolledBack { changed, .. } if changed.is_empty() => "rolled back",
            HostState::RolledBack { .. } => "rolled back in part",
            HostState::ReloadFailed { .. } => "files in place, reload failed",
            HostState::Refused { .. } => "refused (changed since the plan)",
            HostState::Locked { .. } => "refused (locked by another apply)",
            HostState::Aborted { .. } => "aborted (nothing written)",
            HostState::Failed { written, .. } if written.is_empty() => "failed (nothing written)",
            HostState::Failed { .. } => "failed part-way",
            _ => "unfinished",
        };
        by_state.entry(word).or_default().push(host);
    }
    crate::say!("");
    for (word, hosts) in &by_state {
        crate::say!("{word}: {}", hosts.join(", "));
    }
    for (stage, renames) in &summary.renames {
        if let (Some(skew), Some(at)) = (summary.skew_ms(*stage), plan.stages.iter().find(|s| s.index == *stage).and_then(|s| s.at.as_ref())) {
            crate::say!("switch at {at}: skew {skew:.1} ms across {} host(s)", renames.len());
        }
    }
    for p in &summary.problems {
        crate::say!("problem: {p}");
    }
    if let Some(e) = &summary.journal_error {
        crate::say!("warning: could not write the journal: {e}");
    }
    if summary.ok() {
        crate::say!("{what} complete: {} host(s).", summary.hosts.len());
        return Ok(ExitCode::SUCCESS);
    }
    let problems: Vec<String> = summary.hosts.iter().filter(|(_, s)| !s.is_ok()).map(|(h, s)| format!("{h}: {s}")).collect();
    let not_ready = |s: &HostState| match s {
        HostState::Aborted { why } => why.contains("not ready"),
        HostState::Failed { error, .. } => error.contains("not ready"),
        _ => false,
    };
    let hint = if summary.hosts.values().any(not_ready) {
        "a host that clients would switch to is not ready (its role's `health` failed); fix it, then apply again"
    } else if summary.hosts.values().any(|s| matches!(s, HostState::Refused { .. })) {
        "someone changed a file since the plan: run `farmctl plan` again and review the new plan"
    } else if summary.hosts.values().any(|s| matches!(s, HostState::Locked { .. })) {
        "wait for the other apply to finish; if it died on another workstation, run `farmctl unlock FARM --limit HOST`"
    } else if summary.hosts.values().any(|s| matches!(s, HostState::ReloadFailed { .. })) {
        "the new files are in place; fix the service and reload it, or undo with `farmctl rollback PLAN.json`"
    } else {
        "files on hosts that were not switched are untouched; fix the cause and run apply again"
    };
    Err(Failure::new(format!("{what} did not complete:\n  {}", problems.join("\n  "))).hint(hint))
}

fn load_plan(path: &Path) -> Result<Plan, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::new(format!("cannot read plan {}: {e}", path.display())))?;
    let plan: Plan = serde_json::from_str(&text)
        .map_err(|e| Failure::new(format!("{}:{}:{}: not a farmctl plan: {e}", path.display(), e.line(), e.column())).hint("make one with `farmctl plan FARM -o PLAN.json`"))?;
    if plan.format_version != plan::FORMAT_VERSION {
        return Err(Failure::new(format!("{} is plan format {}; this farmctl reads format {}", path.display(), plan.format_version, plan::FORMAT_VERSION)));
    }
    Ok(plan)
}

/// The farm file a saved plan came from, checked against the plan's hash.
fn farm_of(plan: &Plan) -> Result<Farm, Failure> {
    let path = PathBuf::from(&plan.farm.path);
    let farm = farm::load(&path).map_err(|e| Failure::from(e).hint(format!("the plan was made from {}; run farmctl from the same directory", plan.farm.path)))?;
    if farm.sha256 != plan.farm.sha256 {
        return Err(Failure::new(format!("the plan no longer matches its farm file: {} changed since plan {} was made", plan.farm.path, plan.id))
            .hint("make a new plan with `farmctl plan` and review it"));
    }
    Ok(farm)
}

fn is_plan_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// How `apply` runs.
#[derive(Clone, Copy, Debug)]
pub struct ApplyFlags {
    pub yes: bool,
    pub detach: bool,
    pub max_fail: usize,
    pub parallel: usize,
}

fn check_schedule(plan: &Plan, detach: bool) -> Result<(), Failure> {
    if detach {
        if let Some(why) = apply::detach_problem(plan) {
            return Err(Failure::new(format!("cannot detach this plan: {why}")).hint("apply it without --detach, and keep this workstation running until the switch"));
        }
    }
    let now = jiff::Timestamp::now();
    for s in plan.stages.iter().filter(|s| s.actions.iter().any(|a| a.starts_with("edit:"))) {
        if let Some(at) = &s.at {
            if at.parse::<jiff::Timestamp>().is_ok_and(|t| t < now) {
                return Err(Failure::new(format!("the switch time {at} has passed ({}); refusing to switch late", render::relative(at, now)))
                    .hint("set a new `at` in the farm file (or remove it to switch when applied), then plan again"));
            }
        }
    }
    Ok(())
}

pub async fn apply_cmd(target: &Path, limit: &[String], flags: ApplyFlags) -> Outcome {
    if is_plan_file(target) {
        if !limit.is_empty() {
            return Err(Failure::new("--limit cannot narrow a saved plan: it applies exactly what it shows").hint("make a new plan with --limit"));
        }
        return apply_saved(target, flags).await;
    }
    let (farm, planned, hosts, live) = make_plan_live(target, limit, flags.parallel).await?;
    let plan = &planned.plan;
    print(&render::text(plan, Some(jiff::Timestamp::now()), color()));
    if let Some(f) = unreachable_failure(plan) {
        return Err(f);
    }
    warn_clocks(&farm, &live);
    if !plan.has_changes() {
        return Ok(ExitCode::SUCCESS);
    }
    check_schedule(plan, flags.detach)?;
    confirm("apply this plan", flags.yes)?;
    let mut conns = apply::Connections { farm: farm.clone(), hosts };
    let opts = options(&farm, plan, flags.parallel, flags.max_fail, flags.detach);
    let summary = apply::execute(plan, &planned.contents, &mut conns, &opts, &*apply::progress::reporter(), &Journal::open()).await;
    print_offsets(&summary, &live);
    print_summary("apply", &summary, plan)
}

/// Warns about hosts whose clocks are off by more than the farm's tolerance.
fn warn_clocks(farm: &Farm, live: &LiveFarm) {
    let tolerance = farm.clock_tolerance.as_millis() as i64;
    for (host, state) in live {
        if let Ok(s) = state {
            // Only what the measurement can vouch for: the offset is known to within half the round trip.
            if let Some(off) = s.clock_offset_ms.filter(|o| o.abs() - s.clock_uncertainty_ms > tolerance) {
                crate::say!(
                    "warning: {host}'s clock is {off:+} ms (±{} ms) off this workstation's (tolerance {tolerance} ms); a detached switch there fires that much off",
                    s.clock_uncertainty_ms
                );
            }
        }
    }
}

fn print_offsets(summary: &Summary, live: &LiveFarm) {
    if summary.renames.is_empty() {
        return;
    }
    let offsets: Vec<String> = summary
        .renames
        .values()
        .flat_map(|m| m.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|h| {
            let s = live.get(h)?.as_ref().ok()?;
            s.clock_offset_ms.map(|o| format!("{h} {o:+} ms (±{})", s.clock_uncertainty_ms))
        })
        .collect();
    if !offsets.is_empty() {
        crate::say!("host clock offsets against this workstation: {}", offsets.join(", "));
    }
}

/// Differences between a saved plan and one re-derived now, as "host:path: what".
fn drift(saved: &Plan, fresh: &Plan) -> Vec<String> {
    let fresh_edits: BTreeMap<&str, &plan::Edit> = fresh.edits().map(|(a, e)| (a.id.as_str(), e)).collect();
    let mut out = Vec::new();
    for (a, e) in saved.edits() {
        match fresh_edits.get(a.id.as_str()) {
            Some(f) if f.before_sha256 == e.before_sha256 && f.after_sha256 == e.after_sha256 => {}
            Some(_) => out.push(format!("{}:{}: the file changed since the plan", a.host, e.path)),
            None => out.push(format!("{}:{}: the planned edit no longer applies (the file changed, or is gone)", a.host, e.path)),
        }
    }
    let saved_ids: std::collections::BTreeSet<&str> = saved.actions.iter().map(|a| a.id.as_str()).collect();
    for (a, e) in fresh.edits().filter(|(a, _)| !saved_ids.contains(a.id.as_str())) {
        out.push(format!("{}:{}: the file changed since the plan and now needs an edit the plan does not show", a.host, e.path));
    }
    out
}

async fn apply_saved(path: &Path, flags: ApplyFlags) -> Outcome {
    let ApplyFlags { parallel, max_fail, detach, .. } = flags;
    let saved = load_plan(path)?;
    let farm = Arc::new(farm_of(&saved)?);
    if !saved.has_changes() {
        crate::say!("Plan {} has no changes; nothing to do.", saved.id);
        return Ok(ExitCode::SUCCESS);
    }
    let scope: Vec<String> = saved.hosts.iter().filter(|h| saved.edits().any(|(a, _)| a.host == h.name)).map(|h| h.name.clone()).collect();
    for h in &scope {
        if !farm.hosts.contains_key(h) {
            return Err(Failure::new(format!("plan names host {h}, which the farm file does not have")));
        }
    }
    // Right after `plan -o` on this workstation, what it read stands in for a second read:
    // every host still checks each file's before-hash when it stages.
    let (live, hosts) = match crate::snapshot::load(&saved.id, &farm.sha256) {
        Some(live) => (live, connect_hosts(&farm, &scope, parallel).await?),
        None => read_hosts(&farm, &scope, parallel).await,
    };
    let mut fresh = plan::plan(&farm, &live, &scope, &saved.limit)?;
    if let Some(f) = unreachable_failure(&fresh.plan) {
        return Err(Failure::new(format!("refusing to apply plan {}, nothing was written: {}", saved.id, f.message)).hint(f.hint.unwrap_or_default()));
    }
    let stale = drift(&saved, &fresh.plan);
    if !stale.is_empty() {
        return Err(Failure::new(format!("refusing to apply stale plan {}, nothing was written:\n  {}", saved.id, stale.join("\n  ")))
            .hint("run `farmctl plan` again and review the new plan"));
    }
    check_schedule(&saved, detach)?;
    warn_clocks(&farm, &live);
    // Apply the saved plan itself, with the contents just re-derived (each checked by its after-hash above).
    crate::say!("Applying plan {}: {}", saved.id, render::summary(&saved));
    let contents = std::mem::take(&mut fresh.contents);
    let mut conns = apply::Connections { farm: farm.clone(), hosts };
    let opts = options(&farm, &saved, parallel, max_fail, detach);
    let summary = apply::execute(&saved, &contents, &mut conns, &opts, &*apply::progress::reporter(), &Journal::open()).await;
    crate::snapshot::remove(&saved.id);
    print_offsets(&summary, &live);
    print_summary("apply", &summary, &saved)
}

pub fn show_cmd(path: &Path, format: Format) -> Outcome {
    let plan = load_plan(path)?;
    print(&render::render(&plan, format, Some(jiff::Timestamp::now()), color()));
    farm_of(&plan)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback_cmd(path: &Path, yes: bool, parallel: usize) -> Outcome {
    let plan = load_plan(path)?;
    let farm = Arc::new(farm::load(Path::new(&plan.farm.path))?);
    let scope: Vec<String> = plan.edits().map(|(a, _)| a.host.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    if scope.is_empty() {
        crate::say!("Plan {} has no edits; nothing to roll back.", plan.id);
        return Ok(ExitCode::SUCCESS);
    }
    crate::say!("Rollback of plan {} restores, on {} host(s), every file that still has the content the plan wrote:", plan.id, scope.len());
    for (a, e) in plan.edits() {
        crate::say!("  {}:{}", a.host, e.path);
    }
    confirm("roll back this plan", yes)?;
    let mut hosts = BTreeMap::new();
    let mut unreachable = Vec::new();
    for (name, r) in transport::connect_all(&farm, &scope, parallel).await {
        match r {
            Ok(h) => {
                hosts.insert(name, h);
            }
            Err(e) => unreachable.push(format!("{name}: {e}")),
        }
    }
    let summary = apply::rollback(&plan, &hosts, &options(&farm, &plan, parallel, 0, false), &*apply::progress::reporter(), &Journal::open()).await;
    if !unreachable.is_empty() {
        let _ = print_summary("rollback", &summary, &plan);
        return Err(Failure::new(format!("rollback could not reach: {}", unreachable.join("; "))).hint("run rollback again once the host is back; it only restores files that still have the plan's content"));
    }
    print_summary("rollback", &summary, &plan)
}

pub fn validate_cmd(path: &Path) -> Outcome {
    let farm = farm::load(path)?;
    println!(
        "{}: farm \"{}\" is valid: {} host(s), {} role(s), {} replacement(s)",
        path.display(),
        farm.name,
        farm.hosts.len(),
        farm.roles.len(),
        farm.replacements.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn journal_cmd(host: Option<&str>) -> Outcome {
    let journal = Journal::open();
    let entries = journal.read().map_err(|e| Failure::new(format!("cannot read {}: {e}", journal.path().display())))?;
    for e in entries.iter().filter(|e| host.is_none_or(|h| e.host == h)) {
        println!("{} {} {}:{} {} {}..{} {}", e.time, e.plan, e.host, e.path, e.outcome, &e.before_sha256[..12.min(e.before_sha256.len())], &e.after_sha256[..12.min(e.after_sha256.len())], e.detail);
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects to the selected hosts of a farm, reporting the ones it cannot reach.
async fn connect_selected(farm_path: &Path, limit: &[String], parallel: usize) -> Result<(Arc<Farm>, Vec<(String, Arc<AnyHost>)>, Vec<String>), Failure> {
    let farm = Arc::new(farm::load(farm_path)?);
    let scope = plan::select(&farm, limit).map_err(Failure::new)?;
    let (mut ok, mut down) = (Vec::new(), Vec::new());
    for (name, r) in transport::connect_all(&farm, &scope, parallel).await {
        match r {
            Ok(h) => ok.push((name, h)),
            Err(e) => down.push(format!("{name}: {e}")),
        }
    }
    Ok((farm, ok, down))
}

/// Runs one script on every host at once (built per host), and parses what each reported.
async fn run_everywhere(hosts: Vec<(String, Arc<AnyHost>)>, script_for: impl Fn(&str, &AnyHost) -> String) -> Vec<(String, Result<Vec<transport::script::Report>, String>)> {
    let mut set = tokio::task::JoinSet::new();
    for (name, host) in hosts {
        let s = script_for(&name, &host);
        set.spawn(async move {
            let r = host.run(&s, Vec::new()).await.map(|o| transport::script::parse_report(&o.stdout)).map_err(|e| e.to_string());
            (name, r)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task panicked"));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub async fn status_cmd(farm_path: &Path, limit: &[String], parallel: usize) -> Outcome {
    use transport::script::Report;
    let (farm, hosts, down) = connect_selected(farm_path, limit, parallel).await?;
    let state_dir = farm.state_dir.clone();
    let results = run_everywhere(hosts, |_, h| transport::script::status(h.root(), &state_dir)).await;
    let mut renames: BTreeMap<String, BTreeMap<String, i128>> = BTreeMap::new();
    let mut any = false;
    for (host, r) in &results {
        match r {
            Err(e) => println!("{host}: {e}"),
            Ok(reports) => {
                for rep in reports {
                    match rep {
                        Report::Job { id, state, at } => {
                            any = true;
                            println!("{host}: {id} {state} (switch at {at})");
                        }
                        Report::JobLog { id, line } => {
                            if let Some(t) = line.strip_prefix("RENAMED ").and_then(|l| l.split(' ').nth(1)).and_then(|t| t.parse::<i128>().ok()) {
                                let e = renames.entry(id.clone()).or_default().entry(host.clone()).or_insert(t);
                                *e = (*e).min(t);
                            } else {
                                println!("{host}: {id}: {line}");
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    if !any {
        println!("Nothing is armed or has fired on these hosts.");
    }
    for (id, times) in &renames {
        let (min, max) = (times.values().min().unwrap(), times.values().max().unwrap());
        println!("{id}: fired on {} host(s), skew {:.1} ms", times.len(), (max - min) as f64 / 1e6);
    }
    if !down.is_empty() {
        return Err(Failure::new(format!("could not reach:\n  {}", down.join("\n  "))));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel_cmd(farm_path: &Path, limit: &[String], parallel: usize) -> Outcome {
    use transport::script::Report;
    let (farm, hosts, down) = connect_selected(farm_path, limit, parallel).await?;
    let state_dir = farm.state_dir.clone();
    let results = run_everywhere(hosts, |_, h| transport::script::cancel(h.root(), &state_dir)).await;
    let (mut cancelled, mut fired) = (0, Vec::new());
    for (host, r) in &results {
        match r {
            Err(e) => println!("{host}: {e}"),
            Ok(reports) => {
                for rep in reports {
                    match rep {
                        Report::Cancelled(id) => {
                            cancelled += 1;
                            println!("{host}: cancelled {id}; its staged files are removed, nothing was switched");
                        }
                        Report::Fired(id) => {
                            fired.push(format!("{host} ({id})"));
                            println!("{host}: {id} had already fired");
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    println!("{cancelled} switch(es) cancelled.");
    if !down.is_empty() {
        return Err(Failure::new(format!("could not reach, so nothing was cancelled there:\n  {}", down.join("\n  "))).hint("run cancel again when the host is back; a switch armed there still fires"));
    }
    if !fired.is_empty() {
        return Err(Failure::new(format!("too late on {}: the switch had fired", fired.join(", "))).hint("undo it with `farmctl rollback PLAN.json`"));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn graph_cmd(farm_path: &Path, limit: &[String], parallel: usize) -> Outcome {
    let (_farm, planned, _hosts, _live) = make_plan_live(farm_path, limit, parallel).await?;
    if let Some(f) = unreachable_failure(&planned.plan) {
        return Err(f);
    }
    print(&render::dot(&planned.plan));
    Ok(ExitCode::SUCCESS)
}

pub async fn unlock_cmd(farm_path: &Path, yes: bool, limit: &[String], parallel: usize) -> Outcome {
    use transport::script::Report;
    let (farm, hosts, down) = connect_selected(farm_path, limit, parallel).await?;
    confirm("break the locks of these hosts (only do this when no apply is running)", yes)?;
    let state_dir = farm.state_dir.clone();
    let files = |name: &str| &farm.roles[&farm.hosts[name].role].files;
    let results = run_everywhere(hosts, |name, h| transport::script::unlock(h.root(), &state_dir, files(name))).await;
    let mut armed = Vec::new();
    for (host, r) in &results {
        match r {
            Err(e) => println!("{host}: {e}"),
            Ok(reports) => {
                let holder = reports.iter().find_map(|r| if let Report::Holder(h) = r { Some(h.clone()) } else { None });
                if reports.contains(&Report::Free) {
                    println!("{host}: not locked");
                } else if let Some(job) = reports.iter().find_map(|r| if let Report::ArmedJob(j) = r { Some(j.clone()) } else { None }) {
                    armed.push(host.clone());
                    println!("{host}: left locked: switch {job} is armed there");
                } else if reports.contains(&Report::Unlocked) {
                    println!("{host}: unlocked (was held by {})", holder.unwrap_or_default());
                }
            }
        }
    }
    if !armed.is_empty() {
        return Err(Failure::new(format!("{} still armed: {}", armed.len(), armed.join(", "))).hint("disarm with `farmctl cancel FARM` first"));
    }
    if !down.is_empty() {
        return Err(Failure::new(format!("could not reach:\n  {}", down.join("\n  "))));
    }
    Ok(ExitCode::SUCCESS)
}
