//! The farm file exactly as written: serde types with spans, no meaning yet.

use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;

pub type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFarm {
    pub farm: S<RawFarmMeta>,
    #[serde(default)]
    pub ssh: Option<RawSsh>,
    #[serde(default)]
    pub roles: BTreeMap<S<String>, RawRole>,
    #[serde(default)]
    pub hosts: BTreeMap<S<String>, S<RawHost>>,
    #[serde(default)]
    pub replace: Vec<S<RawReplace>>,
    #[serde(default)]
    pub rollout: BTreeMap<S<String>, S<RawRollout>>,
    #[serde(default)]
    pub services: BTreeMap<S<String>, S<RawService>>,
    #[serde(default)]
    pub watch: Option<S<RawWatch>>,
}

/// `[watch]`: where the watchers keep each service's lease.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub etcd: Option<S<Vec<S<String>>>>,
    pub prefix: Option<S<String>>,
    pub ttl: Option<S<String>>,
    pub ca: Option<S<String>>,
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
}

/// `[services.<name>]`: a stable name over a priority-ordered list of members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub r#virtual: S<String>,
    pub members: S<Vec<S<String>>>,
    pub check: Option<S<String>>,
    /// With `check = "tcp:PORT"`: what to send once connected.
    pub send: Option<S<String>>,
    /// With `check = "tcp:PORT"`: what the first line of the answer must contain.
    pub expect: Option<S<String>>,
    pub heartbeat: Option<S<String>>,
    pub dead_after: Option<S<String>>,
    pub strategy: Option<S<String>>,
    #[serde(default)]
    pub sync: Vec<S<String>>,
    pub max_lag: Option<S<String>>,
    pub preempt: Option<bool>,
    pub fence: Option<S<String>>,
    pub fence_required: Option<bool>,
    pub confirm: Option<S<i64>>,
    pub lease: Option<S<String>>,
    /// With `strategy = "hosts"`: roles or hosts whose hosts file names the virtual name.
    pub clients: Option<S<Vec<S<String>>>>,
    pub hosts_file: Option<S<String>>,
    /// A standalone server's old name, kept as the virtual name.
    pub adopt: Option<S<String>>,
    pub hostname_file: Option<S<String>>,
    /// With `strategy = "address"`: the virtual address, `A.B.C.D/N`.
    pub address: Option<S<String>>,
    /// With `strategy = "address"`: the interface that carries it (default:
    /// the one that holds the member's own address).
    pub interface: Option<S<String>>,
}

/// `[rollout.<role>]`: bring a role's hosts to a version, canary then waves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub version: S<String>,
    pub probe: S<String>,
    pub upgrade: S<String>,
    pub health: Option<S<String>>,
    /// `{ prometheus = "http://...", NAME = 'PromQL', ... }`: metrics each sample reads.
    pub metrics: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub canary: Option<S<RawCount>>,
    pub waves: Option<S<Vec<S<RawCount>>>>,
    pub max_unavailable: Option<S<RawCount>>,
    pub gate: Option<S<RawGate>>,
    #[serde(default)]
    pub requires: BTreeMap<S<String>, S<String>>,
    pub shadow: Option<S<RawShadow>>,
}

/// `shadow = { ... }` of a rollout: the canary serves mirrored work first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub file: S<String>,
    pub mirror_key: S<String>,
    pub active_key: S<String>,
    pub window: Option<S<String>>,
    pub join: S<Vec<S<String>>>,
    pub judge: Option<S<RawJudge>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJudge {
    pub test: S<String>,
    pub confidence: Option<S<f64>>,
}

/// A number of hosts, or a share of them as "N%".
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum RawCount {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub samples: Option<S<i64>>,
    pub failure_limit: Option<S<i64>>,
    /// `METRIC OP NUMBER` that every sample of every host of the wave must meet.
    pub conditions: Option<S<Vec<S<String>>>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFarmMeta {
    pub name: S<String>,
    pub state_dir: Option<S<String>>,
    pub clock_tolerance: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    pub user: Option<S<String>>,
    pub port: Option<S<u16>>,
    pub identity_file: Option<String>,
    pub config_file: Option<String>,
    pub known_hosts_file: Option<String>,
    pub connect_timeout: Option<S<String>>,
    pub command_timeout: Option<S<String>>,
    pub jump: Option<S<String>>,
    pub sudo: Option<bool>,
    pub control_persist: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    pub files: S<Vec<S<String>>>,
    pub reload: Option<S<String>>,
    pub health: Option<S<String>>,
    pub retire: Option<S<String>>,
    #[serde(default)]
    pub set: BTreeMap<S<String>, BTreeMap<S<String>, S<RawSetValue>>>,
}

/// A value of `set`. Nested tables come from dotted keys and are flattened.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum RawSetValue {
    Bool(bool),
    Integer(i64),
    Float(f64),
    String(String),
    Array(Vec<RawSetValue>),
    Table(BTreeMap<String, RawSetValue>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub address: Option<S<String>>,
    pub role: S<String>,
    #[serde(default)]
    pub aliases: Vec<S<String>>,
    pub user: Option<S<String>>,
    pub port: Option<S<u16>>,
    pub transport: Option<S<String>>,
    pub root: Option<S<String>>,
    pub allow_shared_address: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplace {
    pub old: S<String>,
    pub new: S<String>,
    pub at: Option<S<RawTime>>,
    pub on: Option<S<Vec<S<String>>>>,
    pub skip: Option<S<RawSkip>>,
}

/// `skip` on a `[[replace]]`: places the replacement leaves alone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSkip {
    #[serde(default)]
    pub paths: Vec<S<String>>,
    #[serde(default)]
    pub lines: Vec<S<String>>,
}

/// `at` may be a TOML datetime or a string holding an RFC 3339 time.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawTime {
    Datetime(toml_edit::Datetime),
    Text(String),
}

impl RawTime {
    pub fn text(&self) -> String {
        match self {
            RawTime::Datetime(d) => d.to_string(),
            RawTime::Text(t) => t.clone(),
        }
    }
}
