//! Health, as the hosts answer it: a role's `health` command sampled on many
//! hosts at once, with the rollout's Prometheus queries for each (healthy
//! with its `name=value` metrics, or why not), the gate's conditions on
//! them, runs of failed samples, and whether hosts run a version by the
//! rollout's `probe`. Shared by wave gates (`rollout`) and shadow judgements
//! (`shadow`).

use crate::judge::Limit;
use crate::metrics::prometheus::Server;
use crate::plan::Queries;
use crate::transport::{AnyHost, CommandResult};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A healthy sample's metrics, in the order read: the health command's
/// `name=value` lines, then each Prometheus query's answer. Of two with one
/// name, the later counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Metrics(pub Vec<(String, f64)>);

impl Metrics {
    pub(super) fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// Each name once, with its value that counts.
    pub(super) fn latest(&self) -> BTreeMap<&str, f64> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v)).collect()
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "{}", words.join(" "))
    }
}

/// Why a sample of a host is not healthy.
#[derive(Debug, thiserror::Error)]
pub(super) enum SampleFailure {
    /// The host did not answer, or its session broke.
    #[error("no answer{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Silent(Option<crate::transport::TransportError>),
    #[error("`{command}` exit {status}{}", super::outcome::and_said(.output))]
    Exit { command: String, status: i32, output: String },
    /// No answer is never a pass: NaN or an infinity fails the sample.
    #[error("`{command}` reported `{line}`, which is not a finite number")]
    NotFinite { command: String, line: String },
    #[error("{0}")]
    BadPrometheus(crate::metrics::prometheus::BadUrl),
    #[error("{metric}: query `{query}`: {error}")]
    Query { metric: String, query: String, error: crate::metrics::prometheus::QueryError },
    /// A metric outside a gate's condition, and the query it came from.
    #[error("{why}{}", .query.as_ref().map(|q| format!(" (query `{q}`)")).unwrap_or_default())]
    Outside { why: String, query: Option<String> },
}

/// One sample of one host.
pub(super) type Sample = Result<Metrics, SampleFailure>;

/// What one sample of a host reads, and what it must meet.
#[derive(Clone)]
pub(super) struct Sampling {
    /// Run on the host: exit 0 is healthy, `name=value` lines are metrics.
    pub health: String,
    /// Asked of Prometheus for each host; each answer is one more metric.
    pub metrics: Option<Queries>,
    /// What every sample must meet.
    pub conditions: Vec<Limit>,
}

impl Sampling {
    pub(super) fn new(health: &str, metrics: Option<&Queries>, conditions: &[Limit]) -> Sampling {
        Sampling { health: health.to_string(), metrics: metrics.cloned(), conditions: conditions.to_vec() }
    }

    /// The journal's account of a sample: its metrics, and the query each
    /// Prometheus metric came from.
    pub(super) fn account(&self, host: &str, r: &Sample) -> String {
        let queries = self.metrics.as_ref().and_then(|m| m.by_host.get(host)).map(|q| q.iter().map(|(n, q)| format!("{n} = `{q}`")).collect::<Vec<_>>().join("; "));
        let said = match r {
            Ok(m) => m.to_string(),
            Err(why) => why.to_string(),
        };
        match queries {
            Some(q) => format!("{said} (from {}: {q})", self.metrics.as_ref().map_or("", |m| m.prometheus.as_str())),
            None => said,
        }
    }
}

/// How long one query may take: a gate samples every second or so.
const QUERY_LIMIT: Duration = Duration::from_secs(5);

/// One sample of each host: its metrics when healthy and within every
/// condition, why not otherwise, or when the host or Prometheus is silent.
pub(super) async fn sample(hosts: &[(String, Arc<AnyHost>)], how: &Sampling, parallel: usize) -> BTreeMap<String, Sample> {
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

async fn sample_one(name: &str, host: &AnyHost, how: &Sampling) -> Sample {
    let answer = answer(host, &how.health).await?;
    let mut metrics = Metrics::default();
    for (metric, v, line) in answer.metrics() {
        if !v.is_finite() {
            return Err(SampleFailure::NotFinite { command: how.health.clone(), line: line.to_string() });
        }
        metrics.0.push((metric.to_string(), v));
    }
    let queries = how.metrics.as_ref().map(|m| (m, m.by_host.get(name)));
    if let Some((m, queries)) = queries {
        let server: Server = m.prometheus.parse().map_err(SampleFailure::BadPrometheus)?;
        for (metric, q) in queries.into_iter().flatten() {
            let v = server.query(q, QUERY_LIMIT).await.map_err(|error| SampleFailure::Query { metric: metric.clone(), query: q.clone(), error })?;
            metrics.0.push((metric.clone(), v));
        }
    }
    for c in &how.conditions {
        if let Err(why) = c.check(metrics.get(&c.metric)) {
            let query = queries.and_then(|(_, q)| q?.get(&c.metric)).cloned();
            return Err(SampleFailure::Outside { why, query });
        }
    }
    Ok(metrics)
}

/// What `cmd` answered on `host` when it exited 0, or why it did not answer so.
async fn answer(host: &AnyHost, cmd: &str) -> Result<CommandResult, SampleFailure> {
    match host.command(cmd).await {
        Ok(Some(c)) if c.status == 0 => Ok(c),
        Ok(Some(c)) => Err(SampleFailure::Exit { command: cmd.to_string(), status: c.status, output: c.output }),
        Ok(None) => Err(SampleFailure::Silent(None)),
        Err(e) => Err(SampleFailure::Silent(Some(e))),
    }
}

/// A host of a wave that does not run its version at the end of its gate.
#[derive(Debug, thiserror::Error)]
pub(super) enum OffVersion {
    #[error("{host} runs {found:?}, not {version}, at the end of its gate")]
    Runs { host: String, found: String, version: String },
    #[error("{host}'s version cannot be read at the end of its gate: {why}")]
    Unread { host: String, why: SampleFailure },
}

/// Whether every host runs the wave's version, by its probe; `Err` names the first that does not.
pub(super) async fn versions_hold(hosts: &[(String, Arc<AnyHost>)], probe: &str, version: &str, parallel: usize) -> Result<(), OffVersion> {
    let (probe, version) = (probe.to_string(), version.to_string());
    let probed = probe.clone();
    let found = crate::fanout::each(hosts.to_vec(), parallel, move |(name, host)| {
        let probe = probed.clone();
        async move {
            let v = answer(&host, &probe).await.map(|c| c.first_line().to_string());
            (name, v)
        }
    })
    .await;
    for (host, v) in found {
        match v {
            Ok(v) if v == version => {}
            Ok(found) => return Err(OffVersion::Runs { host, found, version }),
            Err(why) => return Err(OffVersion::Unread { host, why }),
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
    pub(super) fn count<'a>(&mut self, round: &'a BTreeMap<String, Sample>) -> Option<(&'a str, u32, &'a SampleFailure)> {
        let mut worst: Option<(&str, u32, &SampleFailure)> = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::CommandResult;

    #[test]
    fn a_health_answer_gives_its_name_value_lines_and_the_later_of_two_counts() {
        let answer = CommandResult { status: 0, output: "ok\nerror_rate=0.25\nnot a=1\nlatency_ms = 12\nname=word\nerror_rate=0.5\nrate=NaN\n".into() };
        let read: Vec<(&str, f64)> = answer.metrics().into_iter().map(|(k, v, _)| (k, v)).collect();
        // `latency_ms = 12` is prose (a space in the name), `name=word` no number.
        assert_eq!(read[..2], [("error_rate", 0.25), ("error_rate", 0.5)]);
        assert!(read.len() == 3 && read[2].0 == "rate" && read[2].1.is_nan(), "a NaN is read, for the sample to refuse it: {read:?}");
        let m = Metrics(vec![("error_rate".into(), 0.25), ("p99".into(), 3.0), ("error_rate".into(), 0.5)]);
        assert_eq!(m.get("error_rate"), Some(0.5));
        assert_eq!(m.latest(), BTreeMap::from([("error_rate", 0.5), ("p99", 3.0)]));
        assert_eq!(m.to_string(), "error_rate=0.25 p99=3 error_rate=0.5");
        assert_eq!(CommandResult { status: 0, output: "  5.2.0 \nbuild 7\n".into() }.first_line(), "5.2.0");
    }

    #[test]
    fn a_failed_sample_says_why_as_the_journal_and_the_summary_show_it() {
        let outside = SampleFailure::Outside { why: "`error_rate < 0.05` FAILS: error_rate is 0.2".into(), query: Some("rate(x[1m])".into()) };
        assert_eq!(outside.to_string(), "`error_rate < 0.05` FAILS: error_rate is 0.2 (query `rate(x[1m])`)");
        assert_eq!(SampleFailure::Silent(None).to_string(), "no answer");
        assert_eq!(SampleFailure::Exit { command: "check".into(), status: 3, output: "down".into() }.to_string(), "`check` exit 3: down");
        // A check that said nothing: no bare colon at the end.
        assert_eq!(SampleFailure::Exit { command: "check".into(), status: 1, output: " \n".into() }.to_string(), "`check` exit 1");
        assert_eq!(SampleFailure::NotFinite { command: "check".into(), line: "rate=inf".into() }.to_string(), "`check` reported `rate=inf`, which is not a finite number");
    }
}
