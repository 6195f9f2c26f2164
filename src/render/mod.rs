//! Text, JSON and markdown views of a plan. Pure: each returns a String.

use crate::plan::{Action, ActionKind, HostStatus, Plan};
use std::fmt::Write;

mod markdown;
pub use markdown::{host_ranges, markdown, mermaid};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

pub fn render(plan: &Plan, format: Format, now: Option<jiff::Timestamp>, color: bool) -> String {
    match format {
        Format::Text => text(plan, now, color),
        Format::Json => plan.to_json(),
        // A comment posted in a pull request stays up for days: no relative times in it.
        Format::Markdown => markdown(plan, now.filter(|_| false)),
    }
}

/// "in 3h 2m" / "2m ago", relative to `now`.
pub fn relative(at: &str, now: jiff::Timestamp) -> String {
    let Ok(t) = at.parse::<jiff::Timestamp>() else { return String::new() };
    let secs = t.as_second() - now.as_second();
    let span = |s: i64| {
        let (d, h, m, s) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
        match (d, h, m) {
            (0, 0, 0) => format!("{s}s"),
            (0, 0, _) => format!("{m}m {s}s"),
            (0, _, _) => format!("{h}h {m}m"),
            _ => format!("{d}d {h}h"),
        }
    };
    if secs >= 0 {
        format!("in {}", span(secs))
    } else {
        format!("{} ago", span(-secs))
    }
}

fn stage_title(plan: &Plan, index: usize, at: Option<&str>, now: Option<jiff::Timestamp>) -> String {
    let n = if plan.stages.len() > 1 { format!("Stage {} of {}: ", index + 1, plan.stages.len()) } else { String::new() };
    match (at, now) {
        (Some(at), Some(now)) => format!("{n}switch at {at} ({})", relative(at, now)),
        (Some(at), None) => format!("{n}switch at {at}"),
        (None, _) => format!("{n}when applied"),
    }
}

/// "rollout of ivr to 5.2.0" for a stage of upgrades.
fn rollout_of(plan: &Plan, index: usize) -> Option<String> {
    plan.actions.iter().filter(|a| a.stage == index).find_map(|a| match &a.kind {
        ActionKind::Upgrade { role, to, .. } => Some(format!("rollout of {role} to {to}")),
        _ => None,
    })
}

fn paint(line: &str, color: bool) -> String {
    if !color {
        return line.to_string();
    }
    let code = if line.starts_with("+++") || line.starts_with("---") {
        "1"
    } else if line.starts_with('+') {
        "32"
    } else if line.starts_with('-') {
        "31"
    } else if line.starts_with("@@") {
        "36"
    } else {
        return line.to_string();
    };
    format!("\x1b[{code}m{line}\x1b[0m")
}

/// The one-line summary that ends every text plan.
pub fn summary(plan: &Plan) -> String {
    let changed = plan.count(|s| *s == HostStatus::Changed);
    let unchanged = plan.count(|s| *s == HostStatus::Unchanged);
    let unreachable = plan.count(|s| matches!(s, HostStatus::Unreachable { .. }));
    let failed = plan.count(|s| matches!(s, HostStatus::Failed { .. }));
    let mut s = format!(
        "Plan: {changed} host{} to change, {unchanged} unchanged, {unreachable} unreachable",
        if changed == 1 { "" } else { "s" }
    );
    if failed > 0 {
        write!(s, ", {failed} failed").unwrap();
    }
    write!(s, "; {} edit{}, {} reload{}", plan.edits().count(), plural(plan.edits().count()), plan.reloads(), plural(plan.reloads())).unwrap();
    let upgrades = plan.actions.iter().filter(|a| matches!(a.kind, ActionKind::Upgrade { .. })).count();
    if upgrades > 0 {
        write!(s, ", {upgrades} upgrade{}", plural(upgrades)).unwrap();
    }
    s.push('.');
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub fn text(plan: &Plan, now: Option<jiff::Timestamp>, color: bool) -> String {
    let mut s = String::new();
    writeln!(s, "farmctl plan {} for farm \"{}\" ({})", plan.id, plan.farm.name, plan.farm.path).unwrap();
    if !plan.limit.is_empty() {
        writeln!(s, "limited to: {}", plan.limit.join(",")).unwrap();
    }
    for stage in &plan.stages {
        let title = stage_title(plan, stage.index, stage.at.as_deref(), now);
        match rollout_of(plan, stage.index) {
            Some(r) => writeln!(s, "\n== {title}: {r}").unwrap(),
            None => writeln!(s, "\n== {title}").unwrap(),
        }
        let in_stage: Vec<&Action> = plan.actions.iter().filter(|a| a.stage == stage.index).collect();
        let mut host = "";
        for a in in_stage {
            match &a.kind {
                ActionKind::Edit(_) | ActionKind::Reload { .. } if a.host != host => {
                    host = &a.host;
                    writeln!(s, "\n{}", a.host).unwrap();
                }
                ActionKind::Gate { .. } | ActionKind::Retire { .. } => {
                    host = "";
                    s.push('\n');
                }
                ActionKind::Upgrade { .. } if host.is_empty() => {
                    host = "upgrades";
                    s.push('\n');
                }
                ActionKind::WaveGate { .. } | ActionKind::Judge { .. } => host = "",
                _ => {}
            }
            match &a.kind {
                ActionKind::Edit(e) => {
                    writeln!(s, "  ~ {}", e.path).unwrap();
                    for r in &e.reasons {
                        writeln!(s, "    because: {r}").unwrap();
                    }
                    for line in e.diff.lines() {
                        writeln!(s, "    {}", paint(line, color)).unwrap();
                    }
                }
                ActionKind::Reload { command } => writeln!(s, "  ↻ reload: {command}").unwrap(),
                _ => writeln!(s, "{}", describe(a)).unwrap(),
            }
        }
    }
    if !plan.notes.is_empty() {
        s.push_str("\nNotes:\n");
        plan.notes.iter().for_each(|n| writeln!(s, "  - {n}").unwrap());
    }
    let failed = plan.failed_hosts();
    if !failed.is_empty() {
        s.push_str("\nNot planned:\n");
        for (h, e) in failed {
            writeln!(s, "  ! {h}: {}", e.replace('\n', "\n    ")).unwrap();
        }
    }
    if plan.actions.is_empty() {
        // "No changes" only when every host was read and none has a change.
        if !plan.failed_hosts().is_empty() {
            s.push_str("\nNo changes on the hosts that were read; the hosts that could not be read are unknown.\n");
        } else if !plan.limit.is_empty() {
            s.push_str("\nNo changes on the hosts selected by --limit; hosts outside it were not read.\n");
        } else {
            s.push_str("\nNo changes. The farm matches the farm file.\n");
        }
    }
    writeln!(s, "\n{}", summary(plan)).unwrap();
    s
}

/// One line for a gate or a retire.
pub fn describe(a: &Action) -> String {
    match &a.kind {
        ActionKind::Gate { command: Some(c) } => format!("? {} must be ready before clients switch to it: health `{c}`", a.host),
        ActionKind::Gate { command: None } => format!("? {} must be reachable before clients switch to it", a.host),
        ActionKind::Retire { replaced_by, command: Some(c) } => {
            format!("- {} is retired (replaced by {replaced_by}; no host refers to it): `{c}`", a.host)
        }
        ActionKind::Retire { replaced_by, command: None } => {
            format!("- {} is retired (replaced by {replaced_by}; no host refers to it)", a.host)
        }
        ActionKind::Edit(e) => format!("~ {}:{}", a.host, e.path),
        ActionKind::Reload { command } => format!("reload {}: {command}", a.host),
        ActionKind::Upgrade { role, from, to, command, .. } => format!("  ↑ {} ({role}): {from} -> {to}: `{command}`", a.host),
        ActionKind::WaveGate { wave, hosts, health, metrics, conditions, samples, failure_limit, interval_ms, timeout_ms, max_unavailable, .. } => format!(
            "  ? {wave} gate: {} healthy sample(s) in a row every {} ms within {} ms on {} (`{health}`{}), failing at {failure_limit} failed in a row; at most {max_unavailable} down at once{}",
            samples,
            interval_ms,
            timeout_ms,
            hosts.join(", "),
            conditions.iter().map(|c| format!(" and `{c}`")).collect::<String>(),
            queries_text(metrics.as_ref(), hosts)
        ),
        ActionKind::Judge { canary, baseline, window_ms, interval_ms, join, confidence, metrics, .. } => format!(
            "\n  ⚖ {canary} serves mirrored work for {} ms, sampled every {} ms with the active members ({}); it joins only if {}{}; otherwise it leaves the shadow and goes back{}",
            window_ms,
            interval_ms,
            baseline.join(", "),
            join.iter().map(|j| format!("`{j}`")).collect::<Vec<_>>().join(" and "),
            confidence.map(|c| format!(", and no metric is worse by a Mann-Whitney test at {c}")).unwrap_or_default(),
            queries_text(metrics.as_ref(), &std::iter::once(canary.clone()).chain(baseline.iter().cloned()).collect::<Vec<_>>())
        ),
    }
}

/// A gate's Prometheus queries for review, host by host.
fn queries_text(metrics: Option<&crate::plan::Queries>, hosts: &[String]) -> String {
    let Some(m) = metrics else { return String::new() };
    let mut out = format!("\n      metrics from {}:", m.prometheus);
    for h in hosts {
        for (name, q) in m.by_host.get(h).into_iter().flatten() {
            out.push_str(&format!("\n        {h} {name} = {q}"));
        }
    }
    out
}

/// Text safe inside a markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The plan's dependency graph as Graphviz DOT: one node per action.
pub fn dot(plan: &Plan) -> String {
    use petgraph::dot::{Config, Dot};
    let mut g = petgraph::graph::DiGraph::<String, String>::new();
    let mut index = std::collections::BTreeMap::new();
    for a in &plan.actions {
        let what = match &a.kind {
            ActionKind::Edit(e) => format!("edit {}:{}", a.host, e.path),
            ActionKind::Reload { .. } => format!("reload {}", a.host),
            ActionKind::Gate { .. } => format!("{} ready", a.host),
            ActionKind::Retire { .. } => format!("retire {}", a.host),
            ActionKind::Upgrade { from, to, .. } => format!("upgrade {} {from} -> {to}", a.host),
            ActionKind::WaveGate { role, wave, .. } => format!("{role} {wave} healthy"),
            ActionKind::Judge { canary, .. } => format!("judge shadow {canary}"),
        };
        let when = a.at.as_deref().map(|t| format!("\nat {t}")).unwrap_or_default();
        index.insert(a.id.as_str(), g.add_node(format!("{what}{when}")));
    }
    for a in &plan.actions {
        for d in &a.depends_on {
            if let (Some(&from), Some(&to)) = (index.get(d.as_str()), index.get(a.id.as_str())) {
                g.add_edge(from, to, String::new());
            }
        }
    }
    format!("{}", Dot::with_config(&g, &[Config::EdgeNoLabel]))
}
