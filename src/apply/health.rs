//! Health, as the hosts answer it: a role's `health` command sampled on many
//! hosts at once, with the rollout's Prometheus queries for each (healthy
//! with its `name=value` metrics, or why not), the gate's conditions on
//! them, runs of failed samples, and whether hosts run a version by the
//! rollout's `probe`. Shared by wave gates (`rollout`) and shadow judgements
//! (`shadow`).

use crate::judge::Limit;
use crate::metrics::prometheus::Server;
use crate::plan::Queries;
use crate::transport::AnyHost;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What one sample of a host reads, and what it must meet.
#[derive(Clone)]
pub(super) struct Sampling {
    /// Run on the host: exit 0 is healthy, `name=value` lines are metrics.
    pub health: String,
    /// Asked of Prometheus for each host; each answer is one more metric.
    pub metrics: Option<Queries>,
    /// What every sample must meet (a condition that does not parse fails every sample).
    pub conditions: Vec<Result<Limit, String>>,
}

impl Sampling {
    pub(super) fn new(health: &str, metrics: Option<&Queries>, conditions: &[String]) -> Sampling {
        Sampling { health: health.to_string(), metrics: metrics.cloned(), conditions: conditions.iter().map(|c| crate::judge::parse_limit(c)).collect() }
    }

    /// The journal's account of a sample: its metrics, and the query each
    /// Prometheus metric came from.
    pub(super) fn account(&self, host: &str, r: &Result<String, String>) -> String {
        let queries = self.metrics.as_ref().and_then(|m| m.by_host.get(host)).map(|q| q.iter().map(|(n, q)| format!("{n} = `{q}`")).collect::<Vec<_>>().join("; "));
        let said = match r {
            Ok(m) => m.clone(),
            Err(why) => why.clone(),
        };
        match queries {
            Some(q) => format!("{said} (from {}: {q})", self.metrics.as_ref().map_or("", |m| m.prometheus.as_str())),
            None => said,
        }
    }
}

/// How long one query may take: a gate samples every second or so.
const QUERY_LIMIT: Duration = Duration::from_secs(5);

/// One sample of each host: `Ok(metrics)` when healthy and within every
/// condition, `Err(why)` when not, or when the host or Prometheus is silent.
pub(super) async fn sample(hosts: &[(String, Arc<AnyHost>)], how: &Sampling, parallel: usize) -> BTreeMap<String, Result<String, String>> {
    let how = Arc::new(how.clone());
    crate::fanout::each(hosts.to_vec(), parallel, move |(name, host)| {
        let how = how.clone();
        async move {
            let r = sample_one(&name, &host, &how).await;
            (name, r)
        }
    })
    .await
    .into_iter()
    .collect()
}

async fn sample_one(name: &str, host: &AnyHost, how: &Sampling) -> Result<String, String> {
    let out = answer(host, &how.health).await?;
    let mut metrics: Vec<(String, f64)> = Vec::new();
    for (line, v) in metric_lines(&out) {
        // No answer is never a pass: NaN or an infinity fails the sample.
        if !v.is_finite() {
            return Err(format!("`{}` reported `{line}`, which is not a finite number", how.health));
        }
        metrics.push((line.split_once('=').map_or(line, |(k, _)| k).to_string(), v));
    }
    let queries = how.metrics.as_ref().map(|m| (m, m.by_host.get(name)));
    if let Some((m, queries)) = queries {
        let server: Server = m.prometheus.parse().map_err(|e: crate::metrics::prometheus::BadUrl| e.to_string())?;
        for (metric, q) in queries.into_iter().flatten() {
            let v = server.query(q, QUERY_LIMIT).await.map_err(|e| format!("{metric}: query `{q}`: {e}"))?;
            metrics.push((metric.clone(), v));
        }
    }
    for c in &how.conditions {
        let c = c.as_ref().map_err(|e| format!("a gate condition cannot be read: {e}"))?;
        let value = metrics.iter().rev().find(|(k, _)| *k == c.metric).map(|(_, v)| *v);
        if let Err(why) = c.check(value) {
            let from = queries.and_then(|(_, q)| q?.get(&c.metric)).map(|q| format!(" (query `{q}`)")).unwrap_or_default();
            return Err(format!("{why}{from}"));
        }
    }
    Ok(metrics.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
}

/// What `cmd` printed on `host` when it exited 0, or why it did not answer so.
async fn answer(host: &AnyHost, cmd: &str) -> Result<String, String> {
    match host.command(cmd).await {
        Ok(Some(c)) if c.status == 0 => Ok(c.output),
        Ok(Some(c)) => Err(format!("`{cmd}` exit {}: {}", c.status, c.output)),
        Ok(None) => Err("no answer".to_string()),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// The `name=value` lines of a health check's output, with their values.
fn metric_lines(output: &str) -> impl Iterator<Item = (&str, f64)> {
    output.lines().filter_map(|l| {
        let (k, v) = l.split_once('=')?;
        (!k.is_empty() && !k.contains(' ')).then_some(())?;
        Some((l, v.trim().parse::<f64>().ok()?))
    })
}

/// Whether every host runs the wave's version, by its probe; `Err` names the first that does not.
pub(super) async fn versions_hold(hosts: &[(String, Arc<AnyHost>)], probe: &str, version: &str, parallel: usize) -> Result<(), String> {
    let (probe, version) = (probe.to_string(), version.to_string());
    let found = crate::fanout::each(hosts.to_vec(), parallel, move |(name, host)| {
        let probe = probe.clone();
        async move {
            let v = answer(&host, &probe).await.map(|out| out.lines().next().unwrap_or("").trim().to_string());
            (name, v)
        }
    })
    .await;
    for (host, v) in found {
        match v {
            Ok(v) if v == version => {}
            Ok(v) => return Err(format!("{host} runs {v:?}, not {version}, at the end of its gate")),
            Err(e) => return Err(format!("{host}'s version cannot be read at the end of its gate: {e}")),
        }
    }
    Ok(())
}

/// Failed samples in a row, by host.
#[derive(Default)]
pub(super) struct Failing(BTreeMap<String, u32>);

impl Failing {
    /// Counts one round of samples; returns the host with the longest run of
    /// failures, its length and its last failure.
    pub(super) fn count<'a>(&mut self, round: &'a BTreeMap<String, Result<String, String>>) -> Option<(&'a str, u32, &'a str)> {
        let mut worst: Option<(&str, u32, &str)> = None;
        for (host, r) in round {
            let n = self.0.entry(host.clone()).or_default();
            match r {
                Ok(_) => *n = 0,
                Err(why) => {
                    *n += 1;
                    if worst.is_none_or(|(_, w, _)| *n > w) {
                        worst = Some((host, *n, why));
                    }
                }
            }
        }
        worst
    }
}
