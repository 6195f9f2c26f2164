//! Health, as the hosts answer it: a role's `health` command sampled on many
//! hosts at once (healthy with its `name=value` metrics, or why not), runs of
//! failed samples, and whether hosts run a version by the rollout's `probe`.
//! Shared by wave gates (`rollout`) and shadow judgements (`shadow`).

use crate::transport::AnyHost;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One health sample of each host: `Ok(metrics)` when healthy, `Err(why)` when not or silent.
pub(super) async fn sample(hosts: &[(String, Arc<AnyHost>)], health: &str, parallel: usize) -> BTreeMap<String, Result<String, String>> {
    let jobs: Vec<(String, Arc<AnyHost>)> = hosts.to_vec();
    let health = health.to_string();
    crate::fanout::each(jobs, parallel, move |(name, host)| {
        let health = health.clone();
        async move {
            let r = match host.command(&health).await {
                Ok(Some(c)) if c.status == 0 => match not_finite(&c.output) {
                    // No answer is never a pass: NaN or an infinity fails the sample.
                    Some(line) => Err(format!("`{health}` reported `{line}`, which is not a finite number")),
                    None => Ok(metrics(&c.output)),
                },
                Ok(Some(c)) => Err(format!("`{health}` exit {}: {}", c.status, c.output)),
                Ok(None) => Err("no answer".to_string()),
                Err(e) => Err(format!("no answer: {e}")),
            };
            (name, r)
        }
    })
    .await
    .into_iter()
    .collect()
}

/// The first `name=value` line whose value is NaN or infinite.
fn not_finite(output: &str) -> Option<&str> {
    output.lines().find(|l| l.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !k.contains(' ') && v.trim().parse::<f64>().is_ok_and(|x| !x.is_finite())))
}

/// The `name=value` lines of a health check's output.
fn metrics(output: &str) -> String {
    output.lines().filter(|l| l.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !k.contains(' ') && v.trim().parse::<f64>().is_ok())).collect::<Vec<_>>().join(" ")
}

/// Whether every host runs the wave's version, by its probe; `Err` names the first that does not.
pub(super) async fn versions_hold(hosts: &[(String, Arc<AnyHost>)], probe: &str, version: &str, parallel: usize) -> Result<(), String> {
    let (probe, version) = (probe.to_string(), version.to_string());
    let found = crate::fanout::each(hosts.to_vec(), parallel, move |(name, host)| {
        let probe = probe.clone();
        async move {
            let v = match host.command(&probe).await {
                Ok(Some(c)) if c.status == 0 => Ok(c.output.lines().next().unwrap_or("").trim().to_string()),
                Ok(Some(c)) => Err(format!("`{probe}` exit {}", c.status)),
                Ok(None) => Err("no answer".to_string()),
                Err(e) => Err(format!("no answer: {e}")),
            };
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
