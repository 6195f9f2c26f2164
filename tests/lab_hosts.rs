//! Lab hosts of other kinds (issue 24): a login user that is not root and
//! becomes root with sudo, with or without a password. Real sshd, real sudo;
//! every check is made on the hosts' files.

mod lab;

use lab::{stderr, Lab};
use std::os::unix::fs::{MetadataExt, PermissionsExt};


/// Every account these tests log in as or give files to, made once, before
/// any lab starts (see `lab::ensure_user`: a new /etc/passwd would detach a
/// BusyBox host's copy).
fn accounts() -> (u32, u32) {
    static ONCE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| {
        for u in ["fl-pw", "fl-np", "fl-bb", "fl-mx", "fl-dt", "fl-ro"] {
            lab::ensure_user(u);
        }
        service_account("fl-svc")
    })
}

fn farm(lab: &Lab, ssh: &str) -> std::path::PathBuf {
    let text = format!(
        "[farm]\nname = \"kinds\"\n\n{ssh}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/secret.conf\"]\nreload = \"touch /var/log/farmlab/reloaded\"\n\n{}\n\
         [[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n",
        lab.hosts_section(|h| if h.starts_with("web") { "web" } else { "ivr" })
    );
    lab.write_farm("farm.toml", &text)
}

fn fill(lab: &Lab) {
    for h in ["web-a", "web-b"] {
        lab.host(h).write("/etc/ivr-web/web.toml", format!("[server]\nname = \"{h}\"\n").as_bytes());
    }
    for h in lab.hosts.values().filter(|h| h.name.starts_with("ivr")) {
        h.write("/etc/ivr/ivr.toml", b"[web]\nprimary = \"web-a\"\n");
        h.write("/etc/ivr/secret.conf", b"upstream web-a\n");
    }
}

/// A user of its own for a file's owner, as a service account would be.
fn service_account(name: &str) -> (u32, u32) {
    if !std::process::Command::new("id").arg(name).output().unwrap().status.success() {
        assert!(std::process::Command::new("useradd").args(["-r", "-U", "-s", "/usr/sbin/nologin", name]).status().unwrap().success());
    }
    let id = |flag: &str| String::from_utf8(std::process::Command::new("id").arg(flag).arg(name).output().unwrap().stdout).unwrap().trim().parse::<u32>().unwrap();
    (id("-u"), id("-g"))
}

// See issue 24: a sudo that asks for a password failed every host with "the
// host's answer did not start with its hostname sudo: ... a password is
// required": a protocol message, where the operator needs what to change.
#[test]
fn sudo_that_asks_for_a_password_is_one_clear_error_per_host_at_plan_time_and_nothing_is_written() {
    accounts();
    let lab = Lab::start(&["web-a", "web-b", "ivr-1", "ivr-2"]);
    fill(&lab);
    let ssh = lab.login_user("fl-pw", "ALL=(ALL) ALL");
    farm(&lab, &ssh);
    let before = lab.snapshot();
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for h in ["ivr-1", "ivr-2", "web-a", "web-b"] {
        assert!(err.contains(&format!("{h}: sudo on {h} asks for a password")), "{h} is named with the cause: {err}");
    }
    assert!(err.contains("NOPASSWD"), "the hint says what to change: {err}");
    assert!(!err.contains("did not start with its hostname"), "no protocol words: {err}");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    lab::assert_same(&before, &lab.snapshot(), "nothing was written");
}

// See issue 24: nothing in the suite covered a non-root login with sudo.
#[test]
fn a_non_root_user_with_sudo_applies_and_every_file_keeps_its_owner_group_and_mode() {
    let (uid, gid) = accounts();
    let lab = Lab::start(&["web-a", "web-b", "ivr-1", "ivr-2"]);
    fill(&lab);
    for h in ["ivr-1", "ivr-2"] {
        let secret = lab.host(h).path("/etc/ivr/secret.conf");
        std::os::unix::fs::chown(&secret, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::set_permissions(lab.host(h).path("/etc/ivr/ivr.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let ssh = lab.login_user("fl-np", "ALL=(ALL) NOPASSWD: ALL");
    farm(&lab, &ssh);
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for h in ["ivr-1", "ivr-2"] {
        let secret = lab.host(h).path("/etc/ivr/secret.conf");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "upstream web-b\n", "{h}");
        let m = std::fs::metadata(&secret).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid, gid, 0o640), "{h}: a service account's file keeps owner, group and mode");
        let toml = lab.host(h).path("/etc/ivr/ivr.toml");
        let m = std::fs::metadata(&toml).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "{h}: a root file stays root's");
        assert!(std::fs::read_to_string(&toml).unwrap().contains("web-b"), "{h}");
        // The reload ran under sudo too: it could write where only root may.
        let reloaded = lab.host(h).path("/var/log/farmlab/reloaded");
        assert_eq!(std::fs::metadata(&reloaded).map(|m| m.uid()).ok(), Some(0), "{h}: the reload ran as root");
    }
    // The state directory (locks, backups) is root's, not the login user's.
    let state = lab.host("ivr-1").path("/var/lib/farmctl/hosts/ivr-1");
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), 0);
    // And it rolls back as it applied.
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    let plan = journal.lines().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("plan")?.as_str().map(str::to_string)).unwrap();
    let out = lab.farmctl().args(["rollback", &plan, "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for h in ["ivr-1", "ivr-2"] {
        let secret = lab.host(h).path("/etc/ivr/secret.conf");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "upstream web-a\n", "{h}");
        let m = std::fs::metadata(&secret).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid, gid, 0o640), "{h}: and after the rollback");
    }
}

/// What a lab host's shell is, asked over SSH as farmctl would reach it.
fn userland(lab: &Lab, h: &str) -> String {
    lab.over_ssh(h, "readlink -f /bin/sh; command -v perl || echo no-perl; date +%N; sh -c 'echo ${BASH_VERSION:+BASH}'")
}

// See issue 24: on a BusyBox host (ash, no perl, no GNU stat or date) every
// apply failed with "a staged copy does not hold the planned content".
#[test]
fn a_farm_mixing_gnu_busybox_and_bash_sh_hosts_applies_rolls_back_and_switches_at_its_time() {
    accounts();
    let lab = Lab::start_with(&["web-a", "web-b", "ivr-1", "ivr-2", "ivr-3"], lab::Options { busybox: vec!["ivr-2"], bash_sh: vec!["ivr-3"], ..Default::default() });
    fill(&lab);
    // The kinds are what they claim to be, as seen through SSH.
    let bb = userland(&lab, "ivr-2");
    assert!(bb.contains("busybox") && bb.contains("no-perl") && bb.contains("%N"), "ivr-2 is a BusyBox host: {bb} {}", std::fs::read_to_string(lab.host("ivr-2").dir.join("sshd.log")).unwrap_or_default());
    let gnu = userland(&lab, "ivr-1");
    assert!(!gnu.contains("busybox"), "ivr-1 is a GNU host: {gnu}");
    let bash = userland(&lab, "ivr-3");
    assert!(bash.contains("BASH"), "ivr-3's /bin/sh is bash: {bash}");
    // Logged in as a user that becomes root with sudo, on every kind.
    let ssh = lab.login_user("fl-mx", "ALL=(ALL) NOPASSWD: ALL");
    farm(&lab, &ssh);
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for h in ["ivr-1", "ivr-2", "ivr-3"] {
        assert_eq!(std::fs::read_to_string(lab.host(h).path("/etc/ivr/secret.conf")).unwrap(), "upstream web-b\n", "{h}");
        assert!(lab.host(h).path("/var/log/farmlab/reloaded").exists(), "{h}: reloaded");
    }
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    let plan = journal.lines().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("plan")?.as_str().map(str::to_string)).unwrap();
    let out = lab.farmctl().args(["rollback", &plan, "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    lab::assert_same(&before, &lab.snapshot(), "the rollback restores both kinds");

    // A scheduled switch: T far enough ahead for the read and the stage on a loaded machine.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    let text = std::fs::read_to_string(lab.dir.path().join("farm.toml")).unwrap().replace("new = \"web-b\"\n", &format!("new = \"web-b\"\nat = \"{at}\"\n"));
    lab.write_farm("farm.toml", &text);
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let t = at.as_nanosecond();
    let mut ctimes = Vec::new();
    for h in ["ivr-1", "ivr-2", "ivr-3"] {
        let p = lab.host(h).path("/etc/ivr/secret.conf");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "upstream web-b\n", "{h}");
        let m = std::fs::metadata(&p).unwrap();
        let ctime = m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128;
        // The rename sets the ctime, from the kernel's coarse clock (a tick, a few ms, early at most).
        assert!(ctime >= t - 20_000_000, "{h} switched before T: {} ms early", (t - ctime) / 1_000_000);
        ctimes.push(ctime);
    }
    // All within half a second of each other: loopback, and a wide margin for a loaded 2-core machine.
    let skew = (ctimes.iter().max().unwrap() - ctimes.iter().min().unwrap()) / 1_000_000;
    assert!(skew < 500, "skew {skew} ms between the GNU, BusyBox and bash-as-sh hosts");
    // The BusyBox host's clock was read (its `date` has no %N; `adjtimex` has microseconds),
    // so it switched by its own clock, measured right before T like the others.
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    let written: Vec<serde_json::Value> = journal.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|e: &serde_json::Value| e["outcome"] == "written").collect();
    for h in ["ivr-1", "ivr-2", "ivr-3"] {
        assert!(written.iter().any(|e| e["host"] == h && e["clock_offset_ms"].is_number()), "{h} switched by its own clock: {journal}");
    }
}

// See issue 24: on a farm with BusyBox hosts, a login user with sudo made
// `apply` hang at the stage, with no output, until a second signal.
#[test]
fn a_busybox_host_reached_as_a_sudo_user_applies_and_keeps_owners() {
    let (uid, gid) = accounts();
    let lab = Lab::start_with(&["web-a", "web-b", "ivr-1", "ivr-2"], lab::Options { busybox: vec!["ivr-1", "ivr-2"], ..Default::default() });
    fill(&lab);
    let secret = lab.host("ivr-2").path("/etc/ivr/secret.conf");
    std::os::unix::fs::chown(&secret, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let ssh = lab.login_user("fl-bb", "ALL=(ALL) NOPASSWD: ALL");
    farm(&lab, &ssh);
    let mut child = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // A hang is the failure here: 120 s is far beyond this apply on a loaded machine.
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("apply hung on the BusyBox hosts");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for h in ["ivr-1", "ivr-2"] {
        assert_eq!(std::fs::read_to_string(lab.host(h).path("/etc/ivr/secret.conf")).unwrap(), "upstream web-b\n", "{h}");
    }
    let m = std::fs::metadata(&secret).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid, gid, 0o640), "a service account's file keeps owner, group and mode on BusyBox");
}

/// The farm file with its replacement at `at`.
fn timed(lab: &Lab, ssh: &str, at: jiff::Timestamp) {
    farm(lab, ssh);
    let text = std::fs::read_to_string(lab.dir.path().join("farm.toml")).unwrap().replace("new = \"web-b\"\n", &format!("new = \"web-b\"\nat = \"{at}\"\n"));
    lab.write_farm("farm.toml", &text);
}

fn ctime_ns(p: &std::path::Path) -> i128 {
    let m = std::fs::metadata(p).unwrap();
    m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
}

// See issue 24: BusyBox has no `nohup`; a detached switch, its status and its
// cancel must work there as on GNU hosts.
#[test]
fn a_detached_switch_fires_on_busybox_hosts_and_cancel_disarms_it() {
    accounts();
    let lab = Lab::start_with(&["web-a", "web-b", "ivr-1", "ivr-2"], lab::Options { busybox: vec!["ivr-1", "ivr-2"], ..Default::default() });
    fill(&lab);
    let ssh = lab.login_user("fl-dt", "ALL=(ALL) NOPASSWD: ALL");
    // Cancel first: armed, then disarmed, nothing written, no lock left.
    timed(&lab, &ssh, jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30));
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.farmctl().args(["cancel", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    lab::assert_same(&lab.snapshot(), &before, "cancel leaves every file, and no staged copy");
    for h in ["ivr-1", "ivr-2"] {
        assert!(!lab.host(h).state("lock").exists(), "cancel released {h}'s lock");
    }
    // Then armed for T, and the workstation goes away: each host switches at T by its own clock.
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8);
    timed(&lab, &ssh, t);
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes", "--detach"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(jiff::Timestamp::now() < t, "farmctl returned before T");
    std::thread::sleep(std::time::Duration::from_millis((t.as_millisecond() - jiff::Timestamp::now().as_millisecond()).max(0) as u64 + 2000));
    for h in ["ivr-1", "ivr-2"] {
        let p = lab.host(h).path("/etc/ivr/secret.conf");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "upstream web-b\n", "{h} switched");
        // The rename sets the ctime, from the kernel's coarse clock (a few ms early at most).
        assert!(ctime_ns(&p) >= t.as_nanosecond() - 20_000_000, "{h} switched before T");
        assert!(!lab.host(h).state("lock").exists(), "the fired job released {h}'s lock");
    }
    let out = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    assert_eq!(lab::stdout(&out).matches(" fired (switch at ").count(), 2, "{}", lab::stdout(&out));
}

// See issue 24: no `flock` on BusyBox, and a rollout killed mid-wave must
// still resume without upgrading a host twice, its lock excluding a second run.
#[test]
fn a_rollout_on_busybox_hosts_killed_mid_wave_resumes_and_upgrades_no_host_twice() {
    accounts();
    let lab = Lab::start_with(&["web-a", "web-b", "ivr-1", "ivr-2"], lab::Options { busybox: vec!["ivr-1", "ivr-2"], ..Default::default() });
    fill(&lab);
    for h in ["ivr-1", "ivr-2"] {
        let host = lab.host(h);
        host.write("/etc/ivr/VERSION", b"5.1.0\n");
        // Logs each run, then takes a while: the kill lands during it.
        host.write("/etc/ivr/upgrade.sh", b"#!/bin/sh\necho \"$1\" >> /var/log/farmlab/upgrades\nsleep 2\nprintf '%s\\n' \"$1\" > /etc/ivr/VERSION\n");
    }
    let text = format!(
        "[farm]\nname = \"kinds\"\n\n{}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\"]\n\n{}\n\
         [rollout.ivr]\nversion = \"5.2.0\"\nprobe = \"cat /etc/ivr/VERSION\"\nupgrade = \"sh /etc/ivr/upgrade.sh {{version}}\"\nhealth = \"test -s /etc/ivr/VERSION\"\n\
         canary = 0\nwaves = [\"100%\"]\nmax_unavailable = 2\ngate = {{ samples = 1, interval = \"200ms\", timeout = \"30s\" }}\n",
        lab.login_user("fl-ro", "ALL=(ALL) NOPASSWD: ALL"),
        lab.hosts_section(|h| if h.starts_with("web") { "web" } else { "ivr" })
    );
    lab.write_farm("farm.toml", &text);
    let mut child = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let log = |h: &str| std::fs::read_to_string(lab.host(h).path("/var/log/farmlab/upgrades")).unwrap_or_default();
    let start = std::time::Instant::now();
    while log("ivr-1").is_empty() || log("ivr-2").is_empty() {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "the upgrades never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Applied again at once, while the killed run's upgrades still run on the hosts.
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for h in ["ivr-1", "ivr-2"] {
        assert_eq!(std::fs::read_to_string(lab.host(h).path("/etc/ivr/VERSION")).unwrap(), "5.2.0\n", "{h}");
        assert_eq!(log(h), "5.2.0\n", "{h} was upgraded once");
    }
}

// See issue 25: `[ssh] jump` had no test. Hosts reached only through a
// bastion: with the bastion up the apply goes through it; with the bastion
// down the same apply cannot reach them, which shows the path it took.
#[test]
fn hosts_behind_a_jump_host_are_reached_through_it_and_not_without_it() {
    accounts();
    let mut lab = Lab::start(&["web-a", "web-b", "ivr-1", "ivr-2", "bastion"]);
    fill(&lab);
    let b = lab.host("bastion");
    // The jump host's own settings live in the ssh_config, as OpenSSH wants them.
    let cfg = format!(
        "Host bastion\n  HostName {}\n  Port {}\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
        b.address,
        lab.port,
        lab.key.display(),
        lab.known_hosts.display()
    );
    std::fs::write(&lab.ssh_config, cfg).unwrap();
    let hosts: String = ["web-a", "web-b", "ivr-1", "ivr-2"].iter().map(|h| format!("[hosts.{h}]\naddress = \"{}\"\nrole = \"{}\"\n\n", lab.host(h).address, if h.starts_with("web") { "web" } else { "ivr" })).collect();
    let text = format!(
        "[farm]\nname = \"jump\"\n\n{}jump = \"bastion\"\n\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/secret.conf\"]\n\n{hosts}[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n",
        lab.ssh_section()
    );
    lab.write_farm("farm.toml", &text);
    lab.host_mut("bastion").kill();
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "without the bastion no host is reached: {}", stderr(&out));
    assert!(stderr(&out).contains("ivr-1") && stderr(&out).contains("cannot connect"), "named as unreachable: {}", stderr(&out));
    lab::assert_same(&before, &lab.snapshot(), "nothing written without the bastion");
    lab.host_mut("bastion").restart();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "through the bastion: {}", stderr(&out));
    for h in ["ivr-1", "ivr-2"] {
        assert_eq!(std::fs::read_to_string(lab.host(h).path("/etc/ivr/secret.conf")).unwrap(), "upstream web-b\n", "{h}");
    }
}
