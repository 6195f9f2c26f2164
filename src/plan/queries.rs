//! Pure: a rollout's Prometheus queries as the plan shows them, each host's
//! own: the templates of `metrics` with the host's name, address, role and
//! version put in, escaped as inside a PromQL string.

use crate::farm::{Farm, Rollout};
use crate::live::LiveFarm;

/// A rollout's queries for `hosts`, each filled in with the host's name,
/// address, role and version (`target` for the hosts in `at_target`, the
/// installed one for the others), escaped as inside a PromQL string.
pub(super) fn queries(farm: &Farm, live: &LiveFarm, r: &Rollout, hosts: &[String], at_target: &[String]) -> Option<super::Queries> {
    let m = r.metrics.as_ref()?;
    let mut by_host = std::collections::BTreeMap::new();
    for h in hosts {
        let installed = match live.get(h) {
            Some(Ok(x)) => x.version.clone().and_then(Result::ok),
            _ => None,
        };
        let version = if at_target.contains(h) { r.version.clone() } else { installed.unwrap_or_default() };
        let address = farm.hosts.get(h).and_then(|x| x.address.clone()).unwrap_or_else(|| h.clone());
        let fill = |q: &str| q.replace("{host}", &promql_string(h)).replace("{address}", &promql_string(&address)).replace("{role}", &promql_string(&r.role)).replace("{version}", &promql_string(&version));
        by_host.insert(h.clone(), m.queries.iter().map(|(name, q)| (name.clone(), fill(q))).collect());
    }
    Some(super::Queries { prometheus: m.prometheus.clone(), by_host })
}

/// `value` escaped as inside a PromQL string, so that a value can never end
/// the string it is put in.
pub fn promql_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            '`' => out.push_str("\\`"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}
