//! Rollout safety as a property (issue 25): many random farms on the local
//! transport (the same host scripts as over SSH), each rolled out by the
//! farmctl binary, some killed (`kill -9`) at a random moment and then
//! applied again. The oracle is the hosts' own log, not farmctl's word: each
//! upgrade script run writes when it started and ended, with the version, and
//! the hosts that are broken at the new version are known to the test alone.
//!
//! For every farm:
//! - never more hosts down (upgrading, or running a version they are broken
//!   at) than `max_unavailable`, counted at every upgrade's start;
//! - no host of a wave starts its upgrade unless every host of every earlier
//!   wave runs the new version and is healthy on it, in this run or an earlier;
//! - the last run exits 0 only with every host at the new version and healthy;
//!   with a broken host it exits 1 and names one.
//!
//! `FARMCTL_MODEL_FARMS` sets how many farms (default 500), and the seeds in
//! `REGRESSIONS` run every time;
//! `scripts/rollout-model.sh` runs 10,000. A failure prints its seed;
//! `FARMCTL_MODEL_SEED=N` runs that farm alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A small, seedable generator: a failing farm is made again from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.range(1, 100) <= percent
    }
}

const FROM: &str = "1.0.0";
const TO: &str = "2.0.0";

#[derive(Debug)]
struct Model {
    n: usize,
    canary: usize,
    /// Cumulative shares in percent, the last 100.
    waves: Vec<u64>,
    max_unavailable: usize,
    samples: u64,
    failure_limit: u64,
    /// Hosts (1-based) that already run the new version.
    ahead: BTreeSet<usize>,
    /// Hosts (1-based) that are unhealthy on the new version.
    broken: BTreeSet<usize>,
    /// Kill the first run after this many ms, if at all.
    kill_after_ms: Option<u64>,
}

impl Model {
    fn random(seed: u64) -> Model {
        let mut r = Rng::new(seed);
        let n = r.range(2, 7) as usize;
        let canary = r.range(0, 2) as usize;
        let mut waves = Vec::new();
        let mut at = 0;
        while at < 100 {
            at = if r.chance(40) { 100 } else { r.range(at + 1, 100) };
            waves.push(at);
        }
        let pick = |r: &mut Rng, percent: u64| (1..=n).filter(|_| r.chance(percent)).collect::<BTreeSet<usize>>();
        let ahead = pick(&mut r, 15);
        let broken = if r.chance(35) { pick(&mut r, 25) } else { BTreeSet::new() };
        Model {
            n,
            canary,
            waves,
            max_unavailable: r.range(1, 3) as usize,
            samples: r.range(1, 2),
            failure_limit: r.range(1, 3),
            ahead,
            broken,
            kill_after_ms: r.chance(50).then(|| r.range(0, 1200)),
        }
    }

    /// Each host's wave (0 is the canary, if any), as farmctl draws the
    /// boundaries: over every host of the role, in natural order.
    fn wave_of(&self) -> BTreeMap<usize, usize> {
        let mut bounds = Vec::new();
        if self.canary > 0 {
            bounds.push(self.canary.min(self.n));
        }
        for w in &self.waves {
            bounds.push((self.n * *w as usize).div_ceil(100).min(self.n));
        }
        let mut out = BTreeMap::new();
        let mut start = 0;
        for (i, end) in bounds.into_iter().enumerate() {
            let end = end.max(start);
            for h in start..end {
                out.insert(h + 1, i);
            }
            start = end;
        }
        out
    }

    fn farm(&self) -> String {
        let waves: Vec<String> = self.waves.iter().map(|w| format!("\"{w}%\"")).collect();
        // The gate's timeout is a margin, not a subject: a healthy gate passes
        // in well under a second, and a broken host fails it at its
        // failure_limit. 15 s holds while this suite shares 2 cores with the
        // lab suites (3 s did not: two farms of 5,000 timed out under load).
        let mut s = format!(
            "[farm]\nname = \"model\"\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\"]\n\n\
             [rollout.ivr]\nversion = \"{TO}\"\nprobe = \"cat VERSION\"\nupgrade = \"sh ../../upgrade.sh {{version}}\"\n\
             health = 'test ! -e down && test ! -e \"broken-$(cat VERSION)\" && echo ok=1'\n\
             canary = {}\nwaves = [{}]\nmax_unavailable = {}\n\
             gate = {{ samples = {}, failure_limit = {}, interval = \"20ms\", timeout = \"15s\" }}\n",
            self.canary,
            waves.join(", "),
            self.max_unavailable,
            self.samples,
            self.failure_limit
        );
        for h in 1..=self.n {
            s.push_str(&format!("\n[hosts.ivr-{h}]\nrole = \"ivr\"\naddress = \"10.9.0.{h}\"\ntransport = \"local\"\nroot = \"h/ivr-{h}\"\n"));
        }
        s
    }
}

/// The upgrade: logged from the host's side, start and end, with the version.
const UPGRADE: &str = "#!/bin/sh\n\
h=${PWD##*/}\n\
echo \"S $h $(date +%s%N) $1\" >> ../../log\n\
touch down\n\
sleep 0.05\n\
printf '%s\\n' \"$1\" > VERSION\n\
rm -f down\n\
echo \"E $h $(date +%s%N) $1\" >> ../../log\n";

fn setup(dir: &Path, m: &Model) {
    std::fs::write(dir.join("farm.toml"), m.farm()).unwrap();
    std::fs::write(dir.join("upgrade.sh"), UPGRADE).unwrap();
    for h in 1..=m.n {
        let root = dir.join(format!("h/ivr-{h}"));
        std::fs::create_dir_all(root.join("etc/ivr")).unwrap();
        std::fs::write(root.join("etc/ivr/ivr.toml"), "x = 1\n").unwrap();
        std::fs::write(root.join("VERSION"), format!("{}\n", if m.ahead.contains(&h) { TO } else { FROM })).unwrap();
        if m.broken.contains(&h) {
            std::fs::write(root.join(format!("broken-{TO}")), "").unwrap();
        }
    }
}

fn farmctl(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_farmctl"));
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("FARMCTL_JOURNAL", dir.join("state/journal.jsonl"))
        .env("FARMCTL_CACHE_DIR", dir.join("cache"))
        .args(["apply", "farm.toml", "--yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// One upgrade script run, from the log.
struct Run {
    host: usize,
    start: i128,
    end: Option<i128>,
    version: String,
}

fn runs(dir: &Path) -> Vec<Run> {
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let mut out: Vec<Run> = Vec::new();
    for line in log.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let (host, t) = (w[1].trim_start_matches("ivr-").parse::<usize>().unwrap(), w[2].parse::<i128>().unwrap());
        match w[0] {
            "S" => out.push(Run { host, start: t, end: None, version: w[3].to_string() }),
            _ => {
                let r = out.iter_mut().rev().find(|r| r.host == host && r.end.is_none()).expect("an end after its start");
                r.end = Some(t);
            }
        }
    }
    out
}

/// Checks one farm; `Err` says which promise broke.
fn check(seed: u64) -> Result<(), String> {
    let m = Model::random(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, &m);
    if let Some(ms) = m.kill_after_ms {
        let mut child = farmctl(d).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        // The host's upgrade, once started, finishes on its own: wait for it.
        for _ in 0..200 {
            if runs(d).iter().all(|r| r.end.is_some()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let out = farmctl(d).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let runs = runs(d);
    let wave = m.wave_of();
    let ctx = || format!("{m:?}\nlast run exit {:?}:\n{err}", out.status.code());
    // Each host's version at time t, from the ends of the upgrades before t.
    let version_at = |h: usize, t: i128| -> String {
        runs.iter().filter(|r| r.host == h && r.end.is_some_and(|e| e <= t)).max_by_key(|r| r.end).map_or_else(|| if m.ahead.contains(&h) { TO.to_string() } else { FROM.to_string() }, |r| r.version.clone())
    };
    for r in &runs {
        let t = r.start;
        let upgrading: BTreeSet<usize> = runs.iter().filter(|o| o.start <= t && o.end.is_none_or(|e| e > t)).map(|o| o.host).collect();
        let down: BTreeSet<usize> = (1..=m.n).filter(|h| upgrading.contains(h) || (m.broken.contains(h) && version_at(*h, t) == TO)).collect();
        if down.len() > m.max_unavailable {
            return Err(format!("{} hosts down at once ({down:?}) when ivr-{} started, max_unavailable {}\n{}", down.len(), r.host, m.max_unavailable, ctx()));
        }
        if r.version == TO {
            for g in (1..=m.n).filter(|g| wave[g] < wave[&r.host]) {
                if version_at(g, t) != TO || m.broken.contains(&g) {
                    return Err(format!("ivr-{} (wave {}) started its upgrade while ivr-{g} of wave {} ran {} (broken at {TO}: {})\n{}", r.host, wave[&r.host], wave[&g], version_at(g, t), m.broken.contains(&g), ctx()));
                }
            }
        }
    }
    let end = i128::MAX;
    let all_there = (1..=m.n).all(|h| version_at(h, end) == TO);
    if m.ahead.len() == m.n {
        // Every host ran the version before farmctl came: nothing to roll out, nothing gated.
        return match (out.status.code(), runs.is_empty()) {
            (Some(0), true) => Ok(()),
            _ => Err(format!("a role already at the version is left alone\n{}", ctx())),
        };
    }
    match out.status.code() {
        Some(0) if all_there && m.broken.is_empty() => Ok(()),
        Some(0) => Err(format!("exit 0, but not every host runs {TO} healthy\n{}", ctx())),
        Some(1) if !m.broken.is_empty() => {
            if m.broken.iter().any(|h| err.contains(&format!("ivr-{h}"))) {
                Ok(())
            } else {
                Err(format!("exit 1 without naming a broken host\n{}", ctx()))
            }
        }
        _ => Err(format!("the rollout should have completed\n{}", ctx())),
    }
}

/// Farms the 10,000-farm run found breaking a promise, fixed since: a host
/// that ran the version before the rollout, broken on it, alone in a wave
/// whose gate a kill interrupted (5800, 7282).
const REGRESSIONS: &[u64] = &[5800, 7282];

#[test]
fn no_random_rollout_breaks_a_promise_even_when_killed_and_resumed() {
    if let Ok(seed) = std::env::var("FARMCTL_MODEL_SEED") {
        let seed: u64 = seed.parse().expect("FARMCTL_MODEL_SEED is a number");
        check(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        return;
    }
    let farms: u64 = std::env::var("FARMCTL_MODEL_FARMS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    // Seeds that once broke a promise run every time, beside the first `farms`.
    let seeds: Vec<u64> = (0..farms).chain(REGRESSIONS.iter().copied().filter(|s| *s >= farms)).collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..workers {
            let (failures, seeds) = (&failures, &seeds);
            s.spawn(move || {
                for &seed in seeds.iter().skip(w).step_by(workers) {
                    if let Err(e) = check(seed) {
                        failures.lock().unwrap().push(format!("seed {seed}: {e}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {} farms broke a promise (FARMCTL_MODEL_SEED=N runs one):\n{}", failures.len(), seeds.len(), failures.join("\n\n"));
}
