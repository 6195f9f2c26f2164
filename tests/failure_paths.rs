//! The failure paths of issue 25, on the local transport (the same host
//! scripts as over SSH, through the local `sh`): every check is made on the
//! hosts' files, never on what farmctl printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn farmctl(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_farmctl"));
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("FARMCTL_JOURNAL", dir.join("state/journal.jsonl"))
        .env("FARMCTL_CACHE_DIR", dir.join("cache"))
        .stdin(Stdio::null());
    c
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A copy of the demo farm in a temp dir, so tests may apply it.
fn demo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("inventories");
    assert!(Command::new("cp").arg("-r").arg(src).arg(dir.path()).status().unwrap().success());
    dir
}

fn host(d: &Path, h: &str, path: &str) -> PathBuf {
    d.join("inventories/demo").join(h).join(path.trim_start_matches('/'))
}

fn version(d: &Path, h: &str) -> String {
    std::fs::read_to_string(host(d, h, "opt/ivr/VERSION")).unwrap().trim().to_string()
}

/// Every file under every demo host, for "nothing was written" checks.
fn snapshot(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut v = Vec::new();
    walk(&d.join("inventories/demo"), &mut v);
    v.sort();
    v
}

/// Edits the demo farm file: each (from, to) replaced once, where it must be.
fn edit_farm(d: &Path, edits: &[(&str, &str)]) {
    let path = d.join("inventories/demo.toml");
    let mut s = std::fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(s.contains(from), "the demo farm has `{from}`");
        s = s.replacen(from, to, 1);
    }
    std::fs::write(path, s).unwrap();
}

/// The demo's rollout, with a health check that fails on a host holding
/// `opt/ivr/broken-VERSION` for the version it runs.
const HEALTH: (&str, &str) = (
    "health = \"test -s opt/ivr/VERSION && echo error_rate=0\"",
    "health = 'test ! -e \"opt/ivr/broken-$(cat opt/ivr/VERSION)\" && echo error_rate=0'",
);

fn apply(d: &Path, extra: &[&str]) -> Output {
    farmctl(d).args(["apply", "inventories/demo.toml", "--yes"]).args(extra).output().unwrap()
}

// See issue 25: a host whose managed file could not be read lost its edits
// without a word when its role had a rollout: the rollout marked it "changed",
// upgraded it, and the apply said "complete".
#[test]
fn a_host_whose_file_cannot_be_read_stops_a_rollout_apply_before_anything_is_written() {
    let d = demo();
    let peers = host(d.path(), "ivr-3", "/etc/ivr/peers.conf");
    std::fs::remove_file(&peers).unwrap();
    std::fs::create_dir(&peers).unwrap();
    let before = snapshot(d.path());
    let out = apply(d.path(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ivr-3: /etc/ivr/peers.conf: not a regular file"), "the file is named: {err}");
    assert_eq!(snapshot(d.path()), before, "nothing was written on any host, ivr-3's version included");
    assert_eq!(version(d.path(), "ivr-3"), "5.1.0");
}

// See issue 25: with ivr-2 unhealthy at the new version, `kill -9` during
// wave 1 and the same apply again planned only wave 2, upgraded the rest and
// exited 0, so the whole role ran the version on which ivr-2 fails.
#[test]
fn a_rollout_killed_in_a_wave_gates_that_wave_again_before_any_later_wave() {
    let d = demo();
    // A slow gate, so that the kill lands while wave 1 waits for its gate: 2 s
    // between samples leaves seconds for a 20 ms poll, even on a loaded machine.
    edit_farm(d.path(), &[HEALTH, ("interval = \"100ms\", timeout = \"10s\"", "interval = \"2s\", failure_limit = 5, timeout = \"60s\"")]);
    std::fs::write(host(d.path(), "ivr-2", "opt/ivr/broken-5.2.0"), "").unwrap();
    let mut child = farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !(version(d.path(), "ivr-2") == "5.2.0" && version(d.path(), "ivr-3") == "5.2.0") {
        assert!(start.elapsed() < Duration::from_secs(60), "wave 1 never upgraded");
        assert!(child.try_wait().unwrap().is_none(), "farmctl ended before wave 1 was upgraded");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for h in ["ivr-4", "ivr-5", "ivr-6"] {
        assert_eq!(version(d.path(), h), "5.1.0", "the kill came before wave 2 on {h}");
    }
    // Resumed with quick samples: wave 1 is gated again, ivr-2 fails it, wave 2 never starts.
    edit_farm(d.path(), &[("interval = \"2s\", failure_limit = 5", "interval = \"100ms\", failure_limit = 3")]);
    let out = apply(d.path(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a role with an unhealthy host never ends at exit 0: {err}");
    assert!(err.contains("ivr-2"), "the unhealthy host is named: {err}");
    for h in ["ivr-4", "ivr-5", "ivr-6"] {
        assert_eq!(version(d.path(), h), "5.1.0", "wave 2 never started on {h}");
    }
}

// Found by the 10,000-farm model run (seeds 5800 and 7282): hosts that ran
// the new version before the rollout, one of them broken on it, make up the
// last wave. Killed during that wave's gate, the resumed apply found the whole
// role at the version, planned nothing and exited 0. The first run now
// journals such hosts as pending their wave's gate.
#[test]
fn hosts_already_at_the_version_keep_their_wave_gated_after_a_kill() {
    let d = demo();
    // Slow samples, so the kill lands inside wave 2's gate (see the test above).
    edit_farm(d.path(), &[HEALTH, ("interval = \"100ms\", timeout = \"10s\"", "interval = \"2s\", failure_limit = 5, timeout = \"60s\"")]);
    for h in ["ivr-4", "ivr-5", "ivr-6"] {
        std::fs::write(host(d.path(), h, "opt/ivr/VERSION"), "5.2.0\n").unwrap();
    }
    std::fs::write(host(d.path(), "ivr-6", "opt/ivr/broken-5.2.0"), "").unwrap();
    let mut child = farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Wave 2 upgrades nothing, so its start shows only in the journal: wave 1's
    // gate passed for ivr-3. The kill then lands within wave 2's five 2 s samples.
    let journal = d.path().join("state/journal.jsonl");
    let start = Instant::now();
    while !std::fs::read_to_string(&journal).unwrap_or_default().lines().any(|l| l.contains("\"ivr-3\"") && l.contains("gate-passed")) {
        assert!(start.elapsed() < Duration::from_secs(90), "wave 1's gate never passed");
        assert!(child.try_wait().unwrap().is_none(), "farmctl ended before wave 1's gate passed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for h in ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"] {
        assert_eq!(version(d.path(), h), "5.2.0", "every host runs the version when the resumed apply starts: {h}");
    }
    edit_farm(d.path(), &[("interval = \"2s\", failure_limit = 5", "interval = \"100ms\", failure_limit = 3")]);
    let out = apply(d.path(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a role with an unhealthy host never ends at exit 0: {err}");
    assert!(err.contains("ivr-6"), "the unhealthy host is named: {err}");
}

// See issue 25: a gate whose every sample failed waited its whole timeout
// (Argo Rollouts stops at `failureLimit`). Also: a wave's (not the canary's)
// gate failure puts back exactly that wave.
#[test]
fn a_failing_wave_gate_stops_at_its_failure_limit_and_rolls_the_wave_back() {
    let d = demo();
    edit_farm(d.path(), &[HEALTH, ("timeout = \"10s\"", "timeout = \"300s\"")]);
    std::fs::write(host(d.path(), "ivr-2", "opt/ivr/broken-5.2.0"), "").unwrap();
    let start = Instant::now();
    let out = apply(d.path(), &[]);
    let took = start.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // 3 failed samples 100 ms apart end the gate; 150 s is half its timeout,
    // a margin no loaded machine eats, and still fails if the timeout is waited out.
    assert!(took < Duration::from_secs(150), "the gate waited {took:?}");
    assert_eq!(version(d.path(), "ivr-1"), "5.2.0", "the canary passed its gate and stays");
    for h in ["ivr-2", "ivr-3"] {
        assert_eq!(version(d.path(), h), "5.1.0", "wave 1 went back on {h}");
    }
    for h in ["ivr-4", "ivr-5", "ivr-6"] {
        assert_eq!(version(d.path(), h), "5.1.0", "wave 2 never started on {h}");
    }
}

// See issue 25: with `--max-fail 1` and one client refusing, the old server's
// `retire` ran while that client still named it.
#[test]
fn a_server_is_not_retired_while_a_client_that_did_not_switch_still_names_it() {
    let d = demo();
    edit_farm(d.path(), &[("reload = \"mkdir -p var/log && echo reload ivr-web >> var/log/reload.log\"", "reload = \"true\"\nretire = \"touch retired\"")]);
    // Another apply (of another workstation) holds ivr-3's lock: it refuses, and keeps web-a.
    let lock = host(d.path(), "ivr-3", "/var/lib/farmctl/hosts/ivr-3/lock");
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(lock.join("owner"), "ops@elsewhere pid=1 plan=0000000000000000 since=2026-01-01T00:00:00Z\n").unwrap();
    // Without --max-fail the stage stops before any host switches: the retire
    // left undone is named too (it used to go unmentioned).
    let out = apply(d.path(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!host(d.path(), "web-a", "retired").exists(), "web-a was retired with no client switched: {err}");
    assert!(err.contains("web-a is not retired: the run stopped before its retire"), "{err}");
    let out = apply(d.path(), &["--max-fail", "1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let ivr3 = std::fs::read_to_string(host(d.path(), "ivr-3", "/etc/ivr/ivr.toml")).unwrap();
    assert!(ivr3.contains("web-a"), "ivr-3 did not switch and still names web-a");
    let ivr1 = std::fs::read_to_string(host(d.path(), "ivr-1", "/etc/ivr/ivr.toml")).unwrap();
    assert!(!ivr1.contains("web-a"), "the other clients switched");
    assert!(!host(d.path(), "web-a", "retired").exists(), "web-a was retired while ivr-3 names it: {err}");
    // Once ivr-3 is free, the same apply finishes the job and only then retires web-a.
    std::fs::remove_dir_all(&lock).unwrap();
    let out = apply(d.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(host(d.path(), "web-a", "retired").exists(), "web-a is retired once nothing names it");
}

// See issue 25: an apply interrupted after its renames (Ctrl-C during a slow
// reload) still ran `retire` and exited 0.
#[test]
fn an_apply_interrupted_during_its_reloads_does_not_retire_and_says_so() {
    use std::os::unix::process::CommandExt;
    let d = demo();
    edit_farm(
        d.path(),
        &[
            ("reload = \"mkdir -p var/log && echo reload ivr-web >> var/log/reload.log\"", "reload = \"true\"\nretire = \"touch retired\""),
            ("reload = \"mkdir -p var/log && echo reload ivr >> var/log/reload.log\"", "reload = \"touch reloading; sleep 5; touch reloaded\""),
        ],
    );
    // Its own process group, as a terminal's foreground job: the Ctrl-C below
    // goes to the whole group, as a terminal sends it.
    let child = farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0).spawn().unwrap();
    // Once a reload runs, that host's files are renamed into place.
    let marker = host(d.path(), "ivr-1", "reloading");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "ivr-1 never started its reload");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    let ivr1 = std::fs::read_to_string(host(d.path(), "ivr-1", "/etc/ivr/ivr.toml")).unwrap();
    assert!(ivr1.contains("web-b") && !ivr1.contains("web-a"), "ivr-1 had switched when it was interrupted");
    // The host finishes its switch, reload included, as a remote host would:
    // the interrupt reaches farmctl, not the hosts' scripts.
    assert!(host(d.path(), "ivr-1", "reloaded").exists(), "ivr-1's reload was cut short by the interrupt");
    assert!(!host(d.path(), "web-a", "retired").exists(), "web-a was retired after an interrupt: {err}");
    assert_ne!(out.status.code(), Some(0), "an interrupted apply does not exit 0: {err}");
    assert!(err.contains("web-a is not retired: the run was interrupted"), "the retire left undone is named: {err}");
    assert!(err.contains("run its role's `retire` on it yourself"), "what is left to do is said: {err}");
    // As the message says: applied again with no client left to switch, the
    // run finishes (its rollout) and does not retire web-a.
    let out = apply(d.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!host(d.path(), "web-a", "retired").exists(), "web-a is retired by the operator, as the message says");
}

// See issue 25: with the journal's path unwritable, every edit and upgrade ran
// and nothing was journaled.
#[test]
fn an_apply_that_cannot_journal_writes_nothing() {
    let d = demo();
    // A file where the journal's directory should be: no uid can create the journal.
    std::fs::write(d.path().join("state"), b"").unwrap();
    let before = snapshot(d.path());
    let out = apply(d.path(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("journal"), "the journal is named: {err}");
    assert_eq!(snapshot(d.path()), before, "nothing was written on any host");
}

// See issue 25: rollback of a plan that was never applied reported hosts
// "rolled back to 5.1.0 (from 5.2.0), healthy again" and journaled it.
#[test]
fn rolling_back_a_plan_that_was_never_applied_claims_and_journals_nothing() {
    let d = demo();
    std::fs::create_dir(d.path().join("plans")).unwrap();
    let out = farmctl(d.path()).args(["plan", "inventories/demo.toml", "-o", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = snapshot(d.path());
    let out = farmctl(d.path()).args(["rollback", "plans/p.json", "--yes"]).output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(snapshot(d.path()), before, "nothing to undo, nothing touched");
    let journal = std::fs::read_to_string(d.path().join("state/journal.jsonl")).unwrap_or_default();
    assert!(!journal.contains("rolled-back"), "no host was rolled back, and the journal says none was: {journal}");
    // Nor does the summary (it said "rolled back: ivr-1..ivr-3" and "rollout: at
    // the new version: ivr-1..ivr-6" of hosts that never left 5.1.0).
    let said = text(&out.stdout) + &err;
    assert!(!said.contains("rolled back:") && !said.contains("at the new version"), "{said}");
    assert!(said.contains("already as before (nothing to roll back): ivr-1..ivr-3"), "{said}");
    assert!(said.contains("rollout: already at that version: ivr-1..ivr-6"), "{said}");
    assert!(said.contains("rollback complete: nothing needed changing on 6 host(s)."), "{said}");
}

// See issue 25: `--limit ''` (an unset `$HOSTS` in a script) applied the whole farm.
#[test]
fn an_empty_limit_is_refused_not_taken_for_the_whole_farm() {
    let d = demo();
    let before = snapshot(d.path());
    let out = apply(d.path(), &["--limit", ""]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("--limit"), "{err}");
    assert_eq!(snapshot(d.path()), before, "nothing was written on any host");
}

// See issue 25: a canary reporting `error_rate=-inf` was promoted. No answer,
// NaN or an infinity is never a pass: the gate fails and the canary goes back.
#[test]
fn a_health_metric_that_is_not_a_finite_number_fails_the_gate() {
    let d = demo();
    edit_farm(d.path(), &[("health = \"test -s opt/ivr/VERSION && echo error_rate=0\"", "health = \"echo error_rate=-inf\"")]);
    let out = apply(d.path(), &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for h in ["ivr-1", "ivr-2", "ivr-6"] {
        assert_eq!(version(d.path(), h), "5.1.0", "the canary went back and no wave started, on {h}");
    }
}

// See issue 25: after `plan -o` then `apply PLAN.json` (the review workflow),
// the switch fell back to the workstation's word with a false note that the
// hosts' clocks could not be read: the kept read had dropped them.
#[test]
fn a_saved_plan_switches_by_the_hosts_clocks_as_the_farm_file_does() {
    let d = demo();
    // Far enough ahead that planning and staging finish before it on a loaded machine.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    edit_farm(d.path(), &[("old = \"web-a\"\nnew = \"web-b\"", &format!("old = \"web-a\"\nnew = \"web-b\"\nat = \"{at}\""))]);
    std::fs::create_dir(d.path().join("plans")).unwrap();
    let out = farmctl(d.path()).args(["plan", "inventories/demo.toml", "-o", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = farmctl(d.path()).args(["apply", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ivr1 = std::fs::read_to_string(host(d.path(), "ivr-1", "/etc/ivr/ivr.toml")).unwrap();
    assert!(!ivr1.contains("web-a"), "the switch happened");
    let journal = std::fs::read_to_string(d.path().join("state/journal.jsonl")).unwrap();
    let written: Vec<serde_json::Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|e: &serde_json::Value| e["outcome"] == "written").collect();
    assert!(!written.is_empty(), "{journal}");
    for e in &written {
        assert!(e.get("clock_offset_ms").is_some(), "every rename was fired by its host's clock, and measured: {e}");
    }
}

// See issue 25: re-applying an applied plan listed its differences instead of
// saying that it was applied, and when.
#[test]
fn a_saved_plan_applied_once_is_refused_the_second_time_as_applied() {
    let d = demo();
    std::fs::create_dir(d.path().join("plans")).unwrap();
    let out = farmctl(d.path()).args(["plan", "inventories/demo.toml", "-o", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = farmctl(d.path()).args(["apply", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = snapshot(d.path());
    let out = farmctl(d.path()).args(["apply", "plans/p.json"]).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("was already applied at 20"), "said as applied, with when: {err}");
    assert_eq!(snapshot(d.path()), after, "nothing was done the second time");
}

// See issue 25: `-q` still printed the whole plan.
#[test]
fn a_quiet_apply_prints_no_plan() {
    let d = demo();
    let out = farmctl(d.path()).args(["-q", "apply", "inventories/demo.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("@@"), "no diff on the screen with -q: {all}");
    assert_eq!(version(d.path(), "ivr-6"), "5.2.0", "and the apply ran");
}

// See issue 25: a switch time that passed while the confirmation prompt
// waited was applied 5.6 s late, with a note. It is refused now. The prompt
// needs a terminal: `script` gives farmctl a pseudo-terminal, and the answer
// comes once T has passed.
#[test]
fn a_switch_time_that_passes_at_the_prompt_is_refused_and_nothing_is_written() {
    let d = demo();
    // T is 6 s ahead: room for farmctl to read, plan and reach its prompt on a
    // loaded machine; the answer comes 3 s after T.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(6);
    edit_farm(d.path(), &[("old = \"web-a\"\nnew = \"web-b\"", &format!("old = \"web-a\"\nnew = \"web-b\"\nat = \"{at}\""))]);
    let before = snapshot(d.path());
    let cmd = format!("{} apply inventories/demo.toml", env!("CARGO_BIN_EXE_farmctl"));
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(d.path())
        .env("NO_COLOR", "1")
        .env("FARMCTL_JOURNAL", d.path().join("state/journal.jsonl"))
        .env("FARMCTL_CACHE_DIR", d.path().join("cache"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let wait = (at.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0) as u64 + 3000;
    std::thread::sleep(Duration::from_millis(wait));
    {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        w.write_all(b"yes\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("Do you want to apply this plan?"), "it asked: {all}");
    assert!(all.contains("has passed"), "refused, saying why: {all}");
    assert_eq!(snapshot(d.path()), before, "nothing was written on any host");
}
