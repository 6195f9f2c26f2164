//! Scheduled switches on the lab farm: every host at one instant, detached
//! timers, cancel, gates, swaps, chains and circles, over real SSH.

mod lab;

use lab::voice::{farm, farm_custom, lab, render, IVR_TOML, PEERS};
use lab::{stderr, stdout, Lab};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

const IVRS: [&str; 6] = ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

fn at(secs: u64) -> jiff::Timestamp {
    let t = jiff::Timestamp::now() + Duration::from_secs(secs);
    // Whole milliseconds, as an operator would write it.
    jiff::Timestamp::from_millisecond(t.as_millisecond()).unwrap()
}

/// The time the inode of a host file last changed: for a renamed-in file, the rename.
fn ctime_ns(lab: &Lab, host: &str, path: &str) -> i128 {
    let m = std::fs::metadata(lab.host(host).path(path)).unwrap();
    m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
}

fn skew_printed(err: &str) -> f64 {
    let line = err.lines().find(|l| l.contains(": skew ")).unwrap_or_else(|| panic!("no skew line in:\n{err}"));
    line.split(": skew ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
}

fn replace_all_ivrs(t: jiff::Timestamp) -> String {
    // Both web-a (ivr-1..3) and web-b (ivr-4..6) move, so all six IVR hosts switch.
    format!(
        "[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\nat = \"{t}\"\n\n[[replace]]\nold = \"web-b\"\nnew = \"web-c\"\nat = \"{t}\"\n"
    )
}

#[test]
fn every_host_switches_together_at_the_scheduled_instant() {
    let lab = lab();
    let t = at(6);
    farm(&lab, &replace_all_ivrs(t));
    let before = lab.snapshot();
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert!(stdout(&out).contains(&format!("switch at {t} (in ")), "{}", stdout(&out));

    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{}{err}", stdout(&out));
    let t_ns = t.as_nanosecond();
    let times: Vec<i128> = IVRS.iter().map(|h| ctime_ns(&lab, h, "/etc/ivr/ivr.toml")).collect();
    for (h, c) in IVRS.iter().zip(&times) {
        assert!(
            *c >= t_ns - CTIME_TICK_NS,
            "{h} switched {} ms before T",
            (t_ns - c) as f64 / 1e6
        );
    }
    let measured = (times.iter().max().unwrap() - times.iter().min().unwrap()) as f64 / 1e6;
    // A margin, not the target: six hosts wake at T on 2 cores shared with a
    // second test, and a woken shell can wait tens of ms for a core (50 lab
    // hosts measured 6-17 ms quiet, 59-76 ms loaded: docs/BENCHMARKS.md). The
    // 50 ms target is the benchmark's; this fails when a host waits for a word.
    assert!(measured < 100.0, "the hosts switched {measured:.1} ms apart");
    let printed = skew_printed(&err);
    // Each ctime lags its rename by up to a kernel tick (CTIME_TICK_NS), so the
    // two measures of the skew may differ by that much and a little more.
    assert!((printed - measured).abs() < 10.0, "farmctl says {printed} ms, the hosts' ctimes say {measured:.1} ms");
    assert!(err.contains("host clock offsets against this workstation: ivr-1 "), "{err}");
    let after = lab.snapshot();
    assert_ne!(after, before);
    let (b, c) = (&lab.host("web-b").address, &lab.host("web-c").address);
    assert_eq!(String::from_utf8(lab.host("ivr-5").read("/etc/ivr/peers.conf")).unwrap(), render(PEERS, "ivr-5", "web-c", c, "web-b", b));
}

/// How far a file's ctime may lag the true time: the kernel stamps it from its
/// coarse clock, one tick behind at most (4 ms at HZ=250; 10 ms at HZ=100).
const CTIME_TICK_NS: i128 = 10_000_000;

/// Each IVR host's rename of /etc/ivr/ivr.toml, in ns after `t` (negative: before).
fn renames_after(lab: &Lab, t: jiff::Timestamp) -> Vec<(&'static str, i128)> {
    IVRS.iter()
        .map(|h| {
            (
                *h,
                ctime_ns(lab, h, "/etc/ivr/ivr.toml") - t.as_nanosecond(),
            )
        })
        .collect()
}

#[test]
fn hosts_far_apart_switch_at_t_by_their_own_clocks_where_the_workstations_word_lands_late() {
    let lab = lab();
    // One-way delays from 0 to 150 ms, as sites far apart would have: ivr-6 is the farthest.
    let config = lab.delayed_ssh_config(
        "ssh_config_far",
        &[
            ("ivr-2", 30),
            ("ivr-3", 60),
            ("ivr-4", 90),
            ("ivr-5", 120),
            ("ivr-6", 150),
        ],
    );
    let ssh = format!("config_file = \"{}\"\n", config.display());
    let reload = "echo reload $(hostname) >> /var/log/farmlab/reloads";
    let t = at(15);
    farm_custom(&lab, reload, &ssh, &replace_all_ivrs(t));
    let out = lab
        .farmctl()
        .args(["apply", "farm.toml", "--yes"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{}{err}", stdout(&out));
    let after = renames_after(&lab, t);
    for (h, d) in &after {
        assert!(
            *d >= -CTIME_TICK_NS,
            "{h} switched {} ms before T",
            -d / 1_000_000
        );
    }
    // On the workstation's word, ivr-6 could not switch before T + 150 ms: the
    // relay holds the word that long. By its own clock it does not wait for a word.
    let far = after[5].1 as f64 / 1e6;
    assert!(
        far < 150.0,
        "ivr-6 switched {far:.1} ms after T, as late as the network would make it"
    );
    let skew = (after.iter().map(|a| a.1).max().unwrap() - after.iter().map(|a| a.1).min().unwrap())
        as f64
        / 1e6;
    // The same margin as in every_host_switches_together_at_the_scheduled_instant;
    // on the workstation's word this would be over 150 ms.
    assert!(
        skew < 100.0,
        "the hosts switched {skew:.1} ms apart: {after:?}"
    );
    assert!(err.contains("after T by the hosts' clocks"), "{err}");
    // The journal keeps each host's rename time and its clock, as measured right before T.
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    let line = journal
        .lines()
        .find(|l| l.contains("\"host\":\"ivr-6\"") && l.contains("ivr.toml"))
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    let renamed: jiff::Timestamp = entry["renamed_at"].as_str().unwrap().parse().unwrap();
    assert!(
        renamed >= t && renamed.as_nanosecond() - t.as_nanosecond() < 150_000_000,
        "{line}"
    );
    assert!(
        entry["clock_offset_ms"].as_i64().unwrap().abs() < 50,
        "the same machine's clock, measured over 150 ms each way: {line}"
    );
    assert!(
        entry["clock_uncertainty_ms"].as_i64().unwrap() >= 150,
        "half a round trip through the relay: {line}"
    );

    // The same farm on the workstation's word: the far host lands a network delay late.
    let t = at(12);
    farm_custom(
        &lab,
        reload,
        &ssh,
        &format!("[[replace]]\nold = \"web-c\"\nnew = \"web-a\"\nat = \"{t}\"\n"),
    );
    let out = lab
        .farmctl()
        .args(["apply", "farm.toml", "--yes", "--switch-by", "workstation"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let after = renames_after(&lab, t);
    assert!(
        after[5].1 >= 150_000_000,
        "on the workstation's word ivr-6 switched {} ms after T, under the relay's 150 ms",
        after[5].1 / 1_000_000
    );
    assert!(after.iter().all(|(_, d)| *d >= 0), "{after:?}");
}

#[test]
fn a_host_whose_clock_is_off_is_refused_for_a_switch_by_the_hosts_clocks() {
    let lab = lab();
    lab.host("ivr-5").skew_clock(400);
    let t = at(8);
    farm(&lab, &replace_all_ivrs(t));
    let before = lab.snapshot();
    let out = lab
        .farmctl()
        .args(["apply", "farm.toml", "--yes"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("off by more: ivr-5 +4"),
        "names the host and its offset: {err}"
    );
    assert!(err.contains("--switch-by workstation"), "{err}");
    lab::assert_same(
        &lab.snapshot(),
        &before,
        "a refused switch stages nothing and takes no lock",
    );

    // Allowed a larger offset, ivr-5 renames at T by its own clock: 400 ms early in truth.
    // (Its perl is hidden, so this is also the path of a host without perl: `date` and `sleep`.)
    let out = lab
        .farmctl()
        .args(["apply", "farm.toml", "--yes", "--max-clock-offset", "1s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for (h, d) in renames_after(&lab, t) {
        if h == "ivr-5" {
            assert!(
                d < -200_000_000,
                "ivr-5 follows its own clock, 400 ms ahead: it switched {} ms after T",
                d / 1_000_000
            );
        } else {
            assert!(
                d >= -CTIME_TICK_NS,
                "{h} switched {} ms before T",
                -d / 1_000_000
            );
        }
    }
}

#[test]
fn a_clock_the_read_could_not_judge_is_judged_by_the_check_before_t_and_stops_every_host() {
    let lab = lab();
    // 250 ms each way hides a clock 700 ms behind from the read: its round
    // trip, a channel's opening included, leaves the offset within -450 ± 500 ms.
    // The check's single round trip puts it within -700 ± 250 ms: certainly
    // more than 50 ms off.
    lab.host("ivr-5").skew_clock(-700);
    let config = lab.delayed_ssh_config("ssh_config_far", &[("ivr-5", 250)]);
    let t = at(15);
    farm_custom(
        &lab,
        "true",
        &format!("config_file = \"{}\"\n", config.display()),
        &replace_all_ivrs(t),
    );
    let before = lab.targets();
    let out = lab
        .farmctl()
        .args(["apply", "farm.toml", "--yes"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let off: i64 = err.split("ivr-5's clock is ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{err}"));
    assert!((-800..=-600).contains(&off), "the check measured {off} ms for a clock 700 ms behind: {err}");
    assert!(
        err.contains("over --max-clock-offset 50 ms: it did not switch"),
        "{err}"
    );
    lab::assert_same(
        &lab.targets(),
        &before,
        "all or nothing: one host's clock stops every host before T",
    );
    for h in IVRS {
        assert!(
            !lab.host(h).state("lock").exists(),
            "{h}'s lock was released"
        );
    }
}

#[test]
fn a_detached_switch_fires_without_the_workstation_and_cancel_disarms_it() {
    let lab = lab();
    let t = at(10);
    farm(&lab, &replace_all_ivrs(t));
    let before = lab.snapshot();
    let started = std::time::Instant::now();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("armed (switches on the host at its time): ivr-1..ivr-6"), "{}", stderr(&out));
    assert!(jiff::Timestamp::now() < t, "farmctl returned before T ({:?})", started.elapsed());
    lab::assert_same(&lab.targets(), &before, "nothing switches before T");

    let out = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches(" armed (switch at ").count(), 6, "{}", stdout(&out));

    std::thread::sleep(Duration::from_millis((t.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0) as u64 + 1500));
    let t_ns = t.as_nanosecond();
    let times: Vec<i128> = IVRS
        .iter()
        .map(|h| ctime_ns(&lab, h, "/etc/ivr/ivr.toml"))
        .collect();
    assert!(
        times.iter().all(|c| *c >= t_ns - CTIME_TICK_NS),
        "no host switches before T"
    );
    let measured = (times.iter().max().unwrap() - times.iter().min().unwrap()) as f64 / 1e6;
    // The same margin as above: detached, each host waits by its own clock.
    assert!(measured < 100.0, "detached hosts switched {measured:.1} ms apart");
    let (a, c) = (&lab.host("web-a").address, &lab.host("web-c").address);
    assert_eq!(String::from_utf8(lab.host("ivr-2").read("/etc/ivr/ivr.toml")).unwrap(), render(IVR_TOML, "ivr-2", "web-c", c, "web-a", a));
    assert_eq!(std::fs::read_to_string(lab.host("ivr-2").path("/var/log/farmlab/reloads")).unwrap(), "reload ivr-2\n");

    let out = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    let text = stdout(&out);
    assert_eq!(text.matches(" fired (switch at ").count(), 6, "{text}");
    let printed: f64 = text.lines().find(|l| l.contains("skew")).unwrap().split("skew ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!((printed - measured).abs() < 10.0, "status says {printed} ms, ctimes say {measured:.1} ms");
    for h in IVRS {
        assert!(!lab.host(h).state("lock").exists(), "the fired job released {h}'s lock");
    }
}

#[test]
fn cancel_before_the_switch_leaves_every_file_as_it_was() {
    let lab = lab();
    let t = at(30);
    farm(&lab, &replace_all_ivrs(t));
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.farmctl().args(["cancel", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).matches(": cancelled ").count(), 6, "{}", stdout(&out));
    lab::assert_same(&lab.snapshot(), &before, "cancel leaves every file, and no staged copy, behind");
    for h in IVRS {
        assert!(!lab.host(h).state("lock").exists(), "cancel released {h}'s lock");
    }
    let out = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    assert_eq!(stdout(&out).matches(" cancelled (switch at ").count(), 6, "{}", stdout(&out));
    // And a new plan still sees everything pending.
    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_swap_and_a_chain_give_the_expected_files() {
    let lab = lab();
    let (a, b, c) = (lab.host("web-a").address.clone(), lab.host("web-b").address.clone(), lab.host("web-c").address.clone());
    farm(&lab, "[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n[[replace]]\nold = \"web-b\"\nnew = \"web-a\"\n");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for h in IVRS {
        let (was, was_addr, now, now_addr) = if ["ivr-1", "ivr-2", "ivr-3"].contains(&h) { ("web-a", &a, "web-b", &b) } else { ("web-b", &b, "web-a", &a) };
        assert_eq!(String::from_utf8(lab.host(h).read("/etc/ivr/peers.conf")).unwrap(), render(PEERS, h, now, now_addr, was, was_addr), "{h}");
    }

    // A chain on the swapped farm: web-b -> web-c and web-a -> web-b at once.
    farm(&lab, "[[replace]]\nold = \"web-b\"\nnew = \"web-c\"\n[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for h in IVRS {
        let (orig, orig_addr, now, now_addr) = if ["ivr-1", "ivr-2", "ivr-3"].contains(&h) { ("web-a", &a, "web-c", &c) } else { ("web-b", &b, "web-b", &b) };
        assert_eq!(String::from_utf8(lab.host(h).read("/etc/ivr/ivr.toml")).unwrap(), render(IVR_TOML, h, now, now_addr, orig, orig_addr), "{h}");
    }
}

#[test]
fn a_new_host_that_is_not_ready_stops_the_switch_before_any_write() {
    let lab = lab();
    farm(&lab, "[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n");
    lab.host("web-c").write("/etc/ivr-web/down", b"maintenance\n");
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("readiness check of web-c: failed: `test ! -e /etc/ivr-web/down` failed (exit 1)"), "{err}");
    assert!(err.contains("a host it would point to is not ready"), "{err}");
    lab::assert_same(&lab.snapshot(), &before, "nothing may change");
}

#[test]
fn a_circle_of_readiness_is_refused_and_named() {
    let lab = lab();
    // web-a's file names ivr-6, which web-b replaces; web-b's file names ivr-5, which web-a replaces.
    lab.host("web-a").write("/etc/ivr-web/web.toml", b"[server]\nname = \"web-a\"\npeer = \"ivr-6\"\n");
    lab.host("web-b").write("/etc/ivr-web/web.toml", b"[server]\nname = \"web-b\"\npeer = \"ivr-5\"\n");
    farm(&lab, "[[replace]]\nold = \"ivr-6\"\nnew = \"web-b\"\non = [\"web\"]\n[[replace]]\nold = \"ivr-5\"\nnew = \"web-a\"\non = [\"web\"]\n");
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("circle: edit of web-a:/etc/ivr-web/web.toml -> readiness check of web-a -> edit of web-b:/etc/ivr-web/web.toml -> readiness check of web-b -> edit of web-a:/etc/ivr-web/web.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_graph_renders_with_graphviz() {
    let lab = lab();
    farm(&lab, &replace_all_ivrs(at(3600)));
    let out = lab.farmctl().args(["graph", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph {"), "{dot}");
    assert_eq!(dot.matches("edit ivr-").count(), 12, "{dot}");
    let path = lab.dir.path().join("plan.dot");
    std::fs::write(&path, &dot).unwrap();
    let rendered = std::process::Command::new("dot").arg("-Tsvg").arg(&path).output().expect("graphviz `dot` is installed by scripts/test.sh");
    assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
    assert!(String::from_utf8_lossy(&rendered.stdout).contains("<svg"));
}

// See issue 11: the new server switched first, then a client was refused, and the rest aborted.
#[test]
fn a_client_changed_after_the_plan_stops_every_host_the_new_server_included() {
    let lab = lab();
    // web-c's own file changes too (web-b -> web-a), so web-c switches one level before its clients.
    lab.host("web-c").write("/etc/ivr-web/web.toml", b"[server]\nname = \"web-c\"\npeer = \"web-b\"\n");
    farm(&lab, "[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n[[replace]]\nold = \"web-b\"\nnew = \"web-a\"\n");
    let out = lab.farmctl().args(["plan", "farm.toml", "-o", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(lab.dir.path().join("plans/p.json")).unwrap()).unwrap();
    let level = |id: &str| plan["actions"].as_array().unwrap().iter().find(|a| a["id"] == id).map(|a| a["level"].as_u64().unwrap_or(0));
    assert_eq!(level("edit:web-c:/etc/ivr-web/web.toml@0"), Some(0), "the new server switches in the first level");
    assert_eq!(level("edit:ivr-2:/etc/ivr/ivr.toml@0"), Some(1), "its clients in the next");
    // A client of web-c changes after the plan.
    let ivr2 = lab.host("ivr-2");
    let mut toml = ivr2.read("/etc/ivr/ivr.toml");
    toml.extend_from_slice(b"# edited by hand after the plan\n");
    ivr2.write("/etc/ivr/ivr.toml", &toml);
    let before = lab.snapshot();

    let out = lab.farmctl().args(["apply", "plans/p.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    lab::assert_same(&lab.snapshot(), &before, "no host switched, the new server included");
    assert!(err.contains("ivr-2: refused, nothing written: changed since the plan: /etc/ivr/ivr.toml"), "{err}");
    assert!(err.contains("web-c: aborted, nothing written"), "the summary names the new server: {err}");
    assert!(!err.contains("applied"), "{err}");
    assert!(err.contains("no file was written on any host"), "{err}");
    for h in ["web-c", "ivr-1", "ivr-4"] {
        assert!(!lab.host(h).state("lock").exists(), "{h} released its lock");
    }
    let staged: Vec<_> = lab.snapshot().into_keys().filter(|(_, p)| p.contains(".farmctl-")).collect();
    assert!(staged.is_empty(), "no staged copy is left: {staged:?}");
}

// See issue 11: Ctrl-C during a countdown exited without a word and left staged copies and locks.
#[test]
fn ctrl_c_during_a_countdown_leaves_no_staged_copy_and_no_lock_and_says_so() {
    interrupt_during_a_countdown(Interrupt::CtrlC);
}

// See issue 25: SIGTERM (a service manager's stop) had no test of its own.
// It reaches farmctl alone, not its ssh masters, and must do what Ctrl-C does.
#[test]
fn sigterm_during_a_countdown_leaves_no_staged_copy_and_no_lock_and_says_so() {
    interrupt_during_a_countdown(Interrupt::Term);
}

// See issue 25: a second Ctrl-C "quits at once" had no test. farmctl ends at
// once (exit 130); the hosts, whose sessions end with it, drop their staged
// copies and locks by themselves; nothing switches at T.
#[test]
fn a_second_ctrl_c_quits_at_once_and_the_hosts_still_drop_their_staged_copies() {
    interrupt_during_a_countdown(Interrupt::Twice);
}

// See issue 24: an interrupt's clean-up must finish or give up within
// seconds, naming the hosts it could not reach, never wait without a deadline.
#[test]
fn an_interrupt_gives_up_on_a_hung_host_and_names_it() {
    interrupt_during_a_countdown(Interrupt::HungHost);
}

#[derive(Clone, Copy, PartialEq)]
enum Interrupt {
    CtrlC,
    Term,
    Twice,
    HungHost,
}

fn interrupt_during_a_countdown(how: Interrupt) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let lab = lab();
    let t = at(15);
    farm(&lab, &replace_all_ivrs(t));
    let before = lab.snapshot();
    // Its own process group, as a terminal's foreground job: Ctrl-C reaches farmctl and its ssh masters alike.
    let mut child = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stderr(std::process::Stdio::piped()).process_group(0).spawn().unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            if line.starts_with("switching at ") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Every host is staged and armed once the countdown shows (generous: a loaded machine stages slowly).
    rx.recv_timeout(Duration::from_secs(12)).expect("the countdown started");
    for h in IVRS {
        assert!(lab.host(h).state("lock").exists(), "{h} is staged and locked while armed");
    }
    let signal = |sig: &str, target: String| assert!(std::process::Command::new("kill").args([sig, "--", &target]).status().unwrap().success());
    match how {
        Interrupt::CtrlC => signal("-INT", format!("-{}", child.id())),
        Interrupt::Term => signal("-TERM", child.id().to_string()),
        Interrupt::HungHost => {
            lab.host("ivr-6").hang();
            signal("-INT", format!("-{}", child.id()));
        }
        Interrupt::Twice => {
            // One host hangs, so the first interrupt's clean-up waits for it.
            lab.host("ivr-6").hang();
            signal("-INT", format!("-{}", child.id()));
            std::thread::sleep(Duration::from_millis(500));
            assert!(child.try_wait().unwrap().is_none(), "the first interrupt waits for the hung host's answer");
            signal("-INT", format!("-{}", child.id()));
        }
    }
    let interrupted = std::time::Instant::now();
    let code = child.wait().unwrap().code();
    let err = reader.join().unwrap();
    if how == Interrupt::HungHost {
        // The clean-up gives up after 5 s, where the lab's command_timeout is
        // 20 s: 15 s leaves a loaded machine room and still fails a clean-up
        // that waits out the command timeout.
        assert!(interrupted.elapsed() < Duration::from_secs(15), "the clean-up waited {:?}", interrupted.elapsed());
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("ivr-6: failed, nothing written: ivr-6 did not answer the interrupt's clean-up within 5s, so it did not switch"), "the hung host is named: {err}");
        assert!(!err.contains("may or may not"), "ivr-6 was never told to switch: {err}");
        assert!(err.contains("hint: interrupted: ivr-6 did not confirm"), "the hint names the host that may keep its lock: {err}");
        assert!(!err.contains("every host that had not switched dropped its staged copies"), "{err}");
        lab.host("ivr-6").resume();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lab.hosts.values().any(|h| h.state("lock").exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("the interrupt gave up on the hung host after {:?}:\n{err}", interrupted.elapsed());
    } else if how == Interrupt::Twice {
        assert_eq!(code, Some(130), "the second interrupt quits at once: {err}");
        // The hung host comes back to a closed session and cleans up by itself: give it a moment.
        lab.host("ivr-6").resume();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lab.hosts.values().any(|h| h.state("lock").exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    } else {
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("interrupted: every host that had not switched dropped its staged copies and released its lock"), "{err}");
        assert!(err.contains("aborted, nothing written (interrupted before the switch)"), "{err}");
    }
    let check = |when: &str| {
        for h in lab.hosts.values() {
            assert!(!h.state("lock").exists(), "{when}: {} is still locked", h.name);
        }
        let staged: Vec<_> = lab.snapshot().into_keys().filter(|(_, p)| p.contains(".farmctl-")).collect();
        assert!(staged.is_empty(), "{when}: staged copies left: {staged:?}");
        lab::assert_same(&lab.snapshot(), &before, when);
    };
    check("right after the interrupt");
    // And nothing switches at T either.
    let wait = t.as_millisecond() - jiff::Timestamp::now().as_millisecond() + 1000;
    std::thread::sleep(Duration::from_millis(wait.max(0) as u64));
    check("after the switch time");
}

// See issue 25: `clock_tolerance` had no test. A host whose clock is off by
// more than the farm's tolerance is named with its offset at plan time; a
// wider tolerance is quiet.
#[test]
fn a_clock_beyond_the_farms_tolerance_is_named_at_plan_time() {
    let lab = lab();
    lab.host("ivr-5").skew_clock(2500);
    let path = farm(&lab, "");
    let plan = |lab: &Lab| stderr(&lab.farmctl().args(["plan", "farm.toml"]).output().unwrap());
    let err = plan(&lab);
    // The estimate is within half the read's round trip of +2500 ms: a
    // loaded machine reads +2480 as well as +2510, so the test allows ±400.
    let said: Option<i64> = err.split("warning: ivr-5's clock is +").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok());
    assert!(said.is_some_and(|ms| (2100..=2900).contains(&ms)) && err.contains("(tolerance 500 ms)"), "the default tolerance is 500 ms: {err}");
    assert!(!err.contains("ivr-4's clock"), "a host within the tolerance is not named: {err}");
    let text = std::fs::read_to_string(&path).unwrap().replace("[farm]\nname = \"lab\"\n", "[farm]\nname = \"lab\"\nclock_tolerance = \"5s\"\n");
    lab.write_farm("farm.toml", &text);
    let err = plan(&lab);
    assert!(!err.contains("ivr-5's clock"), "within a 5 s tolerance: {err}");
}

// See issue 25: `unlock` refusing where a detached switch is armed had no test.
#[test]
fn unlock_leaves_an_armed_switch_locked_and_it_still_fires() {
    let lab = lab();
    let t = at(10);
    farm(&lab, &replace_all_ivrs(t));
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.farmctl().args(["unlock", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "refused: {}{}", stdout(&out), stderr(&out));
    for h in IVRS {
        assert!(lab.host(h).state("lock").exists(), "{h}'s armed switch keeps its lock");
    }
    std::thread::sleep(Duration::from_millis((t.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0) as u64 + 2000));
    let (a, c) = (&lab.host("web-a").address, &lab.host("web-c").address);
    assert_eq!(String::from_utf8(lab.host("ivr-2").read("/etc/ivr/ivr.toml")).unwrap(), render(IVR_TOML, "ivr-2", "web-c", c, "web-a", a), "the armed switch fired as planned");
    for h in IVRS {
        assert!(!lab.host(h).state("lock").exists(), "the fired job released {h}'s lock");
    }
}

// See issue 11: a plain apply broke an armed switch's "stale" lock, removed its staged copies and wrote its own files.
#[test]
fn an_armed_switch_is_never_planned_over_and_fires_as_planned_then_lands_in_the_journal() {
    let lab = lab();
    let t = at(12);
    farm(&lab, &format!("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\nat = \"{t}\"\n"));
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("every switch is armed; nothing has switched yet"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("apply complete"), "{}", stderr(&out));
    assert!(stderr(&out).contains("web-a is not retired yet"), "the retire a detached switch cannot run is named: {}", stderr(&out));

    // Someone plans and applies over it: refused on each armed host, naming the switch.
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for h in ["ivr-1", "ivr-2", "ivr-3"] {
        assert!(err.contains(&format!("{h}: a switch armed with `apply --detach` waits here (job ")), "{err}");
    }
    assert!(err.contains("farmctl cancel FARM"), "{err}");
    lab::assert_same(&lab.targets(), &before, "nothing switched early");
    for h in ["ivr-1", "ivr-2", "ivr-3"] {
        assert!(lab.host(h).state("lock").exists(), "the armed switch still holds {h}");
    }

    // At T the armed switch fires as planned.
    std::thread::sleep(Duration::from_millis((t.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0) as u64 + 1500));
    let (a, c) = (&lab.host("web-a").address, &lab.host("web-c").address);
    for h in ["ivr-1", "ivr-2", "ivr-3"] {
        assert_eq!(String::from_utf8(lab.host(h).read("/etc/ivr/ivr.toml")).unwrap(), render(IVR_TOML, h, "web-c", c, "web-a", a), "{h}");
    }
    let journal = || std::fs::read_to_string(&lab.journal).unwrap();
    assert_eq!(journal().matches("\"outcome\":\"armed\"").count(), 6, "{}", journal());
    assert_eq!(journal().matches("\"outcome\":\"written\"").count(), 0, "not yet seen to fire");
    let out = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(journal().matches("\"outcome\":\"written\"").count(), 6, "status records what fired: {}", journal());
    let out = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(journal().matches("\"outcome\":\"written\"").count(), 6, "once only");
    // And the farm now plans clean.
    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
}
