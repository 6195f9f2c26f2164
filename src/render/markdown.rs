//! The markdown view, for a pull request comment: the summary first and
//! whole, a Mermaid picture of the stages, one table row per distinct change
//! (hosts with the same change share it), and the diffs, grouped the same
//! way and shortened to fit GitHub's comment limit.

use super::{cell, rollout_of, stage_title, summary};
use crate::plan::rollout::natural;
use crate::plan::{Action, ActionKind, Plan};
use std::collections::BTreeMap;
use std::fmt::Write;

/// GitHub refuses comments over 65,536 characters; this leaves room for a bot's header.
pub const LIMIT: usize = 60_000;
/// Lines of one diff shown before it is cut.
const DIFF_LINES: usize = 60;
/// Hosts named in a summary line before the list is folded.
const HOSTS_SHOWN: usize = 8;

/// Host names in natural order, with runs of numbered names as ranges:
/// `ivr-1..ivr-180, web-a`.
pub fn host_ranges(hosts: &[&str]) -> String {
    let mut names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    natural(&mut names);
    names.dedup();
    let split = |n: &str| {
        let digits = n.len() - n.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (stem, num) = n.split_at(digits);
        (stem.to_string(), num.parse::<u64>().ok(), num.len())
    };
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let (stem, first, width) = split(&names[i]);
        let mut j = i;
        if let Some(first) = first {
            // The next name in the run, zero-padded as the first one is: c009, c010.
            while j + 1 < names.len() && names[j + 1] == format!("{stem}{:0width$}", first + (j + 1 - i) as u64) {
                j += 1;
            }
        }
        out.push(match j - i {
            0 => names[i].clone(),
            1 => format!("{}, {}", names[i], names[j]),
            _ => format!("{}..{}", names[i], names[j]),
        });
        i = j + 1;
    }
    out.join(", ")
}

/// "ivr-1..ivr-180 (180 hosts)", or the one host.
fn who(hosts: &[&str]) -> String {
    match hosts.len() {
        1 => hosts[0].to_string(),
        n => format!("{} ({n} hosts)", host_ranges(hosts)),
    }
}

/// An action's table row without its host: what and why.
fn row(a: &Action) -> (String, String) {
    match &a.kind {
        ActionKind::Edit(e) => (format!("edit `{}`", cell(&e.path)), cell(&e.reasons.join("; "))),
        ActionKind::Reload { command } => (format!("reload `{}`", cell(command)), "after its edits".into()),
        ActionKind::Gate { command } => (format!("gate{}", command.as_ref().map(|c| format!(" `{}`", cell(c))).unwrap_or_default()), "clients switch to it only when it is ready".into()),
        ActionKind::Retire { replaced_by, command } => (format!("retire{}", command.as_ref().map(|c| format!(" `{}`", cell(c))).unwrap_or_default()), format!("replaced by {replaced_by}; no host refers to it")),
        ActionKind::Upgrade { from, to, command, .. } => (format!("upgrade `{}`", cell(command)), format!("{} -> {}", cell(from), cell(to))),
        ActionKind::WaveGate { wave, samples, .. } => (format!("{wave} gate"), format!("{samples} healthy samples in a row before the next wave")),
        ActionKind::Judge { join, window_ms, .. } => (format!("shadow judgement over {window_ms} ms"), format!("joins only if {}", cell(&join.iter().map(ToString::to_string).collect::<Vec<_>>().join(" and ")))),
    }
}

/// Who a row is about: the host, or a wave's hosts, or the canary.
fn subject(a: &Action) -> Vec<&str> {
    match &a.kind {
        ActionKind::WaveGate { hosts, .. } => hosts.iter().map(String::as_str).collect(),
        ActionKind::Judge { canary, .. } => vec![canary.as_str()],
        _ => vec![a.host.as_str()],
    }
}

/// A diff with its `host:` prefixes taken out of the header, so that the
/// same change on two hosts compares equal.
fn neutral_diff(host: &str, diff: &str) -> String {
    diff.replacen(&format!("--- {host}:"), "--- ", 1).replacen(&format!("+++ {host}:"), "+++ ", 1)
}

/// Text safe inside a Mermaid label in double quotes.
fn label(s: &str) -> String {
    s.replace('"', "#quot;").replace('<', "#lt;").replace('>', "#gt;")
}

/// The plan as a Mermaid flowchart: stages in order with their times, and in
/// each the switches, waves, gates and judgements it makes.
pub fn mermaid(plan: &Plan) -> String {
    let mut s = String::from("```mermaid\nflowchart TD\n");
    let mut previous: Option<String> = None;
    for stage in &plan.stages {
        let sid = format!("s{}", stage.index);
        let title = stage_title(plan, stage.index, stage.at.as_deref(), None);
        let title = match rollout_of(plan, stage.index) {
            Some(r) => format!("{title}: {r}"),
            None => title,
        };
        writeln!(s, "  subgraph {sid}[\"{}\"]\n    direction TB", label(&title)).unwrap();
        let in_stage: Vec<&Action> = plan.actions.iter().filter(|a| a.stage == stage.index).collect();
        let mut steps: Vec<String> = Vec::new();
        let edits: Vec<&Action> = in_stage.iter().copied().filter(|a| matches!(a.kind, ActionKind::Edit(_))).collect();
        let gates: Vec<&str> = in_stage.iter().filter(|a| matches!(a.kind, ActionKind::Gate { .. })).map(|a| a.host.as_str()).collect();
        if !gates.is_empty() {
            steps.push(format!("ready: {}", host_ranges(&gates)));
        }
        let mut upgrades: Vec<&str> = Vec::new();
        for a in &in_stage {
            match &a.kind {
                ActionKind::Upgrade { .. } => upgrades.push(&a.host),
                ActionKind::WaveGate { wave, samples, .. } => {
                    steps.push(format!("{wave}: upgrade {}", host_ranges(&std::mem::take(&mut upgrades))));
                    steps.push(format!("{wave} gate: {samples} healthy samples"));
                }
                ActionKind::Judge { canary, window_ms, .. } => steps.push(format!("shadow: judge {canary} over {} s", window_ms / 1000)),
                _ => {}
            }
        }
        if !upgrades.is_empty() {
            steps.push(format!("upgrade {}", host_ranges(&upgrades)));
        }
        if !edits.is_empty() {
            let hosts: Vec<&str> = edits.iter().map(|a| a.host.as_str()).collect();
            let mut reasons: Vec<String> = edits.iter().flat_map(|a| if let ActionKind::Edit(e) = &a.kind { e.reasons.clone() } else { vec![] }).collect();
            reasons.sort();
            reasons.dedup();
            let what = if reasons.len() <= 3 { reasons.join("; ") } else { format!("{} changes", reasons.len()) };
            let distinct: std::collections::BTreeSet<&str> = hosts.iter().copied().collect();
            steps.push(format!("switch: {what}<br/>{} edit(s) on {} host(s)", edits.len(), distinct.len()));
        }
        let retires: Vec<&str> = in_stage.iter().filter(|a| matches!(a.kind, ActionKind::Retire { .. })).map(|a| a.host.as_str()).collect();
        if !retires.is_empty() {
            steps.push(format!("retire {}", host_ranges(&retires)));
        }
        for (i, step) in steps.iter().enumerate() {
            // Only "<br/>" of our own making stays markup.
            let text = label(&step.replace("<br/>", "\u{1}")).replace('\u{1}', "<br/>");
            writeln!(s, "    {sid}n{i}[\"{text}\"]").unwrap();
            if i > 0 {
                writeln!(s, "    {sid}n{} --> {sid}n{i}", i - 1).unwrap();
            }
        }
        s.push_str("  end\n");
        if let Some(p) = previous {
            writeln!(s, "  {p} --> {sid}").unwrap();
        }
        previous = Some(sid);
    }
    s.push_str("```\n");
    s
}

pub fn markdown(plan: &Plan, now: Option<jiff::Timestamp>) -> String {
    let mut s = String::new();
    writeln!(s, "### farmctl plan `{}` for farm `{}`\n", plan.id, plan.farm.name).unwrap();
    writeln!(s, "**{}**\n", summary(plan)).unwrap();
    if !plan.stages.is_empty() {
        s.push_str(&mermaid(plan));
        s.push('\n');
    }
    let failed = plan.failed_hosts();
    for (h, e) in &failed {
        writeln!(s, "- :warning: **{h}** not planned: {}", e.lines().next().unwrap_or("")).unwrap();
    }
    // A plan of many hosts can have many notes: the list is bounded.
    for n in plan.notes.iter().take(30) {
        writeln!(s, "- {}", cell(n)).unwrap();
    }
    if plan.notes.len() > 30 {
        writeln!(s, "- and {} more notes (`farmctl show PLAN.json` lists them all)", plan.notes.len() - 30).unwrap();
    }
    if !failed.is_empty() || !plan.notes.is_empty() {
        s.push('\n');
    }
    let mut diffs: Vec<(String, Vec<&str>, String, String)> = Vec::new();
    for stage in &plan.stages {
        let title = stage_title(plan, stage.index, stage.at.as_deref(), now);
        match rollout_of(plan, stage.index) {
            Some(r) => writeln!(s, "#### {title}: {r}\n").unwrap(),
            None => writeln!(s, "#### {title}\n").unwrap(),
        }
        s.push_str("| host | action | reason |\n|---|---|---|\n");
        // One row per distinct (action, reason), in plan order, with every host it concerns.
        let mut rows: Vec<((String, String), Vec<&str>)> = Vec::new();
        for a in plan.actions.iter().filter(|a| a.stage == stage.index) {
            let key = row(a);
            match rows.iter_mut().find(|(k, _)| *k == key) {
                Some((_, hosts)) => hosts.extend(subject(a)),
                None => rows.push((key, subject(a))),
            }
        }
        for ((what, why), hosts) in &rows {
            writeln!(s, "| {} | {what} | {why} |", cell(&who(hosts))).unwrap();
        }
        s.push('\n');
        // Diffs grouped by identical change.
        let mut groups: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
        let mut order: Vec<(String, String)> = Vec::new();
        for (a, e) in plan.edits().filter(|(a, _)| a.stage == stage.index) {
            let key = (e.path.clone(), neutral_diff(&a.host, &e.diff));
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(&a.host);
        }
        for key in order {
            let hosts = groups.remove(&key).unwrap_or_default();
            diffs.push((title.clone(), hosts, key.0, key.1));
        }
    }
    let shown = diffs.len();
    let mut left_out = 0;
    for (i, (stage, hosts, path, diff)) in diffs.into_iter().enumerate() {
        let summary_line = match hosts.len() {
            1 => format!("{} <code>{path}</code>", hosts[0]),
            n if n <= HOSTS_SHOWN => format!("same change on {n} hosts: {} <code>{path}</code>", host_ranges(&hosts)),
            n => format!("same change on {n} hosts: {} <code>{path}</code>", fold(&hosts)),
        };
        let lines: Vec<&str> = diff.lines().collect();
        let mut body = lines.iter().take(DIFF_LINES).copied().collect::<Vec<_>>().join("\n");
        if lines.len() > DIFF_LINES {
            write!(body, "\n... {} more lines of this diff", lines.len() - DIFF_LINES).unwrap();
        }
        let all = if hosts.len() > HOSTS_SHOWN { format!("Hosts: {}\n\n", host_ranges(&hosts)) } else { String::new() };
        let block = format!("<details><summary>{summary_line} ({stage})</summary>\n\n{all}```diff\n{body}\n```\n</details>\n\n");
        // The rest must still fit the line that says what was left out.
        if s.len() + block.len() + 300 > LIMIT {
            left_out = shown - i;
            break;
        }
        s.push_str(&block);
    }
    if left_out > 0 {
        writeln!(s, "_{left_out} more diff(s) are left out to fit a comment; `farmctl show PLAN.json` prints them all._").unwrap();
    }
    s
}

/// A summary's host list for many hosts: the ranges, folded at a few.
fn fold(hosts: &[&str]) -> String {
    let all = host_ranges(hosts);
    if all.len() <= 120 {
        all
    } else {
        let cut = all[..120].rfind(", ").unwrap_or(120);
        format!("{}, ...", &all[..cut])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_hosts_fold_into_ranges_in_natural_order() {
        assert_eq!(host_ranges(&["ivr-10", "ivr-2", "ivr-1", "ivr-3", "web-a", "ivr-11"]), "ivr-1..ivr-3, ivr-10, ivr-11, web-a");
        assert_eq!(host_ranges(&["c001", "c002", "c003", "c009", "c010", "c011"]), "c001..c003, c009..c011", "zero padding is kept");
        assert_eq!(host_ranges(&["a1", "a2"]), "a1, a2");
    }

    #[test]
    fn mermaid_labels_cannot_break_out_of_their_quotes() {
        assert_eq!(label("say \"hi\" <b>"), "say #quot;hi#quot; #lt;b#gt;");
    }
}
