//! A shadow canary's entry, judgement and promotion or exit: the one place
//! the `judge` node runs. Client edits go through the same all-or-nothing
//! switch as any edit; the verdict comes from `judge` (pure).

use super::journal::{Entry, Record, ShadowOutcome};
use super::health::sample;
use super::switch::{switch_stage, LevelWork};
use super::{record, work_for, Event, Level, Summary};
use crate::judge::{self, MannWhitney};
use crate::plan::{Action, ActionKind, Contents, Phase};
use crate::transport::Pool;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// Applies exactly the edits and reloads `ids`, all or nothing, under their own backup name.
pub(super) async fn edits(run: &Level<'_>, ids: &[String], phase: Phase, conns: &mut Pool, summary: &mut Summary, contents: &Contents) -> ControlFlow<()> {
    let work = work_for(run.plan, ids, contents);
    if work.is_empty() {
        return ControlFlow::Continue(());
    }
    let words = phase.in_words();
    run.reporter.event(Event::Note(format!("{words}: {} client(s)", work.len())));
    let run_id = run.run_id.with_phase(phase);
    let level = Level { run_id: &run_id, ..*run };
    let mut failures = 0;
    let flow = switch_stage(&level, vec![LevelWork { work, gates: Vec::new() }], conns, summary, &mut failures).await;
    if flow.is_break() {
        // Each client's own state says what happened on it; this only names the phase.
        summary.problems.push(format!("{words} did not complete on every client"));
    }
    flow
}

fn entry(run: &Level<'_>, host: &str, outcome: ShadowOutcome, detail: String) -> Entry {
    Entry::now(&run.plan.id, &run.plan.farm.name, host, Record::Shadow(outcome), detail)
}

/// With Prometheus queries, the window opens once the canary's sample is
/// complete (Prometheus has scraped the new version), waiting at most the
/// window or 30 s, whichever is longer: samples from before would only say
/// that Prometheus had not looked yet. Past that bound the window opens
/// anyway, and the canary's failed samples keep it from being promoted.
async fn warm_up(canary: &[(String, std::sync::Arc<crate::transport::AnyHost>)], how: &super::health::Sampling, window_ms: u64, interval_ms: u64, reporter: &dyn super::Reporter) {
    let bound = Instant::now() + Duration::from_millis(window_ms).max(Duration::from_secs(30));
    let mut last = String::new();
    while !canary.is_empty() && Instant::now() < bound {
        match sample(canary, how, 1).await.into_values().next() {
            Some(Ok(_)) => return,
            Some(Err(why)) => last = why.to_string(),
            None => return,
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    if !last.is_empty() {
        reporter.event(Event::Note(format!("the canary's metrics are still incomplete; the window opens anyway: {last}")));
    }
}

/// Samples the canary and the active members over the window, judges every
/// join condition, records samples and verdicts, then promotes or exits.
/// `Break(Some(canary))`: the canary left the shadow, and the caller puts it
/// back on its old version.
pub(super) async fn judge(run: &Level<'_>, node: &Action, conns: &mut Pool, summary: &mut Summary, contents: &Contents) -> ControlFlow<Option<String>> {
    let ActionKind::Judge { role, canary, baseline, health, metrics, window_ms, interval_ms, join, confidence, promote, exit, .. } = &node.kind else {
        return ControlFlow::Continue(());
    };
    let Level { opts, reporter, journal, .. } = *run;
    let mut hosts = Vec::new();
    for h in std::iter::once(canary).chain(baseline) {
        match conns.get(h).await {
            Ok(c) => hosts.push((h.clone(), c)),
            Err(e) => reporter.event(Event::Note(format!("{h}: cannot be sampled: {e}"))),
        }
    }
    reporter.event(Event::Note(format!("{role} shadow: sampling {canary} and {} active member(s) for {window_ms} ms", baseline.len())));
    let (mut ours, mut theirs): (BTreeMap<String, Vec<f64>>, BTreeMap<String, Vec<f64>>) = Default::default();
    let how = super::health::Sampling::new(health, metrics.as_ref(), &[]);
    if how.metrics.is_some() {
        warm_up(&hosts[..hosts.iter().take_while(|(h, _)| h == canary).count()], &how, *window_ms, *interval_ms, reporter).await;
    }
    let end = Instant::now() + Duration::from_millis(*window_ms);
    let mut canary_misses = Vec::new();
    loop {
        let round = sample(&hosts, &how, opts.parallel).await;
        let mut lines = Vec::new();
        for (h, r) in &round {
            let Ok(m) = r else {
                if let (true, Err(why)) = (h == canary, r) {
                    canary_misses.push(why.to_string());
                }
                lines.push(entry(run, h, ShadowOutcome::Sample, format!("no answer: {}", how.account(h, r))));
                continue;
            };
            let side = if h == canary { &mut ours } else { &mut theirs };
            for (k, v) in m.latest() {
                side.entry(k.to_string()).or_default().push(v);
            }
            lines.push(entry(run, h, ShadowOutcome::Sample, how.account(h, r)));
        }
        record(journal, summary, lines);
        if Instant::now() >= end || *opts.interrupted.borrow() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(*interval_ms)).await;
    }
    let test = confidence.map(|c| MannWhitney { confidence: c });
    let mut failed = Vec::new();
    let mut verdicts = Vec::new();
    for c in join {
        let v = judge::judge(c, ours.get(&c.metric).map_or(&[][..], Vec::as_slice), theirs.get(&c.metric).map_or(&[][..], Vec::as_slice), test);
        reporter.event(Event::Note(format!("{canary}: {v}")));
        verdicts.push(entry(run, canary, if v.pass { ShadowOutcome::Holds } else { ShadowOutcome::Fails }, v.to_string()));
        if !v.pass {
            failed.push(v.to_string());
        }
    }
    if let Some(last) = canary_misses.last() {
        // A canary sample that failed (silent, unhealthy, NaN or infinite) is never a pass.
        let v = format!("{canary} failed {} sample(s) of the window, the last: {last}", canary_misses.len());
        reporter.event(Event::Note(v.clone()));
        verdicts.push(entry(run, canary, ShadowOutcome::Fails, v.clone()));
        failed.push(v);
    }
    record(journal, summary, verdicts);
    if failed.is_empty() && !*opts.interrupted.borrow() {
        record(journal, summary, vec![entry(run, canary, ShadowOutcome::Promoted, format!("{canary} met every join condition"))]);
        return edits(run, promote, Phase::Promotion, conns, summary, contents).await.map_break(|()| None);
    }
    let why = if failed.is_empty() { "interrupted before the judgement".to_string() } else { failed.join("; ") };
    record(journal, summary, vec![entry(run, canary, ShadowOutcome::NotPromoted, why.clone())]);
    summary.problems.push(format!("{role} shadow canary {canary} was not promoted: {why}"));
    let _ = edits(run, exit, Phase::ShadowExit, conns, summary, contents).await;
    ControlFlow::Break(Some(canary.clone()))
}
