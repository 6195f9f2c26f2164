//! The fault-injection suite: hosts that die or hang at each step of an
//! apply, full and read-only disks, refused permissions, awkward files,
//! files changed under farmctl's feet, concurrent applies and a killed
//! workstation, all on real sshd lab hosts. Every case ends by checking every
//! file on every host: old or new content, never torn, nothing left behind.
//! docs/RELIABILITY.md has one row per test here.

mod lab;

use lab::voice::{farm, farm_custom, ivr_files, lab, WEB_A_TO_C};
use lab::{stderr, stdout, Lab, Options};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

const IVR_A: [&str; 3] = ["ivr-1", "ivr-2", "ivr-3"];

/// Every target is whole: each IVR host of web-a holds either all old or all
/// new content, as `switched` says; no staged copy or lock is left anywhere.
#[track_caller]
fn assert_whole(lab: &Lab, switched: &[&str]) {
    // Every host, web hosts included (see issue 10: this once checked only the IVR hosts).
    let mut checked = 0;
    for h in lab.hosts.values() {
        if h.name.starts_with("ivr") {
            let (toml, peers) = ivr_files(lab, &h.name, switched.contains(&h.name.as_str()));
            assert_eq!(String::from_utf8_lossy(&h.read("/etc/ivr/ivr.toml")), toml, "{}:/etc/ivr/ivr.toml", h.name);
            assert_eq!(String::from_utf8_lossy(&h.read("/etc/ivr/peers.conf")), peers, "{}:/etc/ivr/peers.conf", h.name);
        } else {
            assert_eq!(String::from_utf8_lossy(&h.read("/etc/ivr-web/web.toml")), format!("[server]\nname = \"{}\"\n", h.name), "{}:/etc/ivr-web/web.toml", h.name);
        }
        checked += 1;
    }
    assert_eq!(checked, lab.hosts.len());
    assert_clean(lab);
}

/// No staged dotfile and no lock on any host.
#[track_caller]
fn assert_clean(lab: &Lab) {
    let left: Vec<String> = lab.snapshot().keys().filter(|(_, p)| p.contains(".farmctl-")).map(|(h, p)| format!("{h}:{p}")).collect();
    assert!(left.is_empty(), "staged copies left behind: {left:?}");
    for h in lab.hosts.values() {
        assert!(!h.state("lock").exists(), "{} is still locked", h.name);
    }
}

/// Reads the child's stderr until a line starts with `prefix`; the rest is
/// read on in the background, so that the child never writes to a closed pipe.
fn wait_for_line(child: &mut std::process::Child, prefix: &str) -> std::thread::JoinHandle<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let prefix = prefix.to_string();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if line.starts_with(&prefix) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    rx.recv_timeout(Duration::from_secs(120)).expect("the line never came");
    reader
}

fn backups(lab: &Lab, host: &str) -> usize {
    std::fs::read_dir(lab.host(host).state("backups")).map(|d| d.count()).unwrap_or(0)
}

fn apply(lab: &Lab, extra: &[&str]) -> std::process::Output {
    lab.farmctl().args(["apply", "farm.toml", "--yes"]).args(extra).output().unwrap()
}

#[test]
fn a_host_killed_before_staging_stops_the_apply_with_nothing_written() {
    let mut lab = lab();
    farm(&lab, WEB_A_TO_C);
    lab.host("ivr-2").inject("stage", "die");
    let out = apply(&lab, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(lab.host("ivr-2").injected());
    let err = stderr(&out);
    assert!(err.contains("ivr-2: failed, nothing written: lost the connection to ivr-2"), "{err}");
    assert!(err.contains("aborted (nothing written)"), "{err}");
    lab.host_mut("ivr-2").restart();
    assert_whole(&lab, &[]);
    assert_eq!(apply(&lab, &[]).status.code(), Some(0), "the next apply converges");
    assert_whole(&lab, &IVR_A);
}

#[test]
fn a_host_killed_during_a_write_leaves_its_target_whole_and_the_next_apply_recovers() {
    let mut lab = lab();
    farm(&lab, WEB_A_TO_C);
    // A 50 MB peers.conf keeps the write going long enough to be cut.
    let ivr2 = lab.host("ivr-2");
    let (_, peers) = ivr_files(&lab, "ivr-2", false);
    let mut big = peers.clone().into_bytes();
    big.extend(std::iter::repeat_n(b"# padding line for a large config file ........................\n".as_slice(), 800_000).flatten());
    ivr2.write("/etc/ivr/peers.conf", &big);
    ivr2.inject("stage", "die-midway");
    let out = apply(&lab, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ivr-2: failed, nothing written"), "{}", stderr(&out));
    assert_eq!(lab.host("ivr-2").read("/etc/ivr/peers.conf"), big, "the target is untouched");
    for h in ["ivr-1", "ivr-3"] {
        let (toml, _) = ivr_files(&lab, h, false);
        assert_eq!(String::from_utf8_lossy(&lab.host(h).read("/etc/ivr/ivr.toml")), toml);
    }

    // The host comes back with the dead run's lock and a partial staged copy
    // (see issue 25: this once said so without looking).
    lab.host_mut("ivr-2").restart();
    assert!(lab.host("ivr-2").state("lock").exists(), "the crash left a lock");
    let staged: Vec<u64> = std::fs::read_dir(lab.host("ivr-2").path("/etc/ivr"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".peers.conf.farmctl-") && !e.file_name().to_string_lossy().ends_with("-probe"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert!(staged.len() == 1 && staged[0] < big.len() as u64, "a partial staged copy was left: {staged:?} of {} bytes", big.len());
    let out = apply(&lab, &[]);
    assert!(out.status.success(), "a stale lock of a dead local farmctl is recovered: {}", stderr(&out));
    let mut want = big.clone();
    let (_, new_peers) = ivr_files(&lab, "ivr-2", true);
    want.splice(..peers.len(), new_peers.into_bytes());
    assert_eq!(lab.host("ivr-2").read("/etc/ivr/peers.conf"), want, "50 MB edited token-exact");
    let small = ivr_files(&lab, "ivr-2", true).1;
    lab.host("ivr-2").write("/etc/ivr/peers.conf", small.as_bytes());
    assert_whole(&lab, &IVR_A);
}

#[test]
fn a_host_killed_once_armed_stops_the_switch_on_every_host_and_the_next_apply_recovers() {
    let mut lab = lab();
    farm(&lab, WEB_A_TO_C);
    // The fault fires in the switch phase alone: ivr-2 stages, says ARMED, and dies.
    lab.host("ivr-2").inject("switch", "die-armed");
    let out = apply(&lab, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let fired = std::fs::read_to_string(lab.host("ivr-2").dir.join("injected")).unwrap_or_default();
    assert!(fired.lines().any(|l| l.starts_with("armed ")), "ivr-2 died after it armed, not before: {fired:?}");
    assert!(err.contains("ivr-2: failed, nothing written: lost the connection to ivr-2"), "the dead host is named: {err}");
    // No host switched: every file as before, the live hosts clean.
    for h in lab.hosts.values().filter(|h| h.name != "ivr-2") {
        assert!(!h.state("lock").exists(), "{} is still locked", h.name);
    }
    let left: Vec<String> = lab.snapshot().keys().filter(|(h, p)| h != "ivr-2" && p.contains(".farmctl-")).map(|(h, p)| format!("{h}:{p}")).collect();
    assert!(left.is_empty(), "staged copies left on live hosts: {left:?}");
    for h in IVR_A {
        let (toml, peers) = ivr_files(&lab, h, false);
        assert_eq!(String::from_utf8_lossy(&lab.host(h).read("/etc/ivr/ivr.toml")), toml, "{h}:/etc/ivr/ivr.toml");
        assert_eq!(String::from_utf8_lossy(&lab.host(h).read("/etc/ivr/peers.conf")), peers, "{h}:/etc/ivr/peers.conf");
    }
    assert!(!err.contains("applied:"), "and the summary says none did: {err}");

    // ivr-2 comes back holding the dead run's lock and whole staged copies:
    // it had armed, so it died in the switch phase and nowhere else.
    lab.host_mut("ivr-2").restart();
    assert!(lab.host("ivr-2").state("lock").exists(), "the crash left a lock: {fired:?} {err}");
    let (new_toml, _) = ivr_files(&lab, "ivr-2", true);
    let staged: Vec<Vec<u8>> = std::fs::read_dir(lab.host("ivr-2").path("/etc/ivr"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ivr.toml.farmctl-") && !e.file_name().to_string_lossy().ends_with("-probe"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert_eq!(staged, vec![new_toml.into_bytes()], "one whole staged copy of ivr.toml was left");
    let out = apply(&lab, &[]);
    assert!(out.status.success(), "the next apply recovers the dead run's lock and switches: {}", stderr(&out));
    assert_whole(&lab, &IVR_A);
}

#[test]
fn a_host_killed_after_its_rename_and_before_its_reload_is_reported_with_whole_files() {
    let mut lab = lab();
    farm_custom(&lab, "touch /var/log/farmlab/reloading; sleep 3; echo reload >> /var/log/farmlab/reloads", "", WEB_A_TO_C);
    let child = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stderr(Stdio::piped()).spawn().unwrap();
    let marker = lab.host("ivr-2").path("/var/log/farmlab/reloading");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "ivr-2 never started its reload");
        std::thread::sleep(Duration::from_millis(10));
    }
    lab.host_mut("ivr-2").crash();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ivr-2: failed"), "{err}");
    assert!(err.contains("applied: ivr-1, ivr-3"), "{err}");
    assert!(!lab.host("ivr-2").path("/var/log/farmlab/reloads").exists(), "ivr-2 died before its reload finished");
    assert_eq!(backups(&lab, "ivr-2"), 1, "the backup is on the host");
    lab.host_mut("ivr-2").restart();
    // The renames happened: ivr-2 holds the whole new files. Its lock is the dead run's.
    let out = apply(&lab, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes."), "{}", stdout(&out));
    let out = lab.farmctl().args(["unlock", "farm.toml", "--yes", "--limit", "ivr-2"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_whole(&lab, &IVR_A);
}

#[test]
fn a_hung_host_times_out_and_is_named_and_farmctl_does_not_hang() {
    let lab = lab();
    farm_custom(&lab, "true", "command_timeout = \"4s\"\n", WEB_A_TO_C);
    lab.host("ivr-3").hang();
    let started = Instant::now();
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(30), "plan took {:?}", started.elapsed());
    let err = stderr(&out);
    assert!(err.contains("ivr-3: ivr-3 did not answer within") || err.contains("ivr-3: cannot connect to ivr-3"), "{err}");
    lab.host("ivr-3").resume();

    // Hung in the middle of staging.
    lab.host("ivr-3").inject("stage", "hang");
    let started = Instant::now();
    let out = apply(&lab, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(40), "apply took {:?}", started.elapsed());
    assert!(stderr(&out).contains("ivr-3: failed, nothing written: ivr-3 did not answer within 4s"), "{}", stderr(&out));
    lab.host("ivr-3").resume();
    for h in ["ivr-1", "ivr-2"] {
        let (toml, _) = ivr_files(&lab, h, false);
        assert_eq!(String::from_utf8_lossy(&lab.host(h).read("/etc/ivr/ivr.toml")), toml, "{h} is untouched");
        assert!(!lab.host(h).state("lock").exists());
    }
}

#[test]
fn a_full_disk_stops_the_apply_and_loses_nothing() {
    let lab = Lab::start_with(lab::voice::NAMES, Options { tmpfs: vec![("ivr-2", "/etc/ivr", "48k")], ..Default::default() });
    lab::voice::fill(&lab);
    farm(&lab, WEB_A_TO_C);
    // Pad ivr-2's TOML so that its staged copy cannot fit beside it.
    let ivr2 = lab.host("ivr-2");
    let (toml, _) = ivr_files(&lab, "ivr-2", false);
    let padded = format!("{toml}{}", "# padding to fill the disk ........................................\n".repeat(450));
    ivr2.write("/etc/ivr/ivr.toml", padded.as_bytes());
    let out = apply(&lab, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-2: failed, nothing written: cannot write the staged copy of /etc/ivr/ivr.toml: "), "{err}");
    assert!(err.contains("No space left on device") && err.contains("hint: the host's disk is full"), "the cause is read from the host: {err}");
    assert_eq!(String::from_utf8_lossy(&ivr2.read("/etc/ivr/ivr.toml")), padded);
    ivr2.write("/etc/ivr/ivr.toml", toml.as_bytes());
    assert_whole(&lab, &[]);
}

#[test]
fn a_read_only_filesystem_is_named_and_nothing_is_written() {
    let lab = Lab::start_with(lab::voice::NAMES, Options { tmpfs: vec![("ivr-3", "/etc/ivr", "1m")], ..Default::default() });
    lab::voice::fill(&lab);
    farm(&lab, WEB_A_TO_C);
    let dir = lab.host("ivr-3").path("/etc/ivr");
    assert!(std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(&dir).status().unwrap().success());
    let out = apply(&lab, &[]);
    let _ = std::process::Command::new("mount").args(["-o", "remount,rw"]).arg(&dir).status();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // Named at the read, before anything is staged anywhere (issue 24).
    assert!(err.contains("ivr-3: /etc/ivr/ivr.toml: this user may not replace it: its directory is not writable (permissions, or a read-only file system)"), "{err}");
    assert!(err.contains("mount the file system read-write"), "{err}");
    assert!(!err.contains("disk is full"), "a read-only disk is not called full: {err}");
    assert_whole(&lab, &[]);
}

#[test]
fn permission_denied_is_named_with_a_hint() {
    let lab = lab();
    // A system user that may log in by key (a locked account may not).
    let _ = std::process::Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/bin/sh", "farmlab"]).output();
    let _ = std::process::Command::new("usermod").args(["-p", "*", "farmlab"]).output();
    farm(&lab, WEB_A_TO_C);
    let farm_path = lab.dir.path().join("farm.toml");
    let text = std::fs::read_to_string(&farm_path).unwrap().replace("[hosts.ivr-1]\n", "[hosts.ivr-1]\nuser = \"farmlab\"\n");
    std::fs::write(&farm_path, text).unwrap();
    // As farmlab, ivr-1's files are readable but nothing there is writable:
    // named at the read, before anything is staged anywhere (issue 24).
    let before = lab.snapshot();
    let out = apply(&lab, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-1: /etc/ivr/ivr.toml: this user may not replace it: its directory is not writable"), "{err}");
    assert!(err.contains("set [ssh] sudo = true"), "{err}");
    lab::assert_same(&before, &lab.snapshot(), "nothing was staged anywhere");
    // With the config directory writable for it, the state directory is what it may not write.
    let etc = lab.host("ivr-1").path("/etc/ivr");
    std::fs::set_permissions(&etc, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = apply(&lab, &[]);
    std::fs::set_permissions(&etc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-1: failed, nothing written: cannot create the state directory /var/lib/farmctl/hosts/ivr-1"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // The cause is read from the host's errno text, and the hint follows it (never "disk full?").
    assert!(err.contains("hint: the SSH user may not write there"), "{err}");
    assert!(!err.contains("disk full"), "{err}");
    assert_whole(&lab, &[]);
    // A file farmlab cannot read stops the plan, naming host and path, with a hint.
    std::fs::set_permissions(lab.host("ivr-1").path("/etc/ivr/peers.conf"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-1: /etc/ivr/peers.conf: permission denied"), "{err}");
    assert!(err.contains("hint: connect as a user who may read it, or set [ssh] sudo = true"), "{err}");
}

#[test]
fn awkward_files_are_edited_exactly() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let (a, c) = (lab.host("web-a").address.clone(), lab.host("web-c").address.clone());
    // ivr-1: no peers.conf at all.
    std::fs::remove_file(lab.host("ivr-1").path("/etc/ivr/peers.conf")).unwrap();
    // ivr-2: a binary peers.conf with NUL bytes around the name.
    let binary = |w: &str, addr: &str| [b"\x00\x01BIN\x00".as_slice(), w.as_bytes(), b"\x00\xff\xfe ", addr.as_bytes(), b"\x00web-ab\x00"].concat();
    lab.host("ivr-2").write("/etc/ivr/peers.conf", &binary("web-a", &a));
    // ivr-3: Latin-1 (not UTF-8) comments; a TOML file with CRLF line endings.
    let latin = |w: &str| [b"# caf\xe9 r\xe9seau\r\nweb ".as_slice(), w.as_bytes(), b" \xa0\xe9\n"].concat();
    lab.host("ivr-3").write("/etc/ivr/peers.conf", &latin("web-a"));
    let crlf = |w: &str| format!("# IVR\r\n[web]\r\nprimary = \"{w}\"\r\n");
    lab.host("ivr-3").write("/etc/ivr/ivr.toml", crlf("web-a").as_bytes());
    // ivr-1: ivr.toml is a symlink into another directory.
    let ivr1 = lab.host("ivr-1");
    let (toml, _) = ivr_files(&lab, "ivr-1", false);
    ivr1.write("/etc/ivr/real/ivr.toml", toml.as_bytes());
    std::fs::remove_file(ivr1.path("/etc/ivr/ivr.toml")).unwrap();
    std::os::unix::fs::symlink("real/ivr.toml", ivr1.path("/etc/ivr/ivr.toml")).unwrap();

    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ivr-1:/etc/ivr/peers.conf does not exist; nothing to edit there"), "{text}");
    assert!(text.contains("Binary file ivr-2:/etc/ivr/peers.conf changed"), "{text}");

    let out = apply(&lab, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!ivr1.path("/etc/ivr/peers.conf").exists(), "a missing file is not created");
    assert_eq!(std::fs::read_link(ivr1.path("/etc/ivr/ivr.toml")).unwrap(), std::path::PathBuf::from("real/ivr.toml"), "the link is kept");
    assert_eq!(String::from_utf8_lossy(&ivr1.read("/etc/ivr/real/ivr.toml")), ivr_files(&lab, "ivr-1", true).0, "the edit lands in the target");
    assert_eq!(lab.host("ivr-2").read("/etc/ivr/peers.conf"), binary("web-c", &c));
    assert_eq!(lab.host("ivr-3").read("/etc/ivr/peers.conf"), latin("web-c"));
    assert_eq!(lab.host("ivr-3").read("/etc/ivr/ivr.toml"), crlf("web-c").into_bytes());
    assert_clean(&lab);
}

#[test]
fn a_file_changed_between_staging_and_the_switch_stops_every_host() {
    let lab = lab();
    let t = jiff::Timestamp::from_millisecond((jiff::Timestamp::now() + Duration::from_secs(12)).as_millisecond()).unwrap();
    farm(&lab, &format!("{WEB_A_TO_C}at = \"{t}\"\n"));
    let mut child = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stderr(Stdio::piped()).spawn().unwrap();
    let log = wait_for_line(&mut child, "switching at ");
    // Every host is staged and armed; now someone edits ivr-2 by hand.
    let ivr2 = lab.host("ivr-2");
    let mut edited = ivr2.read("/etc/ivr/ivr.toml");
    edited.extend_from_slice(b"# hand edit during the countdown\n");
    ivr2.write("/etc/ivr/ivr.toml", &edited);
    let status = child.wait().unwrap();
    let err = log.join().unwrap();
    let out = std::process::Output { status, stdout: vec![], stderr: vec![] };
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ivr-2: refused, nothing written: changed since the plan: /etc/ivr/ivr.toml"), "{err}");
    assert!(err.contains("aborted (nothing written): ivr-1, ivr-3"), "{err}");
    assert_eq!(ivr2.read("/etc/ivr/ivr.toml"), edited, "the hand edit is kept");
    let (toml, _) = ivr_files(&lab, "ivr-2", false);
    ivr2.write("/etc/ivr/ivr.toml", toml.as_bytes());
    assert_whole(&lab, &[]);
}

#[test]
fn two_applies_at_once_one_proceeds_and_the_other_is_refused_naming_the_holder() {
    let lab = lab();
    let t = jiff::Timestamp::from_millisecond((jiff::Timestamp::now() + Duration::from_secs(10)).as_millisecond()).unwrap();
    farm(&lab, &format!("{WEB_A_TO_C}at = \"{t}\"\n"));
    let first = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stderr(Stdio::piped()).spawn().unwrap();
    let second = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stderr(Stdio::piped()).spawn().unwrap();
    let (pids, outs) = ([first.id(), second.id()], [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()]);
    let ok: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(ok.len(), 1, "exactly one proceeds:\n{}\n---\n{}", stderr(&outs[0]), stderr(&outs[1]));
    let (winner, loser) = (ok[0], 1 - ok[0]);
    let err = stderr(&outs[loser]);
    assert!(err.contains("another apply holds the lock ("), "{err}");
    assert!(err.contains(&format!("pid={}", pids[winner])), "the holder is named: {err}");
    assert_whole(&lab, &IVR_A);
}

#[test]
fn a_workstation_killed_mid_apply_leaves_hosts_whole_and_the_next_run_converges() {
    let lab = lab();
    let t = jiff::Timestamp::from_millisecond((jiff::Timestamp::now() + Duration::from_secs(12)).as_millisecond()).unwrap();
    farm(&lab, &format!("{WEB_A_TO_C}at = \"{t}\"\n"));
    let mut child = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stderr(Stdio::piped()).spawn().unwrap();
    let _log = wait_for_line(&mut child, "switching at ");
    // Every host is armed and waiting for the word; the workstation dies.
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let out = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Each host saw its connection close, so it dropped its staged copies and its lock.
    assert_whole(&lab, &[]);
    std::thread::sleep(Duration::from_millis((t.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0) as u64 + 500));
    assert_whole(&lab, &[]);
    farm(&lab, WEB_A_TO_C);
    let out = apply(&lab, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_whole(&lab, &IVR_A);
}

// See issue 11: reload commands ran under umask 077, so files they made came out 0600.
#[test]
fn a_file_made_by_a_reload_gets_the_hosts_usual_mode() {
    let lab = lab();
    lab::voice::farm_custom(&lab, "umask > /var/log/farmlab/umask; touch /var/log/farmlab/made-by-reload", "", WEB_A_TO_C);
    let out = apply(&lab, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ivr1 = lab.host("ivr-1");
    assert_eq!(std::fs::read_to_string(ivr1.path("/var/log/farmlab/umask")).unwrap().trim(), "0022", "the reload runs under the session's umask");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(ivr1.path("/var/log/farmlab/made-by-reload")).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o644);
}

// See issue 11: after an early failure, hosts that never ran were listed as "applied".
#[test]
fn hosts_of_a_later_stage_are_reported_not_reached_and_the_journal_agrees() {
    let lab = lab();
    let t = jiff::Timestamp::now() + std::time::Duration::from_secs(120);
    farm(&lab, &format!("{WEB_A_TO_C}[[replace]]\nold = \"web-b\"\nnew = \"web-c\"\nat = \"{t}\"\n"));
    // Another apply holds ivr-1: the first stage fails at once.
    lab.host("ivr-1").write("/var/lib/farmctl/hosts/ivr-1/lock/owner", b"alice@ops-ws pid=4711 plan=abc since=2026-11-23T01:00:00Z\n");
    let before = lab.snapshot();
    let out = apply(&lab, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for h in ["ivr-4", "ivr-5", "ivr-6"] {
        assert!(err.contains(&format!("{h}: not reached, nothing written")), "{err}");
    }
    assert!(!err.contains("applied"), "{err}");
    lab::assert_same(&lab.snapshot(), &before, "nothing was written");
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    for h in ["ivr-4", "ivr-5", "ivr-6"] {
        let lines: Vec<&str> = journal.lines().filter(|l| l.contains(&format!("\"host\":\"{h}\""))).collect();
        assert_eq!(lines.len(), 2, "{h}: {journal}");
        assert!(lines.iter().all(|l| l.contains("\"outcome\":\"not-reached\"")), "{h}: {journal}");
    }
}

// See issue 25: the bind-mounted hosts-file refusal had no test, and an
// unreplaceable target could leave a host half-written. A file that is a
// mount point on its host (as Docker mounts /etc/hosts) is refused before
// anything is staged anywhere, named, with the mount-point hint.
#[test]
fn a_bind_mounted_target_is_refused_before_anything_is_staged() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let h = lab.host("ivr-2");
    // The same content, from a file elsewhere, bind-mounted over the target in the host's own mount namespace.
    let source = h.dir.join("peers-source.conf");
    std::fs::write(&source, h.read("/etc/ivr/peers.conf")).unwrap();
    let pid = h.pid().unwrap().to_string();
    let status = std::process::Command::new("nsenter").args(["-t", &pid, "-m", "mount", "--bind"]).arg(&source).arg("/etc/ivr/peers.conf").status().unwrap();
    assert!(status.success(), "the bind mount is made in ivr-2's namespace");
    let before = std::fs::read(&source).unwrap();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ivr-2") && err.contains("/etc/ivr/peers.conf") && err.contains("mount point"), "named, with the mount-point hint: {err}");
    assert_eq!(std::fs::read(&source).unwrap(), before, "the mounted file is untouched");
    assert_whole(&lab, &[]);
}
