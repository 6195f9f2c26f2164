//! Staged upgrades on the lab farm (issue 12). Each IVR host carries a small
//! service of the tests' own: a version file, an upgrade script that takes the
//! service down for a second and logs every run, and a health script whose
//! answer the test controls (`/etc/ivr/broken-VERSION` makes that version
//! unhealthy). An independent observer reads the hosts' files while farmctl
//! works.

mod lab;

use lab::voice::{farm, lab, NAMES};
use lab::{stderr, stdout, Lab};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const IVRS: [&str; 6] = ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

const UPGRADE: &str = "#!/bin/sh\n\
touch /etc/ivr/down\n\
echo \"$(hostname) $1\" >> /var/log/farmlab/upgrades\n\
sleep 1\n\
printf '%s\\n' \"$1\" > /etc/ivr/VERSION\n\
rm -f /etc/ivr/down\n";

const HEALTH: &str = "#!/bin/sh\n\
test ! -e /etc/ivr/down || exit 1\n\
test ! -e \"/etc/ivr/broken-$(cat /etc/ivr/VERSION)\" || exit 1\n\
echo error_rate=0.01\n\
echo p95_ms=42\n";

fn install_service(lab: &Lab, version: &str) {
    for h in IVRS {
        let host = lab.host(h);
        host.write("/etc/ivr/VERSION", format!("{version}\n").as_bytes());
        host.write("/etc/ivr/upgrade.sh", UPGRADE.as_bytes());
        host.write("/etc/ivr/health.sh", HEALTH.as_bytes());
    }
}

fn rollout(extra: &str) -> String {
    format!(
        "[rollout.ivr]\nversion = \"5.2.0\"\nprobe = \"cat /etc/ivr/VERSION\"\nupgrade = \"sh /etc/ivr/upgrade.sh {{version}}\"\n\
         health = \"sh /etc/ivr/health.sh\"\ncanary = 1\nwaves = [\"50%\", \"100%\"]\nmax_unavailable = 2\n\
         gate = {{ samples = 2, interval = \"300ms\", timeout = \"20s\" }}\n{extra}"
    )
}

fn version(lab: &Lab, h: &str) -> String {
    String::from_utf8(lab.host(h).read("/etc/ivr/VERSION")).unwrap().trim().to_string()
}

/// Each host's upgrade runs, from the upgrade script's own log.
fn upgrades(lab: &Lab, h: &str) -> Vec<String> {
    std::fs::read_to_string(lab.host(h).path("/var/log/farmlab/upgrades")).unwrap_or_default().lines().map(|l| l.split(' ').nth(1).unwrap_or("").to_string()).collect()
}

/// Watches which hosts are down (their `down` file exists), every 20 ms, until stopped.
struct Observer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<BTreeSet<String>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    fn start(lab: &Lab) -> Observer {
        let paths: Vec<(String, std::path::PathBuf)> = IVRS.iter().map(|h| (h.to_string(), lab.host(h).path("/etc/ivr/down"))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let down: BTreeSet<String> = paths.iter().filter(|(_, p)| p.exists()).map(|(h, _)| h.clone()).collect();
                let mut v = v.lock().unwrap();
                if v.last() != Some(&down) {
                    v.push(down);
                }
                drop(v);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Observer { stop, seen, thread: Some(thread) }
    }

    /// Every distinct set of down hosts seen, in order.
    fn finish(mut self) -> Vec<BTreeSet<String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn a_rollout_brings_every_host_to_the_version_never_more_than_two_down_canary_first() {
    let lab = lab();
    install_service(&lab, "5.1.0");
    farm(&lab, &rollout(""));
    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("rollout of ivr to 5.2.0"), "{text}");
    assert!(text.contains("↑ ivr-1 (ivr): 5.1.0 -> 5.2.0"), "{text}");
    assert!(text.contains("canary gate") && text.contains("wave 1 gate") && text.contains("wave 2 gate"), "{text}");
    assert!(text.contains("6 upgrades"), "{text}");

    let observer = Observer::start(&lab);
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    let seen = observer.finish();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for h in IVRS {
        assert_eq!(version(&lab, h), "5.2.0", "{h}");
        assert_eq!(upgrades(&lab, h), vec!["5.2.0"], "{h} upgraded exactly once");
    }
    let most = seen.iter().map(BTreeSet::len).max().unwrap_or(0);
    assert!(most <= 2, "never more than max_unavailable = 2 down at once: {seen:?}");
    assert!(most >= 1, "the observer saw the upgrades: {seen:?}");
    let first_down = seen.iter().find(|s| !s.is_empty()).unwrap();
    assert_eq!(first_down.iter().collect::<Vec<_>>(), vec!["ivr-1"], "the canary goes down alone first: {seen:?}");
    // Before any other host goes down, the canary was down and came back up.
    let others = seen.iter().position(|s| s.iter().any(|h| h != "ivr-1")).expect("the waves ran");
    let canary_down = seen.iter().position(|s| s.contains("ivr-1")).unwrap();
    assert!(canary_down < others && seen[canary_down..others].iter().any(BTreeSet::is_empty), "the canary's gate passed before wave 1 began: {seen:?}");
    // The journal has every upgrade with both versions; the farm now plans clean.
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    assert_eq!(journal.matches("\"outcome\":\"upgraded\"").count(), 6, "{journal}");
    assert!(journal.contains("\"kind\":\"version\",\"from\":\"5.1.0\",\"to\":\"5.2.0\""), "versions are versions, not hashes: {journal}");
    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "a role that runs the version plans nothing: {}", stdout(&out));
}

#[test]
fn a_canary_that_fails_its_gate_is_rolled_back_and_the_rest_are_untouched() {
    let lab = lab();
    install_service(&lab, "5.1.0");
    lab.host("ivr-1").write("/etc/ivr/broken-5.2.0", b"");
    farm(&lab, &rollout("").replace("timeout = \"20s\"", "timeout = \"4s\""));
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ivr canary gate"), "the message names the gate: {err}");
    assert!(err.contains("ivr-1") && err.contains("sh /etc/ivr/health.sh` exit 1"), "and the host and the failing sample: {err}");
    assert!(err.contains("ivr-1: rolled back to 5.1.0 (from 5.2.0), healthy again"), "{err}");
    assert_eq!(version(&lab, "ivr-1"), "5.1.0");
    assert_eq!(upgrades(&lab, "ivr-1"), vec!["5.2.0", "5.1.0"]);
    for h in &IVRS[1..] {
        assert_eq!(version(&lab, h), "5.1.0", "{h}");
        assert!(upgrades(&lab, h).is_empty(), "{h} is untouched");
        assert!(err.contains(&format!("{h}: not reached")), "{err}");
    }
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    assert!(journal.contains("\"outcome\":\"rolled-back\""), "{journal}");
}

#[test]
fn a_rollout_killed_mid_wave_resumes_and_upgrades_no_host_twice() {
    use std::io::BufRead;
    let lab = lab();
    install_service(&lab, "5.1.0");
    farm(&lab, &rollout(""));
    let mut child = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    // Killed as the first upgrade of wave 1 starts: the middle of a wave.
    for line in err.lines().map_while(Result::ok) {
        if line.contains("ivr-2: upgrading") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let _ = child.wait();
    let done: Vec<&str> = IVRS.iter().copied().filter(|h| !upgrades(&lab, h).is_empty()).collect();
    assert!(done.contains(&"ivr-1") && done.len() < 6, "killed part-way: {done:?}");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for h in IVRS {
        assert_eq!(version(&lab, h), "5.2.0", "{h}");
        assert_eq!(upgrades(&lab, h), vec!["5.2.0"], "{h} was upgraded once, across both runs");
        assert!(!lab.host(h).state("lock").exists(), "{h} is not left locked");
    }
}

#[test]
fn a_requirement_that_cannot_be_met_is_refused_at_plan_time_and_named() {
    let lab = lab();
    install_service(&lab, "5.1.0");
    for h in NAMES.iter().filter(|h| h.starts_with("web")) {
        lab.host(h).write("/etc/ivr-web/VERSION", b"1.5.0\n");
    }
    let web = "[rollout.web]\nversion = \"1.9.0\"\nprobe = \"cat /etc/ivr-web/VERSION\"\nupgrade = \"true {version}\"\n";
    farm(&lab, &format!("{}[rollout.ivr.requires]\nweb = \">=2.0\"\n\n{web}", rollout("")));
    let before = lab.snapshot();
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("[rollout.ivr] requires web >=2.0"), "names the requirement: {err}");
    assert!(err.contains("web-a would run 1.9.0"), "and the hosts that break it: {err}");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    lab::assert_same(&lab.snapshot(), &before, "nothing was run");
    for h in IVRS {
        assert!(upgrades(&lab, h).is_empty());
    }
    // With web rolled out to 2.0 first, the same requirement holds at every moment: web goes before ivr.
    farm(&lab, &format!("{}[rollout.ivr.requires]\nweb = \">=2.0\"\n\n{}", rollout(""), web.replace("1.9.0", "2.0.0")));
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let (w, i) = (text.find("rollout of web to 2.0.0").unwrap(), text.find("rollout of ivr to 5.2.0").unwrap());
    assert!(w < i, "web is rolled out before ivr: {text}");
}
