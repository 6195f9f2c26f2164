//! The live state a `plan -o` read, kept on this workstation for a short
//! while, so that `apply PLAN.json` right after it need not read every host
//! again. The hosts still check every file's before-hash when they stage, so a
//! file changed since is refused just the same, before anything is written.
//!
//! Snapshots hold whole files, so they live in a private directory (0700,
//! files 0600), expire after a few minutes, and are removed once applied.
//! Plans and the journal never hold file contents.

use crate::live::{FileInfo, FileState, LiveHost, LiveFarm, Unreadable};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How long a snapshot may stand in for a fresh read.
pub const MAX_AGE_SECS: i64 = 600;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    plan: String,
    farm_sha256: String,
    taken_ms: i64,
    hosts: BTreeMap<String, BTreeMap<String, SnapFile>>,
    /// What each host's rollout probe said (hosts without a rollout are absent).
    #[serde(default)]
    versions: BTreeMap<String, Result<String, String>>,
    /// Each host's clock as the read measured it (offset, uncertainty; ms), so
    /// that `apply PLAN.json` switches by the hosts' clocks as `apply FARM` does.
    #[serde(default)]
    clocks: BTreeMap<String, (i64, i64)>,
}

#[derive(Serialize, Deserialize)]
enum SnapFile {
    Present {
        content: String,
        mode: String,
        owner: String,
        group: String,
        #[serde(default = "yes")]
        replaceable: bool,
    },
    Missing,
    Unreadable(String),
}

fn yes() -> bool {
    true
}

fn dir() -> PathBuf {
    crate::workstation::snapshots_dir()
}

fn path(plan_id: &str) -> PathBuf {
    dir().join(format!("{plan_id}.json"))
}

/// Keeps what was read of `hosts` for plan `plan_id`. Failing to keep it only costs a later read.
pub fn save(plan_id: &str, farm_sha256: &str, live: &LiveFarm, hosts: &[String]) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut snap = Snapshot { plan: plan_id.into(), farm_sha256: farm_sha256.into(), taken_ms: jiff::Timestamp::now().as_millisecond(), hosts: BTreeMap::new(), versions: BTreeMap::new(), clocks: BTreeMap::new() };
    for h in hosts {
        let Some(Ok(state)) = live.get(h) else { continue };
        let files = state
            .files
            .iter()
            .map(|(p, f)| {
                let f = match f {
                    FileState::Present(i) => SnapFile::Present { content: b64.encode(&i.content), mode: i.mode.clone(), owner: i.owner.clone(), group: i.group.clone(), replaceable: i.replaceable },
                    FileState::Missing => SnapFile::Missing,
                    FileState::Unreadable(w) => SnapFile::Unreadable(w.to_string()),
                };
                (p.clone(), f)
            })
            .collect();
        snap.hosts.insert(h.clone(), files);
        if let Some(v) = &state.version {
            snap.versions.insert(h.clone(), v.clone());
        }
        if let Some(offset) = state.clock_offset_ms {
            snap.clocks.insert(h.clone(), (offset, state.clock_uncertainty_ms));
        }
    }
    let d = dir();
    if std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).is_err() {
        return;
    }
    let tmp = d.join(format!(".{plan_id}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|f| serde_json::to_writer(f, &snap).map_err(std::io::Error::other));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, path(plan_id));
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The snapshot of plan `plan_id`, if it is fresh and was read for this very farm file.
pub fn load(plan_id: &str, farm_sha256: &str) -> Option<LiveFarm> {
    let snap: Snapshot = serde_json::from_slice(&std::fs::read(path(plan_id)).ok()?).ok()?;
    let age = jiff::Timestamp::now().as_millisecond() - snap.taken_ms;
    if snap.plan != plan_id || snap.farm_sha256 != farm_sha256 || !(0..MAX_AGE_SECS * 1000).contains(&age) {
        return None;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut live = LiveFarm::new();
    for (host, files) in snap.hosts {
        let mut map = BTreeMap::new();
        for (p, f) in files {
            let f = match f {
                SnapFile::Present { content, mode, owner, group, replaceable } => {
                    let content = b64.decode(content).ok()?;
                    FileState::Present(FileInfo { sha256: crate::farm::sha256_hex(&content), content, mode, owner, group, replaceable })
                }
                SnapFile::Missing => FileState::Missing,
                SnapFile::Unreadable(w) => FileState::Unreadable(Unreadable::parse(&w)),
            };
            map.insert(p, f);
        }
        let version = snap.versions.get(&host).cloned();
        let (clock_offset_ms, clock_uncertainty_ms) = match snap.clocks.get(&host) {
            Some((offset, uncertainty)) => (Some(*offset), *uncertainty),
            None => (None, 0),
        };
        live.insert(host.clone(), Ok(LiveHost { hostname: host, clock_offset_ms, clock_uncertainty_ms, files: map, armed: Vec::new(), version, addresses: Vec::new() }));
    }
    Some(live)
}

/// Forgets a snapshot (after its plan was applied).
pub fn remove(plan_id: &str) {
    let _ = std::fs::remove_file(path(plan_id));
}
