//! `farmctl watch` on the lab farm (issue 14): web-c active and web-d standby
//! for 6 IVR clients, a heartbeat of 1 s and `dead_after` of 3 s. Killing a
//! lab host's sshd takes that host down. Times are asserted with room for a
//! loaded 2-core machine (the benchmark measures them precisely).

mod lab;

use lab::voice::{render, IVR_TOML, PEERS};
use lab::Lab;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const IVRS: [&str; 6] = ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

fn start(extra: &str, ssh_config: Option<&dyn Fn(&Lab) -> String>) -> Lab {
    let lab = Lab::start(&["web-c", "web-d", "ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"]);
    let c = lab.host("web-c").address.clone();
    for w in ["web-c", "web-d"] {
        lab.host(w).write("/etc/ivr-web/web.toml", format!("[server]\nname = \"{w}\"\n").as_bytes());
    }
    for i in IVRS {
        lab.host(i).write("/etc/ivr/ivr.toml", render(IVR_TOML, i, "web-c", &c, "web-c", &c).as_bytes());
        lab.host(i).write("/etc/ivr/peers.conf", render(PEERS, i, "web-c", &c, "web-c", &c).as_bytes());
    }
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

/// A running watcher and its log lines as they come.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Drop for Watcher {
    /// A test that fails part-way must not leave its watcher running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Watcher {
    fn start(lab: &Lab) -> Watcher {
        use std::os::unix::process::CommandExt;
        let mut child = lab.farmctl().args(["watch", "farm.toml"]).stderr(Stdio::piped()).process_group(0).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Watcher { child, lines, log: Vec::new() }
    }

    /// Waits (at most `secs`) for a log line containing `what`.
    fn wait_for(&mut self, what: &str, secs: u64) -> bool {
        if self.log.iter().any(|l| l.contains(what)) {
            return true;
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Ok(l) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let hit = l.contains(what);
            self.log.push(l);
            if hit {
                return true;
            }
        }
        false
    }

    fn text(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
        self.log.join("\n")
    }

    fn stop(&mut self) -> (Option<i32>, String) {
        let _ = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let code = self.child.wait().unwrap().code();
        std::thread::sleep(Duration::from_millis(100));
        let text = self.text();
        (code, text)
    }
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
    assert!(plan(&lab).contains("service web: web-c (named by 6 host(s)) is active; standbys: web-d"), "plan shows the active member: {}", plan(&lab));
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    let status = String::from_utf8(lab.farmctl().args(["status", "farm.toml"]).output().unwrap().stdout).unwrap();
    assert!(status.contains("service web: web-c is active (named by 6 client(s)); standbys: web-d; watched by ") && status.contains(&format!(":{} (lease epoch", w.child.id())), "status shows the service and its watcher: {status}");
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
    // web-c comes back: the clients stay on web-d (no preemption).
    lab.host_mut("web-c").restart();
    std::thread::sleep(Duration::from_secs(4));
    assert!(IVRS.iter().all(|i| names_web_d(&lab, i)), "a primary that comes back does not take the service back: {}", w.text());
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("released its lease"), "{log}");
    assert!(plan(&lab).contains("service web: web-d (named by 6 host(s)) is active; standbys: web-c"), "{}", plan(&lab));
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    assert!(journal.contains("\"outcome\":\"failover\"") && journal.contains("web-c -> web-d"), "{journal}");
    assert_eq!(journal.matches("\"outcome\":\"written\"").count(), 12, "the failover's edits are in the journal: {journal}");
}

#[test]
fn with_both_members_dead_nothing_changes_and_the_log_says_why() {
    let mut lab = start("", None);
    let before = lab.snapshot();
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web-c is active", 20), "{}", w.text());
    lab.host_mut("web-d").crash();
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("NO other member is healthy: nothing was changed", 20), "{}", w.text());
    let (_, _log) = w.stop();
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
fn a_second_watcher_is_refused_naming_the_holder_and_takes_over_after_the_lease_expires() {
    let lab = start("lease = \"5s\"\n", None);
    let mut first = Watcher::start(&lab);
    assert!(first.wait_for("web-c is active", 20), "{}", first.text());
    let out = lab.farmctl().args(["watch", "farm.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("service web is watched by ") && err.contains(&format!(":{}", first.child.id())), "names the holder: {err}");
    // The first dies without a word: its lease lapses, and a new watcher takes over.
    first.child.kill().unwrap();
    let _ = first.child.wait();
    let killed = Instant::now();
    let mut second = None;
    while killed.elapsed() < Duration::from_secs(20) {
        let mut w = Watcher::start(&lab);
        if w.wait_for("web-c is active", 10) {
            second = Some(w);
            break;
        }
        let _ = w.child.wait();
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut second = second.expect("a new watcher takes over once the lease expires");
    assert!(killed.elapsed() >= Duration::from_secs(3), "not before the lease could expire ({:?})", killed.elapsed());
    let (code, _) = second.stop();
    assert_eq!(code, Some(0));
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
    lab.host_mut("web-c").crash();
    assert!(w.wait_for("repointed", 20), "{}", w.text());
    let (_, _) = w.stop();
    let fenced = std::fs::read_to_string(lab.dir.path().join(fence_log)).unwrap();
    assert_eq!(fenced, format!("fenced web-c {}\n", lab.host("web-c").address), "the fence ran once, against the dead member");
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
