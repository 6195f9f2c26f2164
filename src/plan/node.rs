//! The nodes of the plan graph: what each action does, as plain serializable
//! data. Edits, reloads, gates, retires, upgrades, wave gates and shadow
//! judgements are kinds of the one node.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Action {
    pub id: String,
    pub host: String,
    pub stage: usize,
    /// Within a stage: hosts of level 0 switch first (together, at `at`);
    /// level n waits for the gates of hosts that level n-1 made ready.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub level: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub depends_on: Vec<String>,
    #[serde(flatten)]
    pub kind: ActionKind,
}

impl Action {
    /// What the action is, in words for a person (ids are for the machine):
    /// `edit of ivr-1:/etc/ivr.toml`, `readiness check of web-b`.
    pub fn in_words(&self) -> String {
        match &self.kind {
            ActionKind::Edit(e) => format!("edit of {}:{}", self.host, e.path),
            ActionKind::Reload { .. } => format!("reload of {}", self.host),
            ActionKind::Gate { .. } => format!("readiness check of {}", self.host),
            ActionKind::Upgrade { to, .. } => format!("upgrade of {} to {to}", self.host),
            ActionKind::WaveGate { role, wave, .. } => format!("{role} {wave} gate"),
            ActionKind::Judge { canary, .. } => format!("judgement of shadow {canary}"),
            ActionKind::Retire { .. } => format!("retire of {}", self.host),
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionKind {
    Edit(Edit),
    Reload { command: String },
    /// The host must be ready (reachable, and its role's `health` passing)
    /// before any client is repointed to it.
    Gate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
    },
    /// Brings a host from one version to another with its rollout's `upgrade`.
    Upgrade {
        role: String,
        from: String,
        to: String,
        /// Reads the installed version; the upgrade is skipped where it says `to` already.
        probe: String,
        command: String,
        /// Brings it back, when the version it had is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback: Option<String>,
    },
    /// A wave of a rollout is done when every host of it gives `samples`
    /// healthy samples in a row; the next wave waits for it. `watch` is every
    /// host of the role, whose health counts against `max_unavailable`.
    WaveGate {
        role: String,
        wave: String,
        hosts: Vec<String>,
        watch: Vec<String>,
        health: String,
        /// Prometheus queries each sample also reads, filled in for each host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<Queries>,
        /// `METRIC OP NUMBER` that every sample of every host of the wave must meet.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        conditions: Vec<crate::judge::Limit>,
        samples: u32,
        /// Failed samples in a row (of any one host) that fail the gate at once.
        failure_limit: u32,
        /// The gate passes only if every host of the wave then runs `version`, by `probe`.
        version: String,
        probe: String,
        interval_ms: u64,
        timeout_ms: u64,
        max_unavailable: usize,
    },
    /// A shadow canary is sampled with the active members over a window and
    /// judged by the join conditions; then the `promote` nodes run, or the
    /// `exit` nodes and the canary's rollback to `from`.
    Judge {
        role: String,
        canary: String,
        baseline: Vec<String>,
        health: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<Queries>,
        window_ms: u64,
        interval_ms: u64,
        join: Vec<crate::judge::Condition>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confidence: Option<f64>,
        promote: Vec<String>,
        exit: Vec<String>,
        from: String,
    },
    /// No host refers to the host any more: its role's `retire` command runs.
    Retire {
        replaced_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Edit {
    pub path: String,
    pub before_sha256: String,
    pub after_sha256: String,
    pub after_size: usize,
    pub reasons: Vec<String>,
    pub diff: String,
}

/// The Prometheus queries of a gate or a judgement, as the plan shows them
/// for review: each host's own, with its name, address, role and version in.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Queries {
    /// The server's base URL.
    pub prometheus: String,
    /// Host, then metric name, then the query.
    pub by_host: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}
