//! Health, as the hosts answer it: a role's `health` command sampled on many
//! hosts at once (healthy with its `name=value` metrics, or why not), runs of
//! failed samples, and whether hosts run a version by the rollout's `probe`.
//! Shared by wave gates (`rollout`) and shadow judgements (`shadow`).

use crate::transport::AnyHost;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One health sample of each host: `Ok(metrics)` when healthy, `Err(why)` when not or silent.
pub(super) async fn sample(hosts: &[(String, Arc<AnyHost>)], health: &str, parallel: usize) -> BTreeMap<String, Result<String, String>> {
    let health = health.to_string();
    crate::fanout::each(hosts.to_vec(), parallel, move |(name, host)| {
        let health = health.clone();
        async move {
            let r = answer(&host, &health).await.and_then(|out| {
                let lines: Vec<(&str, f64)> = metric_lines(&out).collect();
                // No answer is never a pass: NaN or an infinity fails the sample.
                match lines.iter().find(|(_, v)| !v.is_finite()) {
                    Some((line, _)) => Err(format!("`{health}` reported `{line}`, which is not a finite number")),
                    None => Ok(lines.iter().map(|(l, _)| *l).collect::<Vec<_>>().join(" ")),
                }
            });
            (name, r)
        }
    })
    .await
    .into_iter()
    .collect()
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
