//! Pure: the meaning of `[rollout.<role>]` tables: a version to reach, how to
//! read and change it, and the canary, waves and health gates on the way.

use super::raw::{RawCount, RawGate, RawRollout, S};
use super::{names, Checker, Role};
use std::collections::BTreeMap;
use std::time::Duration;

/// A role's staged upgrade.
#[derive(Clone, Debug)]
pub struct Rollout {
    pub role: String,
    pub version: String,
    /// Prints the installed version.
    pub probe: String,
    /// The upgrade command, with `{version}` still in it.
    pub upgrade: String,
    /// Exit 0 means healthy; `name=value` lines are metrics.
    pub health: String,
    /// Prometheus queries each sample reads beside the health command's metrics.
    pub metrics: Option<MetricSource>,
    pub canary: Count,
    /// Cumulative shares of the role's hosts that run the new version at the end of each wave.
    pub waves: Vec<Count>,
    pub max_unavailable: Count,
    pub gate: GateSpec,
    /// (role, requirement) on other roles' versions while this role runs the new one.
    pub requires: Vec<(String, semver::VersionReq)>,
    /// The canary runs in shadow first, and joins only if it compares well.
    pub shadow: Option<Shadow>,
}

/// Where the clients list the role's active and mirrored members, and how a
/// shadow canary is judged against the active ones.
#[derive(Clone, Debug)]
pub struct Shadow {
    /// The clients' TOML file that lists the members.
    pub file: String,
    pub mirror_key: String,
    pub active_key: String,
    pub window: Duration,
    pub join: Vec<crate::judge::Condition>,
    pub test: Option<crate::judge::MannWhitney>,
}

/// A number of hosts, or a share of the role's hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Hosts(usize),
    Percent(u32),
}

impl Count {
    /// How many of `n` hosts this is: a share rounds up, so "25%" of 6 is 2.
    pub fn of(self, n: usize) -> usize {
        match self {
            Count::Hosts(h) => h.min(n),
            Count::Percent(p) => (n * p as usize).div_ceil(100).min(n),
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Hosts(h) => write!(f, "{h}"),
            Count::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// That many consecutive healthy samples, at that interval, within that
/// timeout; `failure_limit` consecutive failed samples fail it at once.
#[derive(Clone, Debug, PartialEq)]
pub struct GateSpec {
    pub samples: u32,
    pub failure_limit: u32,
    /// What every sample of every host of the wave must meet.
    pub conditions: Vec<crate::judge::Limit>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Named Prometheus queries: templates with `{host}`, `{address}`, `{role}`
/// and `{version}`, filled in (escaped for a PromQL string) for each host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricSource {
    /// The server's base URL, `http://HOST:PORT[/PREFIX]`.
    pub prometheus: String,
    pub queries: BTreeMap<String, String>,
}

/// The `metrics` table of a rollout: `prometheus` and the named queries.
fn metric_source(c: &mut Checker, m: &S<BTreeMap<S<String>, S<String>>>) -> Option<MetricSource> {
    let mut prometheus = None;
    let mut queries = BTreeMap::new();
    for (k, v) in m.get_ref() {
        let text = v.get_ref().trim().to_string();
        if k.get_ref() == "prometheus" {
            match text.split_once("://") {
                Some(("http", rest)) if !rest.is_empty() => prometheus = Some(text.clone()),
                Some(("https", _)) => c.span(v, "https is not supported yet; reach Prometheus over http (a local port or an SSH tunnel)"),
                _ => c.span(v, format!("expected a URL such as \"http://prometheus:9090\", found \"{text}\"")),
            }
            continue;
        }
        if !k.get_ref().chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') || k.get_ref().is_empty() {
            c.span(k, format!("expected a metric name of letters, digits and `_`, found `{}`", k.get_ref()));
        } else if text.is_empty() || names::control_char(&text, true).is_some() {
            c.span(v, "expected a PromQL query, on one or more lines, without control characters");
        } else {
            queries.insert(k.get_ref().clone(), text);
        }
    }
    match prometheus {
        None => {
            c.span(m, "expected `prometheus = \"http://HOST:PORT\"` in `metrics`: the server the queries go to");
            None
        }
        Some(_) if queries.is_empty() => {
            c.span(m, "expected at least one named query in `metrics`, such as error_rate = 'sum(rate(errors_total{instance=\"{address}:9100\"}[1m]))'");
            None
        }
        Some(prometheus) => Some(MetricSource { prometheus, queries }),
    }
}

/// Reads a version as semver, leniently: "5.2" is 5.2.0, a leading "v" is dropped.
pub fn parse_version(v: &str) -> Option<semver::Version> {
    let v = v.trim().trim_start_matches('v');
    semver::Version::parse(v).ok().or_else(|| {
        let parts = v.split('.').count();
        let padded = match parts {
            1 => format!("{v}.0.0"),
            2 => format!("{v}.0"),
            _ => return None,
        };
        semver::Version::parse(&padded).ok()
    })
}

fn count(c: &mut Checker, v: &S<RawCount>, what: &str, zero_ok: bool) -> Option<Count> {
    let parsed = match v.get_ref() {
        RawCount::Number(n) if *n > 0 || (zero_ok && *n == 0) => Some(Count::Hosts(*n as usize)),
        RawCount::Text(t) => t.strip_suffix('%').and_then(|p| p.trim().parse::<u32>().ok()).filter(|p| (1..=100).contains(p)).map(Count::Percent),
        _ => None,
    };
    if parsed.is_none() {
        let least = if zero_ok { "0" } else { "1" };
        c.span(v, format!("expected {what} as a number of hosts (at least {least}) or a share such as \"25%\""));
    }
    parsed
}

fn command(c: &mut Checker, v: &S<String>, key: &str) -> String {
    if v.get_ref().trim().is_empty() {
        c.span(v, format!("expected a `{key}` command"));
    } else if let Some(ch) = names::control_char(v.get_ref(), true) {
        c.span(v, format!("expected a `{key}` command without {} (a newline is fine)", names::describe(ch)));
    }
    v.get_ref().clone()
}

fn role_files_of(roles: &BTreeMap<String, Role>) -> Vec<String> {
    roles.values().flat_map(|r| r.files.iter().cloned()).collect()
}

/// `requires`: the versions of other roles this rollout needs, each read by
/// that role's own rollout `probe`.
fn requires(c: &mut Checker, raw: &BTreeMap<S<String>, S<String>>, roles: &BTreeMap<String, Role>, with_rollout: &[String]) -> Vec<(String, semver::VersionReq)> {
    let mut requires = Vec::new();
    for (other, req) in raw {
        if !roles.contains_key(other.get_ref()) {
            c.span(other, format!("unknown role `{}` in `requires`", other.get_ref()));
            continue;
        }
        if !with_rollout.contains(other.get_ref()) {
            c.span(other, format!("`requires` reads role `{}`'s version, which needs a [rollout.{}] with a `probe`", other.get_ref(), other.get_ref()));
        }
        match semver::VersionReq::parse(req.get_ref()) {
            Ok(v) => requires.push((other.get_ref().clone(), v)),
            Err(e) => c.span(req, format!("expected a version requirement such as \">=2.0\": {e}")),
        }
    }
    requires
}

/// `gate`: how many samples, how many failures in a row fail it, the
/// conditions every sample must meet, and its interval and timeout.
fn gate(c: &mut Checker, raw: Option<&S<RawGate>>) -> GateSpec {
    let mut gate = GateSpec { samples: 3, failure_limit: 3, conditions: Vec::new(), interval: Duration::from_secs(1), timeout: Duration::from_secs(60) };
    if let Some(g) = raw {
        let g = g.get_ref();
        if let Some(n) = &g.samples {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => gate.samples = v,
                _ => c.span(n, "expected at least 1 sample"),
            }
        }
        if let Some(n) = &g.failure_limit {
            match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => gate.failure_limit = v,
                _ => c.span(n, "expected a failure_limit of at least 1 (failed samples in a row that fail the gate)"),
            }
        }
        for t in g.conditions.iter().flat_map(|l| l.get_ref()) {
            match crate::judge::parse_limit(t.get_ref()) {
                Ok(l) => gate.conditions.push(l),
                Err(e) => c.span(t, e),
            }
        }
        gate.interval = c.duration(&g.interval, gate.interval);
        gate.timeout = c.duration(&g.timeout, gate.timeout);
    }
    gate
}

/// Checks every `[rollout.<role>]` against the roles.
pub(super) fn check(c: &mut Checker, raw: BTreeMap<S<String>, S<RawRollout>>, roles: &BTreeMap<String, Role>) -> BTreeMap<String, Rollout> {
    let mut out = BTreeMap::new();
    let names_of: Vec<String> = raw.keys().map(|k| k.get_ref().clone()).collect();
    for (role, r) in raw {
        let Some(role_def) = roles.get(role.get_ref()) else {
            let known: Vec<_> = roles.keys().map(String::as_str).collect();
            c.span(&role, format!("unknown role `{}`; a rollout names a role of [roles]: {}", role.get_ref(), known.join(", ")));
            continue;
        };
        let r = r.into_inner();
        let version = r.version.get_ref().trim().to_string();
        if version.is_empty() || version.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            c.span(&r.version, "expected a version without spaces, such as \"5.2.0\"");
        }
        let probe = command(c, &r.probe, "probe");
        let upgrade = command(c, &r.upgrade, "upgrade");
        if !upgrade.contains("{version}") {
            c.span(&r.upgrade, "expected `{version}` in the upgrade command, where the version goes");
        }
        let metrics = r.metrics.as_ref().and_then(|m| metric_source(c, m));
        let health = match (&r.health, &role_def.health) {
            (Some(h), _) => command(c, h, "health"),
            (None, Some(h)) => h.clone(),
            // The queries are the data; the host must still answer over SSH.
            (None, None) if r.metrics.is_some() => "true".to_string(),
            (None, None) => {
                c.span(&role, format!("rollout of `{}` needs a `health` command (here or in [roles.{}]): a wave is never advanced without data", role.get_ref(), role.get_ref()));
                String::new()
            }
        };
        let canary = r.canary.as_ref().and_then(|v| count(c, v, "`canary`", true)).unwrap_or(Count::Hosts(1));
        let waves: Vec<Count> = match &r.waves {
            Some(w) => w.get_ref().iter().filter_map(|v| count(c, v, "a wave", false)).collect(),
            None => vec![Count::Percent(100)],
        };
        if let Some(w) = &r.waves {
            // Each wave is a cumulative share: it must reach further than the one before.
            for (prev, next) in w.get_ref().iter().zip(w.get_ref().iter().skip(1)) {
                if let (Some(a), Some(b)) = (count_value(prev.get_ref()), count_value(next.get_ref())) {
                    if a.1 == b.1 && b.0 <= a.0 {
                        c.span(next, format!("expected each wave to reach further than the one before (waves are cumulative), but {} follows {}", b.2, a.2));
                    }
                }
            }
            if w.get_ref().is_empty() || waves.last() != Some(&Count::Percent(100)) && waves.len() == w.get_ref().len() {
                c.span(w, "expected the last wave to be \"100%\", so that every host of the role is upgraded");
            }
        }
        let max_unavailable = r.max_unavailable.as_ref().and_then(|v| count(c, v, "`max_unavailable`", false)).unwrap_or(Count::Hosts(1));
        let gate = gate(c, r.gate.as_ref());
        let requires = requires(c, &r.requires, roles, &names_of);
        let shadow = r.shadow.as_ref().map(|sh| {
            let sh = sh.get_ref();
            let file = match names::normalize_path(sh.file.get_ref()) {
                Ok(f) if !role_files_of(roles).contains(&f) => {
                    c.span(&sh.file, format!("expected a file that the clients' role manages (in some role's `files`), found `{f}`"));
                    f
                }
                Ok(f) if !f.ends_with(".toml") => {
                    c.span(&sh.file, "expected a TOML file: the shadow edits its member lists");
                    f
                }
                Ok(f) => f,
                Err(e) => {
                    c.span(&sh.file, e);
                    String::new()
                }
            };
            for k in [&sh.mirror_key, &sh.active_key] {
                if let Err(e) = toml_edit::Key::parse(k.get_ref()) {
                    c.span(k, format!("expected a TOML key path such as \"web.pool\": {}", e.message().trim()));
                }
            }
            if sh.mirror_key.get_ref() == sh.active_key.get_ref() {
                c.span(&sh.mirror_key, "expected `mirror_key` and `active_key` to differ");
            }
            let mut join = Vec::new();
            for j in sh.join.get_ref() {
                match crate::judge::parse(j.get_ref()) {
                    Ok(cond) => join.push(cond),
                    Err(e) => c.span(j, e),
                }
            }
            if sh.join.get_ref().is_empty() {
                c.span(&sh.join, "expected at least one `join` condition: a canary is never promoted without data");
            }
            let test = sh.judge.as_ref().and_then(|j| {
                let j = j.get_ref();
                if j.test.get_ref() != "mann-whitney" {
                    c.span(&j.test, format!("expected test \"mann-whitney\", found \"{}\"", j.test.get_ref()));
                    return None;
                }
                let confidence = j.confidence.as_ref().map_or(0.95, |v| *v.get_ref());
                if !(0.5..1.0).contains(&confidence) {
                    if let Some(v) = &j.confidence {
                        c.span(v, "expected a confidence between 0.5 and 1, such as 0.95");
                    }
                }
                Some(crate::judge::MannWhitney { confidence })
            });
            let window = c.duration(&sh.window, Duration::from_secs(30));
            Shadow { file, mirror_key: sh.mirror_key.get_ref().clone(), active_key: sh.active_key.get_ref().clone(), window, join, test }
        });
        let role = role.into_inner();
        out.insert(role.clone(), Rollout { role, version, probe, upgrade, health, metrics, canary, waves, max_unavailable, gate, requires, shadow });
    }
    out
}

/// A wave's size for comparing with its neighbour: (value, is a share, as written).
fn count_value(c: &RawCount) -> Option<(i64, bool, String)> {
    match c {
        RawCount::Number(n) => Some((*n, false, n.to_string())),
        RawCount::Text(t) => t.strip_suffix('%').and_then(|p| p.trim().parse::<i64>().ok()).map(|p| (p, true, t.clone())),
    }
}
