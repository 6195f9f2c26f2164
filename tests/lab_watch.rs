//! `farmctl watch` on the lab farm (issue 14): web-c active and web-d standby
//! for 6 IVR clients, a heartbeat of 1 s and `dead_after` of 3 s. Killing a
//! lab host's sshd takes that host down. Times are asserted with room for a
//! loaded 2-core machine (the benchmark measures them precisely).

mod lab;
#[path = "lab/prometheus.rs"]
mod prometheus;

use lab::voice::{render, IVR_TOML, PEERS};
use lab::watcher::Watcher;
use lab::Lab;
use std::time::{Duration, Instant};

const IVRS: [&str; 6] = ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

fn start(extra: &str, ssh_config: Option<&dyn Fn(&Lab) -> String>) -> Lab {
    start_on(lab::Options::default(), extra, ssh_config)
}

fn start_on(opts: lab::Options, extra: &str, ssh_config: Option<&dyn Fn(&Lab) -> String>) -> Lab {
    let lab = Lab::start_with(&["web-c", "web-d", "ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"], opts);
    lab::voice::web_service(&lab, &IVRS);
    let mut ssh = lab.ssh_section();
    if let Some(cfg) = ssh_config {
        let path = lab.dir.path().join("watcher_ssh_config");
        std::fs::write(&path, format!("{}\n{}", cfg(&lab), std::fs::read_to_string(&lab.ssh_config).unwrap())).unwrap();
        ssh = ssh.replace(&lab.ssh_config.display().to_string(), &path.display().to_string());
    }
    let text = format!(
        "[farm]\nname = \"watch\"\n\n{ssh}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/peers.conf\"]\n\
         reload = \"echo reload >> /var/log/farmlab/reloads\"\n\n{}\n\
         [services.web]\nvirtual = \"web\"\nmembers = [\"web-c\", \"web-d\"]\nheartbeat = \"1s\"\ndead_after = \"3s\"\n{extra}",
        lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" })
    );
    lab.write_farm("farm.toml", &text);
    lab
}

fn names_web_d(lab: &Lab, i: &str) -> bool {
    let (d, c) = (&lab.host("web-d").address, &lab.host("web-c").address);
    String::from_utf8(lab.host(i).read("/etc/ivr/ivr.toml")).unwrap() == render(IVR_TOML, i, "web-d", d, "web-c", c)
        && String::from_utf8(lab.host(i).read("/etc/ivr/peers.conf")).unwrap() == render(PEERS, i, "web-d", d, "web-c", c)
}

#[test]
fn a_dead_primary_is_confirmed_and_every_client_is_repointed_and_stays_when_it_comes_back() {
    let mut lab = start("", None);
    let plan = |lab: &Lab| String::from_utf8(lab.farmctl().args(["plan", "farm.toml"]).output().unwrap().stdout).unwrap();
    assert!(plan(&lab).contains("service web: web-c is active (named by 6 client(s)); standbys: web-d"), "plan shows the active member: {}", plan(&lab));
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    // The lease note carries the last answered heartbeat from the second beat on (1 s apart).
    std::thread::sleep(Duration::from_millis(2500));
    let status = String::from_utf8(lab.farmctl().args(["status", "farm.toml"]).output().unwrap().stdout).unwrap();
    assert!(status.contains("service web: web-c is active (named by 6 client(s)); standbys: web-d (answers); watched by ") && status.contains(&format!(":{} since 20", w.child.id())), "status shows the service and its watcher: {status}");
    assert!(status.contains("; last heartbeat answered ") && status.contains(", every 1.0 s"), "and when the active member last answered: {status}");
    let killed = Instant::now();
    lab.host_mut("web-c").crash();
    // Within 5 s on a quiet machine (dead_after 3 s + the repoint); 15 s leaves room for a loaded one.
    let mut done = None;
    while killed.elapsed() < Duration::from_secs(15) {
        if IVRS.iter().all(|i| names_web_d(&lab, i)) {
            done = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = done.unwrap_or_else(|| panic!("not every client names web-d, in every file, by name and address: {}", w.text()));
    eprintln!("every client repointed {took:?} after the kill");
    assert!(w.wait_for("repointed", 5));
    let log = w.text();
    for event in ["missed", "confirmed", "failover", "repointed"] {
        assert!(log.contains(&format!("web: {event}: ")), "the log shows {event}: {log}");
    }
    // Right after a failover that worked, the service is served: `status`
    // says so, shows the dead member as a standby that is down, and exits 0.
    let st = lab.farmctl().args(["status", "farm.toml"]).output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(text.contains("service web: web-d is active (named by 6 client(s)); standbys: web-c (down); watched by "), "{text}");
    assert_eq!(st.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&st.stderr));
    // web-c comes back: the clients stay on web-d (no preemption), and the log says it is back.
    lab.host_mut("web-c").restart();
    assert!(w.wait_for("web: returned: web-c answers its check again", 15), "{}", w.text());
    assert!(IVRS.iter().all(|i| names_web_d(&lab, i)), "a primary that comes back does not take the service back: {}", w.text());
    let (code, log) = w.stop();
    assert!(!log.contains("telling every host"), "one interrupt handler, the watcher's: {log}");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("released its lease"), "{log}");
    assert!(plan(&lab).contains("service web: web-d is active (named by 6 client(s)); standbys: web-c"), "{}", plan(&lab));
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    assert!(journal.contains("\"outcome\":\"failover\"") && journal.contains("web-c -> web-d"), "{journal}");
    assert_eq!(journal.matches("\"outcome\":\"written\"").count(), 12, "the failover's edits are in the journal: {journal}");
}

#[test]
fn with_both_members_dead_nothing_changes_and_the_log_says_why() {
    let mut lab = start("", None);
    let before = lab.snapshot();
    let mut w = Watcher::start_with(&lab, &["--json"]);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    lab.host_mut("web-d").crash();
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("NO other member is healthy: nothing was changed", 20), "{}", w.text());
    let (_, log) = w.stop();
    // Every line is one JSON object with its time, level, service and event.
    let events: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let no_standby = events.iter().find(|e| e["event"] == "no-standby").expect("a no-standby event");
    assert_eq!((no_standby["service"].as_str(), no_standby["level"].as_str()), (Some("web"), Some("warn")), "{no_standby}");
    assert!(no_standby["time"].as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()), "{no_standby}");
    let after = lab.snapshot();
    for i in IVRS {
        assert_eq!(after[&(i.to_string(), "/etc/ivr/ivr.toml".to_string())], before[&(i.to_string(), "/etc/ivr/ivr.toml".to_string())], "{i}");
    }
}

#[test]
fn a_member_only_the_watcher_cannot_reach_is_not_failed_over() {
    // The watcher's own path to web-c is broken; the clients still reach it.
    let broken = |lab: &Lab| format!("Host {}\n  ProxyCommand /bin/false\n", lab.host("web-c").address);
    let lab = start("", Some(&broken));
    let before = lab.snapshot();
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("not failing over", 20), "{}", w.text());
    let (_, log) = w.stop();
    assert!(log.contains("but only 0 of 6 client(s) confirm"), "{log}");
    assert!(!log.contains("repointed"), "{log}");
    lab::assert_same(&lab.snapshot(), &before, "no client was repointed");
}

#[test]
fn a_second_watcher_stands_by_naming_the_holder_and_takes_over_when_the_holder_is_killed() {
    let mut lab = start("lease = \"5s\"\n", None);
    let mut first = Watcher::start(&lab);
    assert!(first.wait_for("web-c is active", 20), "{}", first.text());
    let holder = format!(":{} ", first.child.id());
    // A script asks not to wait: refused at once, naming the holder.
    let out = lab.farmctl().args(["watch", "farm.toml", "--no-wait"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("service web is watched by ") && err.contains(&holder), "names the holder: {err}");
    // Without it, a second watcher stands by, naming the holder.
    let mut second = Watcher::start(&lab);
    assert!(second.wait_for("web: standing-by: service web is watched by ", 20), "{}", second.text());
    assert!(second.text().contains(&holder), "{}", second.text());
    // The first dies without a word: its lease lapses (5 s) and the standby takes over.
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let killed = Instant::now();
    // The lease (5 s) plus a heartbeat (1 s) on a quiet machine; 20 s for a loaded one.
    assert!(second.wait_for("web: took-over: web-c is active", 20), "{}", second.text());
    let took = killed.elapsed();
    eprintln!("the standby took over {took:?} after the holder was killed");
    assert!(took >= Duration::from_secs(3), "not before the lease could expire ({took:?})");
    let log = second.text();
    let line = log.lines().find(|l| l.contains("web: took-over: ")).unwrap();
    assert!(line.contains(&format!("taken over from ")) && line.contains(&format!("{}with fencing token ", holder)), "the takeover names the old holder: {line}");
    // It watches for real: the active member killed now is failed over.
    lab.host_mut("web-c").crash();
    let crashed = Instant::now();
    while crashed.elapsed() < Duration::from_secs(15) && !IVRS.iter().all(|i| names_web_d(&lab, i)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(IVRS.iter().all(|i| names_web_d(&lab, i)), "the standby watcher failed over the member killed after the takeover: {}", second.text());
    let (code, log) = second.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_synced_file_reaches_the_standby_and_a_fence_runs_once_per_failover() {
    let fence_log = "fence.log";
    let mut lab = start(&format!("sync = [\"/etc/ivr-web/data.txt\"]\nfence = \"echo fenced {{host}} {{address}} >> {fence_log}\"\n"), None);
    lab.host("web-c").write("/etc/ivr-web/data.txt", b"v1\n");
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    lab.host("web-c").write("/etc/ivr-web/data.txt", b"v2: changed on the active member\n");
    let changed = Instant::now();
    // Within 3 heartbeats on a quiet machine; 10 s of room for a loaded one.
    while changed.elapsed() < Duration::from_secs(10) && std::fs::read(lab.host("web-d").path("/etc/ivr-web/data.txt")).ok().as_deref() != Some(b"v2: changed on the active member\n".as_slice()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(lab.host("web-d").path("/etc/ivr-web/data.txt")).unwrap(), "v2: changed on the active member\n", "{}", w.text());
    eprintln!("synced {:?} after the change", changed.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let status = String::from_utf8(lab.farmctl().args(["status", "farm.toml"]).output().unwrap().stdout).unwrap();
    assert!(status.contains("; last sync: web-d "), "status shows the standby's last sync: {status}");
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("repointed", 20), "{}", w.text());
    let (_, _) = w.stop();
    let fenced = std::fs::read_to_string(lab.dir.path().join(fence_log)).unwrap();
    assert_eq!(fenced, format!("fenced web-c {}\n", lab.host("web-c").address), "the fence ran once, against the dead member");
}

// See issue 25: `max_lag` had no test. A standby whose last good sync is
// older than `max_lag` (here its copy cannot be replaced: immutable) is not
// promoted when the active member dies; the clients stay as they were.
#[test]
fn a_standby_whose_sync_lags_beyond_max_lag_is_not_promoted() {
    let mut lab = start("sync = [\"/etc/ivr-web/data.txt\"]\nmax_lag = \"2s\"\n", None);
    lab.host("web-c").write("/etc/ivr-web/data.txt", b"v1\n");
    lab.host("web-d").write("/etc/ivr-web/data.txt", b"v0\n");
    let stuck = lab.host("web-d").path("/etc/ivr-web/data.txt");
    assert!(std::process::Command::new("chattr").arg("+i").arg(&stuck).status().unwrap().success());
    let before = lab.snapshot();
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    // Longer than max_lag: no sync can have reached web-d.
    std::thread::sleep(Duration::from_secs(3));
    lab.host_mut("web-c").crash();
    let lagging = w.wait_for("lagging", 20);
    let _ = std::process::Command::new("chattr").arg("-i").arg(&stuck).status();
    assert!(lagging, "{}", w.text());
    assert!(w.wait_for("NO other member is healthy", 10), "{}", w.text());
    let (_, log) = w.stop();
    assert!(!log.contains("repointed"), "{log}");
    for i in IVRS {
        let key = (i.to_string(), "/etc/ivr/ivr.toml".to_string());
        assert_eq!(lab.snapshot()[&key], before[&key], "{i} still names web-c");
    }
}

#[test]
fn a_failing_required_fence_holds_the_failover_back() {
    let mut lab = start("fence = \"exit 1\"\nfence_required = true\n", None);
    let before = lab.snapshot();
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("held-back", 20), "{}", w.text());
    let (_, log) = w.stop();
    assert!(!log.contains("repointed"), "{log}");
    for i in IVRS {
        assert_eq!(lab.snapshot()[&(i.to_string(), "/etc/ivr/ivr.toml".to_string())], before[&(i.to_string(), "/etc/ivr/ivr.toml".to_string())]);
    }
}

/// With `strategy = "hosts"`, each client's hosts file maps `web` to the active member.
fn start_hosts(extra: &str) -> Lab {
    let lab = start(&format!("strategy = \"hosts\"\nclients = [\"ivr\"]\nhosts_file = \"/etc/ivr/hosts\"\n{extra}"), None);
    for i in IVRS {
        lab.host(i).write("/etc/ivr/hosts", format!("127.0.0.1\tlocalhost\n{}\tweb\n", lab.host("web-c").address).as_bytes());
    }
    lab
}

fn hosts_line(lab: &Lab, i: &str) -> String {
    String::from_utf8(lab.host(i).read("/etc/ivr/hosts")).unwrap()
}

#[test]
fn a_hosts_service_fails_over_by_its_clients_hosts_line_and_leaves_their_config_alone() {
    let mut lab = start_hosts("");
    // The first apply makes each client's line farmctl's own; the address stays.
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", lab::stderr(&out));
    let (c, d) = (lab.host("web-c").address.clone(), lab.host("web-d").address.clone());
    for i in IVRS {
        assert_eq!(hosts_line(&lab, i), format!("127.0.0.1\tlocalhost\n{c}\tweb\t# farmctl service web\n"), "{i}");
    }
    let config = lab.snapshot();
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    lab.host_mut("web-c").crash();
    let killed = Instant::now();
    // dead_after 3 s plus the repoint; 15 s leaves room for a loaded machine.
    while killed.elapsed() < Duration::from_secs(15) && !IVRS.iter().all(|i| hosts_line(&lab, i).contains(&format!("{d}\tweb\t"))) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in IVRS {
        assert_eq!(hosts_line(&lab, i), format!("127.0.0.1\tlocalhost\n{d}\tweb\t# farmctl service web\n"), "{i}: {}", w.text());
        for f in ["/etc/ivr/ivr.toml", "/etc/ivr/peers.conf"] {
            assert_eq!(lab.host(i).read(f), config[&(i.to_string(), f.to_string())], "{i}:{f} still names web-c: the clients use the virtual name");
        }
    }
    assert!(w.wait_for("repointed", 5), "{}", w.text());
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    let plan = String::from_utf8(lab.farmctl().args(["plan", "farm.toml"]).output().unwrap().stdout).unwrap();
    assert!(plan.contains("service web: web-d is active (named by 6 client(s)); standbys: web-c"), "{plan}");
}

#[test]
fn a_write_from_a_watcher_whose_lease_is_gone_is_refused_on_the_host() {
    let mut lab = start_hosts("");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", lab::stderr(&out));
    // As if a newer watcher (a far later lease epoch) had already written on every client.
    for i in IVRS {
        let fence = lab.host(i).state("fence/web");
        std::fs::create_dir_all(fence.parent().unwrap()).unwrap();
        std::fs::write(&fence, "99999999999999\n").unwrap();
    }
    let before = lab.snapshot();
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("failover-failed", 20), "{}", w.text());
    let (_, log) = w.stop();
    assert!(log.contains("a watcher with a newer lease of service web (epoch 99999999999999) has written here"), "the host names why: {log}");
    lab::assert_same(&lab.snapshot(), &before, "no client took a write from a watcher whose lease is gone");
    for i in IVRS {
        assert_eq!(std::fs::read_to_string(lab.host(i).state("fence/web")).unwrap(), "99999999999999\n", "{i}");
    }
}

#[test]
fn adopting_a_standalone_server_renames_the_machine_and_its_clients_keep_its_old_name() {
    // The lab's machine `web-c` becomes farm host `web-c1`; `web-c` becomes the virtual name.
    let lab = Lab::start(&["web-c", "web-d", "ivr-1", "ivr-2"]);
    let c = lab.host("web-c").address.clone();
    lab.host("web-c").write("/etc/ivr/hostname", b"web-c\n");
    for i in ["ivr-1", "ivr-2"] {
        lab.host(i).write("/etc/ivr/ivr.toml", render(IVR_TOML, i, "web-c", &c, "web-c", &c).as_bytes());
        lab.host(i).write("/etc/ivr/hosts", format!("127.0.0.1\tlocalhost\n{c} web-c\n").as_bytes());
    }
    let hosts = lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" }).replace("[hosts.web-c]", "[hosts.web-c1]");
    let text = format!(
        "[farm]\nname = \"adopt\"\n\n{}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\"]\n\n{hosts}\n\
         [services.web-c]\nvirtual = \"web-c\"\nadopt = \"web-c\"\nmembers = [\"web-c1\", \"web-d\"]\nclients = [\"ivr\"]\nhosts_file = \"/etc/ivr/hosts\"\nhostname_file = \"/etc/ivr/hostname\"\n",
        lab.ssh_section()
    );
    lab.write_farm("farm.toml", &text);
    let before = lab.snapshot();
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    let plan = lab::stdout(&out);
    assert!(plan.contains("adopt: the machine web-c is now web-c1"), "{plan}");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", lab::stderr(&out));
    assert_eq!(lab.host("web-c").read("/etc/ivr/hostname"), b"web-c1\n");
    let pid = lab.host("web-c").pid().unwrap().to_string();
    let name = std::process::Command::new("nsenter").args(["--target", &pid, "--uts", "hostname"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&name.stdout), "web-c1\n", "the machine's own host name changed");
    for i in ["ivr-1", "ivr-2"] {
        assert_eq!(lab.host(i).read("/etc/ivr/ivr.toml"), before[&(i.to_string(), "/etc/ivr/ivr.toml".to_string())], "{i}'s config still names web-c");
        assert_eq!(String::from_utf8(lab.host(i).read("/etc/ivr/hosts")).unwrap(), format!("127.0.0.1\tlocalhost\n{c}\tweb-c\t# farmctl service web-c\n"), "{i}: web-c resolves to the adopted machine");
    }
    let again = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "once applied, the plan is clean: {}", lab::stdout(&again));
}

#[test]
fn a_failover_planned_from_the_watchers_reading_is_planned_again_when_a_client_changed_since() {
    let mut lab = start("", None);
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    // The watcher reads every host on its first healthy beat; then ivr-1's file changes.
    std::thread::sleep(Duration::from_secs(3));
    let mut changed = lab.host("ivr-1").read("/etc/ivr/ivr.toml");
    changed.extend_from_slice(b"# edited by hand after the watcher's reading\n");
    lab.host("ivr-1").write("/etc/ivr/ivr.toml", &changed);
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("repointed", 25), "{}", w.text());
    let (_, log) = w.stop();
    assert!(log.contains("web: stale: a client changed since the watcher last read it"), "the first attempt was refused on the host: {log}");
    let ivr1 = String::from_utf8(lab.host("ivr-1").read("/etc/ivr/ivr.toml")).unwrap();
    assert!(ivr1.contains("web-d") && !ivr1.contains("\"web-c\"") && ivr1.ends_with("# edited by hand after the watcher's reading\n"), "repointed, and the hand edit kept: {ivr1}");
    for i in &IVRS[1..] {
        assert!(names_web_d(&lab, i), "{i}");
    }
}

#[test]
fn a_second_failover_soon_after_the_first_repoints_every_client_again() {
    // The watcher's reading from before the first failover must not plan the second.
    let mut lab = start("", None);
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    std::thread::sleep(Duration::from_secs(2));
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("now name web-d", 25), "{}", w.text());
    lab.host_mut("web-c").restart();
    std::thread::sleep(Duration::from_secs(3));
    lab.host_mut("web-d").crash();
    assert!(w.wait_for("now name web-c", 25), "{}", w.text());
    let (_, log) = w.stop();
    let (c, d) = (&lab.host("web-c").address, &lab.host("web-d").address);
    for i in IVRS {
        let now = String::from_utf8(lab.host(i).read("/etc/ivr/ivr.toml")).unwrap();
        assert_eq!(now, render(IVR_TOML, i, "web-c", c, "web-c", c), "{i} names web-c again, by name and address: {log}");
        assert!(!now.contains(d.as_str()), "{i}");
    }
}

// See issue 24: `watch` with BusyBox members and clients. The lease read its
// clock with `date +%s%3N` (a literal %3N there), and a client's look used
// `nc -z`, which BusyBox's nc lacks, so a live member read as dead.
#[test]
fn a_dead_busybox_primary_fails_over_to_a_busybox_standby_for_busybox_and_gnu_clients() {
    // Made before the lab starts: a BusyBox host keeps a copy of /etc/passwd.
    lab::ensure_user("fl-wb");
    let mut lab = start_on(lab::Options { busybox: vec!["web-c", "web-d", "ivr-1", "ivr-2", "ivr-3"], ..Default::default() }, "", None);
    // Logged in as a user that becomes root with sudo (issue 24), as the checks, the lease and the failover's writes all are.
    let farm = lab.dir.path().join("farm.toml");
    let text = std::fs::read_to_string(&farm).unwrap().replace(&lab.ssh_section(), &lab.login_user("fl-wb", "ALL=(ALL) NOPASSWD: ALL"));
    assert!(text.contains("user = \"fl-wb\"\nsudo = true"), "{text}");
    lab.write_farm("farm.toml", &text);
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    // A few heartbeats on the BusyBox member: it is not failed over while it lives.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!w.text().contains("failover"), "a live BusyBox member is never failed over: {}", w.text());
    let killed = Instant::now();
    lab.host_mut("web-c").crash();
    // dead_after 3 s + the repoint; 20 s leaves room for a loaded machine.
    while killed.elapsed() < Duration::from_secs(20) && !IVRS.iter().all(|i| names_web_d(&lab, i)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(IVRS.iter().all(|i| names_web_d(&lab, i)), "every client, BusyBox or GNU, names web-d: {}", w.text());
    assert!(w.wait_for("confirmed", 5), "the clients confirmed, BusyBox ones included: {}", w.text());
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Issue 22: a frozen member (every process stopped) still completes a TCP
/// handshake on its listening socket; the clients' confirmation must run a
/// check that needs the member itself to answer, with a deadline.
#[test]
fn a_frozen_primary_is_failed_over_though_its_listening_socket_still_accepts() {
    frozen_primary_failover(start("", None));
}

/// The same with a TCP check that talks: the watcher and the clients both
/// wait for the member's greeting, which a frozen process never sends.
#[test]
fn a_frozen_primary_is_failed_over_under_a_tcp_check_that_expects_an_answer() {
    let lab = start("", None);
    // [services.web] ends the farm file; the lab's sshd port is known once it runs.
    let farm = lab.dir.path().join("farm.toml");
    let text = std::fs::read_to_string(&farm).unwrap() + &format!("check = \"tcp:{}\"\nexpect = \"SSH-2.0\"\n", lab.port);
    std::fs::write(&farm, text).unwrap();
    frozen_primary_failover(lab);
}

fn frozen_primary_failover(lab: Lab) {
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    let frozen = Instant::now();
    lab.host("web-c").hang();
    // dead_after 3 s plus one confirmation deadline and the repoint: about 5 s
    // on a quiet machine; 20 s leaves room for a loaded one.
    let mut done = None;
    while frozen.elapsed() < Duration::from_secs(20) {
        if IVRS.iter().all(|i| names_web_d(&lab, i)) {
            done = Some(frozen.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.host("web-c").resume();
    let took = done.unwrap_or_else(|| panic!("a frozen primary was not failed over: {}", w.text()));
    eprintln!("every client repointed {took:?} after the freeze");
    assert!(w.wait_for("repointed", 5), "{}", w.text());
    assert!(w.text().contains("web: confirmed: web-c is dead"), "{}", w.text());
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Issue 22: a member frozen while the watcher ran, then thawed, must not
/// keep a lock that stops every later watcher; and a second watcher started
/// while one is live names the holder every time.
#[test]
fn after_a_freeze_and_thaw_a_new_watcher_takes_the_lease_and_a_second_one_names_the_holder() {
    let lab = start("lease = \"5s\"\n", None);
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    lab.host("web-c").hang();
    std::thread::sleep(Duration::from_secs(8));
    lab.host("web-c").resume();
    std::thread::sleep(Duration::from_secs(2));
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("is active", 20), "a new watcher takes the lease at once: {}", w.text());
    let id = format!(":{} ", w.child.id());
    for n in 0..5 {
        let out = lab.farmctl().args(["watch", "farm.toml", "--no-wait"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "try {n}: {err}");
        assert!(err.contains("service web is watched by ") && err.contains(&id), "try {n} names the holder: {err}");
    }
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Issue 23: the watcher's own metrics, scraped by a real Prometheus, and its
/// `/healthz`, which follows the lease.
#[test]
fn a_failover_shows_in_the_watchers_metrics_as_prometheus_scrapes_them_and_healthz_follows_the_lease() {
    let mut lab = start("", None);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut w = Watcher::start_with(&lab, &["--metrics", &addr]);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    let health = || prometheus::http_status("127.0.0.1", port, "/healthz");
    assert_eq!(health().map(|(code, _)| code), Some(200), "{}", w.text());
    assert!(health().unwrap().1.contains("web: holds the lease"));
    let prom = prometheus::Prometheus::start(&[("farmctl", addr.clone())]);
    let q = |q: &str| prom.query(q);
    let wait_for = |what: &str, want: f64| {
        // Prometheus scrapes every second; 20 s is room for a loaded machine.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if q(what) == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(wait_for(r#"farmctl_watch_failovers_total{service="web"}"#, 0.0), "the counter starts at 0");
    assert!(wait_for(r#"farmctl_watch_active{service="web",member="web-c"}"#, 1.0));
    assert!(wait_for(r#"farmctl_watch_lease_held{service="web"}"#, 1.0));
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("repointed", 20), "{}", w.text());
    assert!(wait_for(r#"farmctl_watch_failovers_total{service="web"}"#, 1.0), "one failover, as Prometheus sees it: {}", w.text());
    assert!(wait_for(r#"farmctl_watch_active{service="web",member="web-d"}"#, 1.0));
    assert!(wait_for(r#"farmctl_watch_active{service="web",member="web-c"}"#, 0.0));
    assert!(q(r#"farmctl_watch_confirmations_given_total{service="web"}"#).is_some_and(|n| n >= 1.0));
    assert!(q(r#"farmctl_watch_heartbeat_misses_total{service="web"}"#).is_some_and(|n| n >= 1.0));
    // No member left to keep the lease on: the lease store is gone, and /healthz says so.
    lab.host_mut("web-d").crash();
    let started = Instant::now();
    while health().map(|(code, _)| code) != Some(503) && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, text) = health().unwrap();
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("web: cannot reach its lease store"), "{text}");
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
}
