//! Unit tests of the scripts, quoting included, run through a real `sh`.

use super::*;

#[test]
fn quoting_makes_metacharacters_inert() {
    assert_eq!(q("/etc/a b"), "'/etc/a b'");
    assert_eq!(q("$(touch /tmp/x)"), "'$(touch /tmp/x)'");
    assert_eq!(q("it's"), "\"it's\"");
    assert_eq!(q("a\nb"), "'a\nb'");
    assert_eq!(q("x\0y"), "''");
}

#[test]
fn quoted_words_come_back_unchanged_through_sh() {
    for word in ["$(touch /tmp/farmctl-pwned)", "`id`", "a;b", "it's \"x\"", "line\nbreak", "*"] {
        let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {}", q(word))).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
    }
    assert!(!std::path::Path::new("/tmp/farmctl-pwned").exists());
}

#[test]
fn read_state_quotes_every_path() {
    let s = read_state("/demo/r", "/var/lib/farmctl/hosts/x", &["/etc/$(reboot)".into(), "/etc/a;b".into()], Some("cat /opt/v; echo $(id)"));
    assert!(s.contains("sh -c 'cat /opt/v; echo $(id)'"), "{s}");
    assert!(s.contains("for f in '/demo/r/etc/$(reboot)' '/demo/r/etc/a;b'; do"), "{s}");
}

#[test]
fn read_state_output_parses() {
    let out = b"H ivr-1\nT 1000000000000\nV ok 5.1.0\nA abc-0 2026-12-01T02:00:00Z\nM\nF 644 root adm\naGVsbG8K\nOK\nU permission denied\n";
    let paths = vec!["/a".to_string(), "/b".to_string(), "/c".to_string()];
    let st = parse_read_state(out, &paths, 999_990, 1_000_010).unwrap();
    assert_eq!(st.hostname, "ivr-1");
    assert_eq!(st.version, Some(Ok("5.1.0".to_string())));
    assert_eq!(st.armed, vec![("abc-0".to_string(), "2026-12-01T02:00:00Z".to_string())]);
    assert_eq!(st.clock_offset_ms, Some(0));
    assert_eq!(st.files["/a"], FileState::Missing);
    match &st.files["/b"] {
        FileState::Present(f) => {
            assert_eq!(f.content, b"hello\n");
            assert_eq!(f.mode, "644");
            assert_eq!(f.group, "adm");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.files["/c"], FileState::Unreadable(Unreadable::PermissionDenied));
    assert!(parse_read_state(b"H x\nT 1\nF 644 a b\nYWJj\nX\n", &paths[..1], 0, 0).is_err());
}

fn ids() -> RunIds {
    RunIds { root: "".into(), state_dir: "/var/lib/farmctl/hosts/ivr-1".into(), plan_id: "abc123".into(), token: "tok".into(), host: "ivr-1".into(), fence: None }
}

fn one() -> Vec<FileWrite> {
    vec![FileWrite { path: "/etc/x y.conf".into(), before_sha256: "b".repeat(64), after_sha256: "a".repeat(64), len: 12 }]
}

#[test]
fn stage_checks_before_writing_and_reads_exact_lengths() {
    let s = stage(&ids(), "me@ws pid=1", &one());
    let check = s.find("CHANGED 0").unwrap();
    let write = s.find("dd bs=65536 count=12 iflag=count_bytes,fullblock 2>&1 >").unwrap();
    assert!(check < write);
    assert!(s.contains("readlink -f -- '/etc/x y.conf'"));
    assert!(s.contains("printf '%s\\n' 'me@ws pid=1' > \"$S/lock/owner\""));
    assert!(!s.contains("mv -f"), "staging never renames into place");
    assert!(s.contains(".farmctl-$N@$P"), "staged copies are named per farm host: {s}");
}

#[test]
fn write_errors_carry_the_errno_text_and_its_cause() {
    // A staged copy that cannot be created says why, in the host's own words.
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let target = ro.join("f.conf");
    std::fs::write(&target, "x\n").unwrap();
    let files = vec![FileWrite { path: target.display().to_string(), before_sha256: crate::farm::sha256_hex(b"x\n"), after_sha256: "a".repeat(64), len: 2 }];
    let ids = RunIds { state_dir: dir.path().join("state").display().to_string(), ..ids() };
    let s = stage(&ids, "me", &files);
    // Read-only for everyone but root: make the write fail with EACCES or EROFS-like errors through a file in the way.
    std::fs::create_dir(ro.join(".f.conf.farmctl-ivr-1@abc123")).unwrap();
    let out = std::process::Command::new("sh").arg("-c").arg(&s).stdin(std::process::Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = parse_report(&out.stdout).into_iter().find_map(|r| if let Report::Error(e) = r { Some(e) } else { None }).unwrap_or_else(|| panic!("no ERR line: {text}"));
    assert!(err.contains("cannot write the staged copy of 0: ") && err.contains("Is a directory"), "{err}");
    assert_eq!(error_cause("cannot write: No space left on device").1, Some(crate::transport::protocol::Cause::NoSpace));
    assert_eq!(error_cause("cannot create: Permission denied").1, Some(crate::transport::protocol::Cause::PermissionDenied));
    assert_eq!(error_cause("cannot write: Is a directory").1, None, "no cause is guessed");
}

#[test]
fn a_reload_runs_under_the_hosts_umask_not_the_staging_one() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made-by-reload");
    let mut s = String::from("U=0022\numask 077\n");
    reload_lines(&mut s, "", Some(&format!("touch {}", q(&made.display().to_string()))));
    let out = std::process::Command::new("sh").arg("-c").arg(&s).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("RELOAD 0"), "{}", String::from_utf8_lossy(&out.stdout));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn switch_quotes_the_reload_and_renames_after_checks() {
    let cmd = "systemctl reload 'ivr'; echo $HOME";
    let s = switch(&ids(), &one(), Some(cmd), Trigger::Word);
    let rename = s.find("mv -f -- \"$s0\"").unwrap();
    assert!(s.find("echo ARMED").unwrap() < rename);
    assert!(s.find("read -r word").unwrap() < rename);
    let check = s.find("if [ \"$word\" = check ]").unwrap();
    assert!(s[check..].find("CHANGED 0").unwrap() < s[check..].find("CHECKED ok").unwrap());
    assert!(s.find("CHANGED 0").unwrap() < rename);
    assert!(s.contains(&format!("{{U:-022}}\"; sh -c {} 2>&1)", q(cmd))), "{s}");
    let local = switch(&RunIds { root: "/tmp/r oot".into(), ..ids() }, &one(), Some("true"), Trigger::Word);
    assert!(local.contains("cd '/tmp/r oot' && sh -c true"));
    assert!(local.contains("readlink -f -- '/tmp/r oot/etc/x y.conf'"));
}

#[test]
fn a_timed_switch_sleeps_interruptibly_and_checks_again_before_renaming() {
    let s = switch(&ids(), &one(), None, Trigger::At(1_800_000_000_000_000_000));
    assert!(s.contains("T=1800000000000000000"));
    assert!(s.contains("& wait $!"), "sleep must not block the cancel trap");
    let wait = s.find("w=$T").unwrap();
    assert!(s[wait..].find("CHANGED 0").unwrap() < s[wait..].find("mv -f -- \"$s0\"").unwrap());
    assert!(!s.contains("read -r word"));
}

#[test]
fn detach_quotes_the_time_and_reads_the_job_from_stdin() {
    let s = detach(&ids(), "2026-12-01T02:00:00Z; reboot");
    assert!(s.contains("printf '%s\\n' '2026-12-01T02:00:00Z; reboot' > \"$J.at\""), "{s}");
    assert!(s.contains("cat > \"$J.sh\""));
}

// See issue 24: BusyBox has `setsid` but no `nohup`; a detached switch must
// still start, outlive its session, and log.
#[test]
fn a_detached_job_starts_and_outlives_its_session_under_dash_and_busybox() {
    for (name, mut shell) in Shells::new().each() {
        let dir = tempfile::tempdir().unwrap();
        let ids = RunIds { state_dir: dir.path().join("state").display().to_string(), ..ids() };
        let s = detach(&ids, "2026-12-01T02:00:00Z");
        let mut child = shell.arg("-c").arg(&s).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"echo ARMED\nsleep 1\necho DONE\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("ARMED"), "{name}: {}", String::from_utf8_lossy(&out.stdout));
        // The session has ended; the job goes on, and its log says it finished.
        let log = dir.path().join("state/armed/abc123.log");
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(&log).unwrap_or_default().contains("DONE") {
            assert!(start.elapsed() < std::time::Duration::from_secs(20), "{name}: the job never finished: {:?}", std::fs::read_to_string(&log));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[test]
fn batched_hashes_match_without_the_file_by_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a b"), dir.path().join("c\\d"));
    std::fs::write(&a, "one\n").unwrap();
    std::fs::write(&b, "two\n").unwrap();
    let files: Vec<FileWrite> = [(&a, "one\n"), (&b, "two\n")]
        .iter()
        .map(|(p, c)| FileWrite { path: p.display().to_string(), before_sha256: crate::farm::sha256_hex(c.as_bytes()), after_sha256: String::new(), len: 0 })
        .collect();
    let mut s = format!("fail() {{ echo \"FAIL $1\"; exit 1; }}\nt0={}\nt1={}\n", q(&files[0].path), q(&files[1].path));
    cas_checks(&mut s, &files, |f| &f.before_sha256);
    s.push_str("[ \"$G\" = \"$E\" ] && echo FAST\necho bad=$bad\n");
    let out = std::process::Command::new("sh").arg("-c").arg(&s).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "FAST\nbad=0\n", "{s}");
    std::fs::write(&b, "changed\n").unwrap();
    let out = std::process::Command::new("sh").arg("-c").arg(&s).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("CHANGED 1 ") && text.ends_with("bad=1\n"), "{text}");
}

#[test]
fn reports_parse() {
    let r = parse_report(b"LOCKED bob@ws pid=3\nCHANGED 1 abc\nRENAMED 0 1700000000123456789\nRELOAD 1 b29wcw==\nnoise\nDONE\n");
    assert_eq!(
        r,
        vec![
            Report::Locked("bob@ws pid=3".into()),
            Report::Changed { file: 1, now: "abc".into() },
            Report::Renamed { file: 0, at_ns: 1_700_000_000_123_456_789 },
            Report::Reload { status: 1, output: "oops".into() },
            Report::Done
        ]
    );
}

#[test]
fn a_host_that_fails_its_check_leaves_before_any_word_can_make_it_switch() {
    let s = switch(&ids(), &one(), None, Trigger::Word);
    let bad = s.find("echo 'CHECKED bad'").unwrap();
    let exit = s[bad..].find("exit 4").unwrap();
    assert!(exit < s[bad..].find("read -r word").unwrap(), "{s}");
}

#[test]
fn told_at_a_time_a_host_checks_once_more_and_waits_for_its_own_clock() {
    let s = switch(&ids(), &one(), None, Trigger::Word);
    let at = s.find("at)\n").unwrap();
    let rest = &s[at..];
    // Committed: a dropped session no longer stops it; a malformed time aborts.
    assert!(rest.find("trap '' HUP PIPE").unwrap() < rest.find("mv -f").unwrap());
    assert!(
        rest.find("*[!0-9]*) cleanup; unlock; echo ABORTED")
            .unwrap()
            < rest.find("trap ''").unwrap()
    );
    let recheck = rest.find("CHANGED 0").unwrap();
    // With perl, one process started after the last look waits and renames; without, date and sleep, then mv.
    assert!(recheck < rest.find("perl -e").unwrap());
    assert!(recheck < rest.find("w=$arg").unwrap());
    assert!(rest.find("w=$arg").unwrap() < rest.find("mv -f").unwrap());
}

#[test]
fn the_wait_for_a_host_clock_instant_never_wakes_early() {
    // Under BusyBox too, whose `date` has no %N: its clock comes from `adjtimex`.
    let mut s = String::new();
    super::now_ns(&mut s);
    super::switch::until_ns(&mut s, "$1");
    s.push_str("now_ns\n");
    let shells = Shells::new();
    for (ahead_ms, (name, mut shell)) in [0i128, 30, 250, 1200].into_iter().flat_map(|ms| shells.each().into_iter().map(move |sh| (ms, sh))) {
        let now = jiff::Timestamp::now().as_nanosecond();
        let target = now + ahead_ms * 1_000_000;
        let out = shell.arg("-c").arg(&s).arg("sh").arg(target.to_string()).output().unwrap();
        let woke: i128 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert!(woke >= target, "{name}: woke {} ms before the instant", (target - woke) / 1_000_000);
        // Generous: the point is that it waited, not how precisely (a loaded machine oversleeps).
        assert!(woke - target < 2_000_000_000, "{name}: woke {} ms after", (woke - target) / 1_000_000);
    }
}

#[test]
fn a_host_with_perl_renames_at_t_in_a_process_started_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in ["a", "b"] {
        std::fs::write(d.join(format!("staged-{n}")), n).unwrap();
        std::fs::write(d.join(n), "old").unwrap();
    }
    let t = jiff::Timestamp::now().as_nanosecond() + 300_000_000;
    let arg = |p: &str| d.join(p).display().to_string();
    let out = std::process::Command::new("perl")
        .args(["-e", super::switch::AT_T, &t.to_string(), &arg("staged-a"), &arg("a"), &arg("staged-b"), &arg("b")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "a");
    assert_eq!(std::fs::read_to_string(d.join("b")).unwrap(), "b");
    let times: Vec<i128> = text.lines().map(|l| l.strip_prefix("RENAMED ").unwrap().split(' ').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(times.len(), 2, "{text}");
    assert!(times.iter().all(|r| *r >= t), "renamed before T: {text} (T {t})");
    // And by the files themselves, not only perl's word (see issue 25): each
    // rename set its file's ctime, from the kernel's coarse clock, which may
    // read up to a tick (a few ms) early; 20 ms is well beyond a tick.
    use std::os::unix::fs::MetadataExt;
    for n in ["a", "b"] {
        let m = std::fs::metadata(d.join(n)).unwrap();
        let ctime = m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128;
        assert!(ctime >= t - 20_000_000, "{n} was renamed {} ms before T", (t - ctime) / 1_000_000);
    }
    // A rename that fails stops there, named, and what was renamed before it is reported.
    let out = std::process::Command::new("perl")
        .args(["-e", super::switch::AT_T, "0", &arg("a"), &arg("c"), &arg("missing"), &arg("b")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3));
    assert!(text.starts_with("RENAMED 0 ") && text.contains("ERR cannot rename 1: No such file or directory"), "{text}");
    assert_eq!(std::fs::read_to_string(d.join("b")).unwrap(), "b", "nothing after the failure is touched");
}

/// Two target files with their staged content, in a temp dir: (dir, files, input, ids).
fn two_files() -> (tempfile::TempDir, Vec<FileWrite>, Vec<u8>, RunIds) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut input = Vec::new();
    for name in ["a.conf", "b.conf"] {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("old {name}\n")).unwrap();
        let new = format!("new {name}\n");
        files.push(FileWrite { path: p.display().to_string(), before_sha256: crate::farm::sha256_hex(format!("old {name}\n").as_bytes()), after_sha256: crate::farm::sha256_hex(new.as_bytes()), len: new.len() });
        input.extend_from_slice(new.as_bytes());
    }
    let ids = RunIds { state_dir: dir.path().join("state").display().to_string(), ..ids() };
    (dir, files, input, ids)
}

// See issue 25: an immutable target (`chattr +i`) left a host with one file
// of several new. Now, as root, every target is probed before anything is staged.
#[test]
fn an_immutable_target_is_refused_before_anything_is_staged() {
    if !std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n") {
        panic!("this test needs root (chattr +i): run it through the README's test command");
    }
    let (dir, files, input, ids) = two_files();
    let b = dir.path().join("b.conf");
    assert!(std::process::Command::new("chattr").arg("+i").arg(&b).status().unwrap().success(), "chattr +i works here");
    let s = stage_and_switch(&ids, "me", &files, None);
    let mut child = std::process::Command::new("sh").arg("-c").arg(&s).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        let mut w = child.stdin.take().unwrap();
        let _ = w.write_all(&input);
        let _ = w.write_all(b"go\n");
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::process::Command::new("chattr").arg("-i").arg(&b).status();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = parse_report(&out.stdout).into_iter().find_map(|r| if let Report::Error(e) = r { Some(e) } else { None }).unwrap_or_else(|| panic!("no ERR line: {text}"));
    assert!(err.contains("cannot replace 1") && err.contains("Operation not permitted"), "{err}");
    assert_eq!(error_cause(&err).1, Some(crate::transport::protocol::Cause::NotPermitted));
    assert_eq!(std::fs::read_to_string(dir.path().join("a.conf")).unwrap(), "old a.conf\n", "the other file was not switched");
    assert!(!text.contains("STAGED"), "nothing was staged: {text}");
}

// See issue 25: a rename that fails part way through a host puts back the
// files already renamed, from their backups, and says so.
#[test]
fn a_rename_that_fails_part_way_puts_back_the_files_already_renamed() {
    let (dir, files, input, ids) = two_files();
    let s = stage_and_switch(&ids, "me", &files, None);
    let mut child = std::process::Command::new("sh").arg("-c").arg(&s).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut w = child.stdin.take().unwrap();
    let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
    use std::io::{BufRead, Write};
    w.write_all(&input).unwrap();
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "the script ended before ARMED: {seen}");
        seen.push_str(&line);
        if line == "ARMED\n" {
            break;
        }
    }
    // The second file's staged copy disappears: its rename fails after the first one's.
    let staged = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_string_lossy().starts_with(".b.conf.farmctl-")).expect("b's staged copy");
    std::fs::remove_file(staged).unwrap();
    w.write_all(b"go\n").unwrap();
    drop(w);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
    child.wait().unwrap();
    let reports = parse_report(rest.as_bytes());
    assert!(reports.contains(&Report::Restored(0)), "the first file is put back and said so: {rest}");
    assert_eq!(std::fs::read_to_string(dir.path().join("a.conf")).unwrap(), "old a.conf\n", "all of the host's files or none");
    assert_eq!(std::fs::read_to_string(dir.path().join("b.conf")).unwrap(), "old b.conf\n");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "no staged or put-back copies are left: {leftovers:?}");
}

/// A directory of BusyBox applet links: a PATH that holds BusyBox alone, as
/// on a BusyBox appliance or Alpine. (The README's test command installs
/// Debian's `busybox`; without it this fails loudly, never skips.)
fn busybox_path() -> (tempfile::TempDir, std::path::PathBuf) {
    let bb = ["/bin/busybox", "/usr/bin/busybox"].iter().map(std::path::PathBuf::from).find(|p| p.exists()).expect("busybox is installed (the README's test command installs it)");
    let dir = tempfile::tempdir().unwrap();
    let list = std::process::Command::new(&bb).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        std::os::unix::fs::symlink(&bb, dir.path().join(applet)).unwrap();
    }
    (dir, bb)
}

/// The shells every host script is tried under: `dash` with the machine's
/// tools, and BusyBox `ash` with BusyBox's applets alone on its PATH.
pub(super) struct Shells {
    applets: tempfile::TempDir,
    busybox: std::path::PathBuf,
}

impl Shells {
    pub(super) fn new() -> Shells {
        let (applets, busybox) = busybox_path();
        Shells { applets, busybox }
    }

    /// A fresh command for each shell, ready for `-c SCRIPT`.
    pub(super) fn each(&self) -> Vec<(&'static str, std::process::Command)> {
        let mut ash = std::process::Command::new(&self.busybox);
        ash.arg("sh").env("PATH", self.applets.path());
        let mut dash = std::process::Command::new("dash");
        dash.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        vec![("dash", dash), ("busybox ash", ash)]
    }
}

// See issue 24: on a BusyBox host every apply failed with "a staged copy does
// not hold the planned content": BusyBox's `head -c` reads ahead, and the
// second file's bytes went into the first's read.
#[test]
fn a_stage_and_switch_of_two_files_writes_both_under_dash_and_busybox() {
    for (name, mut shell) in Shells::new().each() {
        let (dir, files, input, ids) = two_files();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("b.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let s = stage_and_switch(&ids, "me", &files, None);
        let mut child = shell.arg("-c").arg(&s).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        {
            use std::io::Write;
            let mut w = child.stdin.take().unwrap();
            w.write_all(&input).unwrap();
            w.write_all(b"go\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(dir.path().join("a.conf")).unwrap(), "new a.conf\n", "{name}: {text}");
        assert_eq!(std::fs::read_to_string(dir.path().join("b.conf")).unwrap(), "new b.conf\n", "{name}: {text}");
        let mode = std::fs::metadata(dir.path().join("b.conf")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{name}: the mode is kept");
        assert!(parse_report(&out.stdout).contains(&Report::Done), "{name}: {text}");
    }
}

#[test]
fn the_read_reports_every_file_and_its_hash_under_dash_and_busybox() {
    for (name, mut shell) in Shells::new().each() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.conf"), "alpha\n").unwrap();
        std::fs::write(dir.path().join("b.bin"), [0u8, 255, 10, 13]).unwrap();
        let paths: Vec<String> = ["a.conf", "b.bin", "missing"].iter().map(|p| dir.path().join(p).display().to_string()).collect();
        let s = read_state("", &dir.path().join("state").display().to_string(), &paths, Some("echo 5.1.0"));
        let out = shell.arg("-c").arg(&s).output().unwrap();
        let st = parse_read_state(&out.stdout, &paths, 0, 1).unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        match &st.files[&paths[1]] {
            FileState::Present(i) => assert_eq!((i.content.as_slice(), i.sha256.as_str()), (&[0u8, 255, 10, 13][..], crate::farm::sha256_hex(&[0, 255, 10, 13]).as_str()), "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(st.files[&paths[2]], FileState::Missing, "{name}");
        assert_eq!(st.version, Some(Ok("5.1.0".to_string())), "{name}");
    }
}

// See issue 24: the lease read its clock with `date +%s%3N` (a literal %3N
// on BusyBox), and a client asked `nc -z`, which BusyBox's nc does not have:
// a member that was up read as down.
#[test]
fn the_lease_and_a_clients_look_at_a_member_work_under_dash_and_busybox() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap().port();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Accept and close at once, as a plain service would after a probe.
    std::thread::spawn(move || for c in listener.incoming() { drop(c) });
    for (name, mut shell) in Shells::new().each() {
        let dir = tempfile::tempdir().unwrap();
        let s = service::lease("", &dir.path().display().to_string(), "web", "me@ws:1", 3000, service::LeaseOp::Acquire, "note");
        let before = jiff::Timestamp::now().as_millisecond();
        let out = shell.arg("-c").arg(&s).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let epoch: i64 = text.lines().find_map(|l| l.strip_prefix("LEASE ok ")).and_then(|e| e.trim().parse().ok()).unwrap_or_else(|| panic!("{name}: {text}{}", String::from_utf8_lossy(&out.stderr)));
        // The epoch is the time the lease was taken, in ms by the host's clock.
        assert!((epoch - before).abs() < 5_000, "{name}: epoch {epoch} vs now {before}");
    }
    let shells = Shells::new();
    for (expect, port) in [("REACH up", up), ("REACH down", closed)] {
        for (name, mut shell) in shells.each() {
            let talk = crate::farm::Talk { port, send: String::new(), expect: String::new() };
            let out = shell.arg("-c").arg(service::reach("127.0.0.1", &talk, std::time::Duration::from_secs(2))).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expect, "{name}, port {port}");
        }
    }
}

// Found by the rollout model test: a lock let go while another script looked
// at it (its files removed, its directory not yet) was reported as held by an
// unknown holder, and the run stopped. It is taken after all.
#[test]
fn a_lock_let_go_while_it_is_looked_at_is_taken_not_reported() {
    for (name, mut shell) in Shells::new().each() {
        let dir = tempfile::tempdir().unwrap();
        let ids = RunIds { state_dir: dir.path().join("state").display().to_string(), ..ids() };
        let lock = dir.path().join("state/lock");
        std::fs::create_dir_all(&lock).unwrap();
        let s = jobs::upgrade(&ids, "me@ws pid=1 plan=p since=t", "echo 2.0", "2.0", "true", None);
        let child = shell.arg("-c").arg(&s).stdout(std::process::Stdio::piped()).spawn().unwrap();
        // The other holder lets go a moment later (no owner line was ever written).
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::remove_dir(&lock).unwrap();
        let out = child.wait_with_output().unwrap();
        let reports = parse_report(&out.stdout);
        assert!(!reports.iter().any(|r| matches!(r, Report::Locked(_))), "{name}: {reports:?}");
        assert!(reports.contains(&Report::UpToDate("2.0".into())) && reports.contains(&Report::Done), "{name}: {reports:?}");
    }
}

// Issue 22: the address script was tried with iproute2's `ip` alone. Here it
// runs under dash with iproute2 and under BusyBox ash with BusyBox's own `ip`
// (its applets alone on the PATH), each in a network namespace of its own:
// it finds the interface by the member's own address, adds the virtual
// address there, says so, and removes it again.
#[test]
fn the_address_script_takes_and_drops_an_address_with_iproute2_and_with_busybox_ip() {
    let (applets, busybox) = busybox_path();
    for (name, program, shell, path) in [
        ("dash + iproute2", "dash", None, "/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ("busybox ash + busybox ip", busybox.to_str().unwrap(), Some("sh"), applets.path().display().to_string()),
    ] {
        let state = tempfile::tempdir().unwrap();
        let s = state.path().display().to_string();
        let run = |script: String| {
            // A network namespace of its own: `lo` holds the member's own address.
            let setup = "ip link set lo up && ip addr add 10.9.9.9/8 dev lo || exit 9\n";
            let mut c = std::process::Command::new("unshare");
            c.arg("-n").arg("--").arg(program);
            if let Some(sh) = shell {
                c.arg(sh);
            }
            let probe = "echo ---; ip -4 addr show dev lo";
            let out = c.arg("-c").arg(format!("{setup}{script}\n{probe}")).env("PATH", &path).output().unwrap();
            assert!(out.status.success(), "{name}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let take = address(&s, "web", 7, AddressOp::Take, "198.18.99.100/24", None, "10.9.9.9");
        let out = run(take.clone());
        let (said, seen) = out.split_once("---").unwrap();
        assert!(said.contains("ADDRESS taken") && said.contains("ADDRESS held lo"), "{name}: {out}");
        assert!(seen.contains("inet 198.18.99.100/24"), "{name}: the address is on lo: {out}");
        // Taken and then dropped in one namespace: gone, and said so.
        let drop = address(&s, "web", 7, AddressOp::Drop, "198.18.99.100/24", None, "10.9.9.9");
        let out = run(format!("{take}\n{drop}"));
        let (said, seen) = out.split_once("---").unwrap();
        assert!(said.contains("ADDRESS dropped") && said.contains("ADDRESS free"), "{name}: {out}");
        assert!(!seen.contains("198.18.99.100") && seen.contains("inet 10.9.9.9/8"), "{name}: only the member's own address is left: {out}");
    }
}
