//! What one journal line records, as a value: a [`Record`] of one kind with
//! its own outcome, never a sentinel path or a free word. The line on disk
//! (`Line`) is flat JSON with a version tag (`"v": 2`) and the record's
//! `kind`; lines written before the tag (version 1, which marked a version
//! change with `path = "(version)"` and kept the versions in the hash
//! fields) are read into the same values.

use serde::{Deserialize, Serialize};

/// One journal record: when, which plan and farm, which host (or, for a
/// watcher's event, which service), what happened, and in words why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Line", into = "Line")]
pub struct Entry {
    pub time: String,
    pub plan: String,
    pub farm: String,
    pub host: String,
    pub record: Record,
    pub detail: String,
    /// A scheduled switch: when the host renamed the file, by its own clock.
    pub renamed_at: Option<String>,
    /// A switch by the hosts' clocks: the host's clock against the workstation's
    /// as its check measured it right before the switch, and to within how much.
    pub clock_offset_ms: Option<i64>,
    pub clock_uncertainty_ms: Option<i64>,
}

impl Entry {
    /// A record made now.
    pub fn now(plan: &str, farm: &str, host: &str, record: Record, detail: impl Into<String>) -> Entry {
        Entry {
            time: jiff::Timestamp::now().to_string(),
            plan: plan.to_string(),
            farm: farm.to_string(),
            host: host.to_string(),
            record,
            detail: detail.into(),
            renamed_at: None,
            clock_offset_ms: None,
            clock_uncertainty_ms: None,
        }
    }

    /// The file this records, if it records one.
    pub fn file(&self) -> Option<(&str, FileOutcome)> {
        match &self.record {
            Record::File { path, outcome, .. } => Some((path, *outcome)),
            _ => None,
        }
    }
}

/// The kinds of record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A managed file: its content before and after (sha256), and what became of the write.
    File { path: String, before_sha256: String, after_sha256: String, outcome: FileOutcome },
    /// A rollout's step on a host's version.
    Version { from: String, to: String, outcome: VersionOutcome },
    /// A rollout's wave gate passed on the host.
    GatePassed,
    /// One sample of a host during a wave gate that reads Prometheus: its
    /// metrics (or why it failed) and the query each came from.
    GateSample { healthy: bool },
    /// A shadow's sample or verdict on its canary.
    Shadow(ShadowOutcome),
    /// A watcher's event for a service (the entry's host is the service).
    Service(ServiceEvent),
}

macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// The word the journal keeps.
            pub fn word(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            fn from_word(w: &str) -> Option<$name> {
                match w { $($word => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

words!(
    /// What became of one file of a plan on a host.
    FileOutcome {
        Written = "written",
        /// The file changed since the plan; nothing was written.
        Refused = "refused",
        Aborted = "aborted",
        NotReached = "not-reached",
        NotWritten = "not-written",
        /// Staged, to be switched by a detached job at its time.
        Armed = "armed",
        /// A rollback put the old content back.
        Restored = "restored",
        UnchangedSince = "unchanged-since",
        ChangedSince = "changed-since",
    }
);

words!(
    /// A rollout's step on a host's version.
    VersionOutcome {
        UpgradeStarted = "upgrade-started",
        Upgraded = "upgraded",
        /// The host already ran the version.
        UpgradeSkipped = "upgrade-skipped",
        UpgradeFailed = "upgrade-failed",
        RollbackStarted = "rollback-started",
        RolledBack = "rolled-back",
        RollbackFailed = "rollback-failed",
    }
);

words!(
    /// A shadow's sample or verdict.
    ShadowOutcome {
        Sample = "shadow-sample",
        Holds = "shadow-holds",
        Fails = "shadow-fails",
        Promoted = "promoted",
        NotPromoted = "not-promoted",
    }
);

words!(
    /// A watcher's event.
    ServiceEvent {
        Failover = "failover",
        NoStandby = "no-standby",
        Fenced = "fenced",
        FenceFailed = "fence-failed",
    }
);

impl Record {
    /// The outcome's word, as `farmctl journal` prints it.
    pub fn word(&self) -> &'static str {
        match self {
            Record::File { outcome, .. } => outcome.word(),
            Record::Version { outcome, .. } => outcome.word(),
            Record::GatePassed => "gate-passed",
            Record::GateSample { healthy: true } => "sample-healthy",
            Record::GateSample { healthy: false } => "sample-failed",
            Record::Shadow(o) => o.word(),
            Record::Service(o) => o.word(),
        }
    }
}

/// A journal line as it is on disk.
#[derive(Serialize, Deserialize, Default)]
struct Line {
    /// 2 since records were typed; absent on older lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    time: String,
    plan: String,
    farm: String,
    host: String,
    /// file, version, gate, shadow or service; absent on version-1 lines.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    before_sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    after_sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    to: String,
    outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renamed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clock_offset_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    clock_uncertainty_ms: Option<i64>,
}

/// A line that is not a record this farmctl knows.
#[derive(Debug, thiserror::Error)]
#[error("not a journal record: {0}")]
pub struct NotARecord(String);

impl TryFrom<Line> for Entry {
    type Error = NotARecord;

    fn try_from(l: Line) -> Result<Entry, NotARecord> {
        let bad = |what: &str| NotARecord(format!("{what} `{}`", l.outcome));
        // Version 1 said the kind with a sentinel path.
        let kind = match (l.kind.as_str(), l.path.as_str()) {
            ("", "(version)") if l.outcome == "gate-passed" => "gate",
            ("", "(version)") => "version",
            ("", "(shadow)") => "shadow",
            ("", "(service)") => "service",
            ("", _) => "file",
            (k, _) => k,
        };
        let record = match kind {
            "file" => Record::File { path: l.path.clone(), before_sha256: l.before_sha256.clone(), after_sha256: l.after_sha256.clone(), outcome: FileOutcome::from_word(&l.outcome).ok_or_else(|| bad("file outcome"))? },
            "version" => {
                // Version 1 kept the versions in the hash fields.
                let (from, to) = if l.v.is_none() { (l.before_sha256.clone(), l.after_sha256.clone()) } else { (l.from.clone(), l.to.clone()) };
                Record::Version { from, to, outcome: VersionOutcome::from_word(&l.outcome).ok_or_else(|| bad("version outcome"))? }
            }
            "gate" if l.outcome == "gate-passed" => Record::GatePassed,
            "gate" if l.outcome == "sample-healthy" || l.outcome == "sample-failed" => Record::GateSample { healthy: l.outcome == "sample-healthy" },
            "shadow" => Record::Shadow(ShadowOutcome::from_word(&l.outcome).ok_or_else(|| bad("shadow outcome"))?),
            "service" => Record::Service(ServiceEvent::from_word(&l.outcome).ok_or_else(|| bad("service event"))?),
            other => return Err(NotARecord(format!("kind `{other}`"))),
        };
        Ok(Entry { time: l.time, plan: l.plan, farm: l.farm, host: l.host, record, detail: l.detail, renamed_at: l.renamed_at, clock_offset_ms: l.clock_offset_ms, clock_uncertainty_ms: l.clock_uncertainty_ms })
    }
}

impl From<Entry> for Line {
    fn from(e: Entry) -> Line {
        let outcome = e.record.word().to_string();
        let mut l = Line { v: Some(2), time: e.time, plan: e.plan, farm: e.farm, host: e.host, outcome, detail: e.detail, renamed_at: e.renamed_at, clock_offset_ms: e.clock_offset_ms, clock_uncertainty_ms: e.clock_uncertainty_ms, ..Default::default() };
        match e.record {
            Record::File { path, before_sha256, after_sha256, .. } => {
                (l.kind, l.path, l.before_sha256, l.after_sha256) = ("file".into(), path, before_sha256, after_sha256);
            }
            Record::Version { from, to, .. } => (l.kind, l.from, l.to) = ("version".into(), from, to),
            Record::GatePassed | Record::GateSample { .. } => l.kind = "gate".into(),
            Record::Shadow(_) => l.kind = "shadow".into(),
            Record::Service(_) => l.kind = "service".into(),
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 21: a journal written before records were typed is still read.
    #[test]
    fn version_1_lines_read_into_the_same_records_that_version_2_writes() {
        let v1 = [
            r#"{"time":"2026-11-30T10:00:00Z","plan":"p1","farm":"f","host":"web-a","path":"/etc/a","before_sha256":"aa","after_sha256":"bb","outcome":"written"}"#,
            r#"{"time":"2026-11-30T10:00:00Z","plan":"p1","farm":"f","host":"web-a","path":"(version)","before_sha256":"1.0","after_sha256":"1.1","outcome":"upgraded"}"#,
            r#"{"time":"2026-11-30T10:00:00Z","plan":"p1","farm":"f","host":"web-a","path":"(version)","before_sha256":"","after_sha256":"","outcome":"gate-passed","detail":"canary"}"#,
            r#"{"time":"2026-11-30T10:00:00Z","plan":"p1","farm":"f","host":"web-a","path":"(shadow)","before_sha256":"","after_sha256":"","outcome":"promoted"}"#,
            r#"{"time":"2026-11-30T10:00:00Z","plan":"","farm":"f","host":"web","path":"(service)","before_sha256":"","after_sha256":"","outcome":"failover","detail":"web-c -> web-d"}"#,
        ];
        let read: Vec<Entry> = v1.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
        assert_eq!(read[0].record, Record::File { path: "/etc/a".into(), before_sha256: "aa".into(), after_sha256: "bb".into(), outcome: FileOutcome::Written });
        assert_eq!(read[1].record, Record::Version { from: "1.0".into(), to: "1.1".into(), outcome: VersionOutcome::Upgraded });
        assert_eq!(read[2].record, Record::GatePassed);
        assert_eq!(read[3].record, Record::Shadow(ShadowOutcome::Promoted));
        assert_eq!(read[4].record, Record::Service(ServiceEvent::Failover));
        for e in read {
            let line = serde_json::to_string(&e).unwrap();
            assert!(line.starts_with(r#"{"v":2,"#) && line.contains(&format!(r#""outcome":"{}""#, e.record.word())), "{line}");
            assert_eq!(serde_json::from_str::<Entry>(&line).unwrap(), e, "{line} reads back as itself");
        }
    }

    #[test]
    fn an_unknown_kind_or_outcome_is_not_a_record() {
        for l in [
            r#"{"v":2,"time":"t","plan":"p","farm":"f","host":"h","kind":"file","path":"/a","outcome":"vanished"}"#,
            r#"{"v":2,"time":"t","plan":"p","farm":"f","host":"h","kind":"dream","outcome":"written"}"#,
        ] {
            assert!(serde_json::from_str::<Entry>(l).is_err(), "{l}");
        }
    }
}
