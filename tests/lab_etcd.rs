//! `farmctl watch` with its leases in a real etcd (issue 26): a cluster of
//! three members on loopback ports (`tests/lab/etcd.rs`), watchers that
//! stand by and take over, an etcd that loses its quorum, a watcher paused
//! past its ttl, and etcd over TLS. The service: web-c active, web-d standby,
//! three IVR clients. What is checked is what happened on the hosts (their
//! files and fencing tokens) and in etcd (who holds the key, with which
//! creation revision). Times have room for a loaded 2-core machine.

mod lab;
#[path = "lab/etcd.rs"]
mod etcd;

use etcd::{Certs, Etcd};
use lab::voice::{render, IVR_TOML};
use lab::watcher::Watcher;
use lab::Lab;
use std::time::{Duration, Instant};

const IVRS: [&str; 3] = ["ivr-1", "ivr-2", "ivr-3"];
/// Every service's key is under the farm's prefix.
const KEY: &str = "/farmlab/web";

/// The lab farm with `[watch]` as given; heartbeat 500 ms, dead_after 1.5 s.
fn start(watch: &str, extra: &str) -> Lab {
    let lab = Lab::start(&["web-c", "web-d", "ivr-1", "ivr-2", "ivr-3"]);
    lab::voice::web_service(&lab, &IVRS);
    lab.write_farm("farm.toml", &farm_text(&lab, watch, extra));
    lab
}

fn farm_text(lab: &Lab, watch: &str, extra: &str) -> String {
    format!(
        "[farm]\nname = \"etcd\"\n\n{}\n[watch]\n{watch}\n\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/peers.conf\"]\n\n{}\n\
         [services.web]\nvirtual = \"web\"\nmembers = [\"web-c\", \"web-d\"]\nheartbeat = \"500ms\"\ndead_after = \"1500ms\"\n{extra}",
        lab.ssh_section(),
        lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" })
    )
}

fn etcd_watch(etcd: &Etcd) -> String {
    format!("etcd = {}\nprefix = \"/farmlab/\"\nttl = \"2s\"", etcd.toml_endpoints())
}

fn names_web_d(lab: &Lab, i: &str) -> bool {
    let (d, c) = (&lab.host("web-d").address, &lab.host("web-c").address);
    String::from_utf8(lab.host(i).read("/etc/ivr/ivr.toml")).unwrap() == render(IVR_TOML, i, "web-d", d, "web-c", c)
}

/// A file on a host, or nothing while it is not there.
fn read(lab: &Lab, host: &str, path: &str) -> Vec<u8> {
    std::fs::read(lab.host(host).path(path)).unwrap_or_default()
}

fn wait_until(secs: u64, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

/// The holder named in etcd, with its creation revision.
fn holder(etcd: &Etcd) -> Option<(String, u64)> {
    etcd.get(KEY).map(|(v, rev)| (v.split(' ').next().unwrap().to_string(), rev))
}

fn pid_of(holder: &str) -> u32 {
    holder.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_standby_watcher_takes_over_a_killed_holder_within_the_ttl_and_fails_over_with_the_new_token() {
    let mut etcd = Etcd::start(3);
    let mut lab = start(&etcd_watch(&etcd).replace("ttl = \"2s\"", "ttl = \"4s\""), "");
    // The farm was watched with the lease on the members before: its clients
    // keep that lease's newest epoch (a time in ms, far above any revision).
    for i in IVRS {
        let old = lab.host(i).state("fence/web");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, "1764547200000\n").unwrap();
    }
    let first = Watcher::start(&lab);
    assert!(first.wait_for("web: watching: web-c is active", 20), "{}", first.text());
    let (h1, rev1) = holder(&etcd).expect("the holder's key is in etcd");
    assert_eq!(pid_of(&h1), first.child.id(), "etcd names the first watcher");
    // A second watcher stands by, naming the holder it read from etcd.
    let mut second = Watcher::start(&lab);
    assert!(second.wait_for("web: standing-by: service web is watched by ", 20), "{}", second.text());
    assert!(second.text().contains(&format!("{h1} (lease epoch {rev1} on etcd key {KEY}")), "{}", second.text());
    // status reads the holder from etcd.
    let status = String::from_utf8(lab.farmctl().args(["status", "farm.toml"]).output().unwrap().stdout).unwrap();
    assert!(status.contains(&format!("watched by {h1}")), "{status}");
    // One etcd member of three down, the leader: nothing changes. The ttl
    // (4 s here) outlasts etcd's election (its timeout is 1 s); a holder that
    // could not keep its lease alive would have lost it by the end of the wait.
    etcd.kill(etcd.leader());
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(holder(&etcd), Some((h1.clone(), rev1)), "the first watcher still holds the same key");
    assert!(!first.text().contains("lease-lost") && !second.text().contains("took-over"), "{}\n{}", first.text(), second.text());
    // The holder dies without a word: its etcd lease ends after the ttl.
    first.signal("-KILL");
    let killed = Instant::now();
    // ttl (4 s) + 1 s on a quiet machine; 20 s for a loaded one.
    assert!(second.wait_for("web: took-over: web-c is active", 20), "{}", second.text());
    eprintln!("the standby took over {:?} after the holder was killed (ttl 4 s)", killed.elapsed());
    let (h2, rev2) = holder(&etcd).unwrap();
    assert_eq!(pid_of(&h2), second.child.id());
    assert!(rev2 > rev1, "the new key's revision is the newer token: {rev2} vs {rev1}");
    let log = second.text();
    let line = log.lines().find(|l| l.contains("web: took-over: ")).unwrap();
    assert!(line.contains(&format!("taken over from {h1} with fencing token {rev2}")), "{line}");
    // It watches for real: the active member killed now is failed over, and
    // every client's write carried the new token.
    lab.host_mut("web-c").crash();
    assert!(wait_until(20, || IVRS.iter().all(|i| names_web_d(&lab, i))), "{}", second.text());
    for i in IVRS {
        assert_eq!(std::fs::read_to_string(lab.host(i).state("fence/web@etcd")).unwrap(), format!("{rev2}\n"), "{i} was written with the etcd token");
        assert_eq!(std::fs::read_to_string(lab.host(i).state("fence/web")).unwrap(), "1764547200000\n", "{i}: the members' sequence is its own");
    }
    let (code, log) = second.stop();
    assert_eq!(code, Some(0), "{log}");
    // A clean stop revokes the lease: the key is gone at once.
    assert_eq!(etcd.get(KEY), None, "the stopped watcher's key was deleted");
}

#[test]
fn without_an_etcd_quorum_no_watcher_fails_over_and_one_leads_again_when_etcd_returns() {
    let mut etcd = Etcd::start(3);
    let mut lab = start(&etcd_watch(&etcd), "");
    let before = lab.snapshot();
    let w = Watcher::start(&lab);
    assert!(w.wait_for("web: watching: web-c is active", 20), "{}", w.text());
    let standby = Watcher::start(&lab);
    assert!(standby.wait_for("web: standing-by: service web is watched by ", 20), "{}", standby.text());
    etcd.kill(1);
    etcd.kill(2);
    // The holder cannot prove its lease: it stops acting within the ttl (2 s); 10 s of room.
    assert!(w.wait_for("web: lease-lost: no answer from an etcd quorum", 10), "{}", w.text());
    // Each watcher says why it does not act.
    for x in [&w, &standby] {
        assert!(x.wait_for("does not answer for service web", 10), "{}", x.text());
    }
    // The active member dies while no watcher may act: nothing is failed over.
    lab.host_mut("web-c").crash();
    std::thread::sleep(Duration::from_secs(5));
    for i in IVRS {
        let key = (i.to_string(), "/etc/ivr/ivr.toml".to_string());
        assert_eq!(lab.snapshot()[&key], before[&key], "{i} was not repointed without the lease: {}\n{}", w.text(), standby.text());
    }
    assert!(!w.text().contains("failover") && !standby.text().contains("failover"), "{}\n{}", w.text(), standby.text());
    // etcd comes back: one watcher leads again and fails over the dead member.
    etcd.restart(1);
    etcd.restart(2);
    assert!(wait_until(30, || w.text().contains("web: took-over: ") || standby.text().contains("web: took-over: ")), "{}\n{}", w.text(), standby.text());
    assert!(wait_until(20, || IVRS.iter().all(|i| names_web_d(&lab, i))), "{}\n{}", w.text(), standby.text());
    let (h, _) = holder(&etcd).unwrap();
    let leader = pid_of(&h);
    assert!(leader == w.child.id() || leader == standby.child.id(), "{h}");
    // Exactly one leads: the other failed nothing over. (The log line follows
    // the clients' files: wait for it, then a little for a second one.)
    assert!(wait_until(10, || w.text().contains("web: repointed: ") || standby.text().contains("web: repointed: ")), "{}\n{}", w.text(), standby.text());
    std::thread::sleep(Duration::from_secs(2));
    let failovers = w.count("web: repointed: ") + standby.count("web: repointed: ");
    assert_eq!(failovers, 1, "{}\n{}", w.text(), standby.text());
}

#[test]
fn a_watcher_paused_past_its_ttl_steps_down_and_the_newer_token_holds_on_the_hosts() {
    let etcd = Etcd::start(3);
    let lab = start(&etcd_watch(&etcd), "sync = [\"/etc/ivr-web/data.txt\"]\n");
    lab.host("web-c").write("/etc/ivr-web/data.txt", b"v1\n");
    let first = Watcher::start(&lab);
    assert!(first.wait_for("web: watching: web-c is active", 20), "{}", first.text());
    let (_, rev1) = holder(&etcd).unwrap();
    assert!(wait_until(10, || read(&lab, "web-d", "/etc/ivr-web/data.txt") == b"v1\n"), "{}", first.text());
    let second = Watcher::start(&lab);
    assert!(second.wait_for("standing-by", 20), "{}", second.text());
    // Paused (as a stalled VM is) for longer than its ttl of 2 s.
    first.signal("-STOP");
    assert!(second.wait_for("web: took-over: ", 15), "{}", second.text());
    let (_, rev2) = holder(&etcd).unwrap();
    assert!(rev2 > rev1);
    lab.host("web-c").write("/etc/ivr-web/data.txt", b"v2\n");
    assert!(wait_until(10, || read(&lab, "web-d", "/etc/ivr-web/data.txt") == b"v2\n"), "the new holder syncs: {}", second.text());
    assert_eq!(std::fs::read_to_string(lab.host("web-d").state("fence/web@etcd")).unwrap(), format!("{rev2}\n"), "the sync carried the new token");
    // Resumed, the old holder learns that its lease is gone and steps down;
    // nothing it might still write gets past the newer token on the hosts.
    let before_resume = first.text().len();
    first.signal("-CONT");
    assert!(first.wait_for("web: lease-lost: ", 10), "{}", first.text());
    assert!(first.wait_for("web: standing-by: ", 10), "{}", first.text());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.host("web-d").read("/etc/ivr-web/data.txt"), b"v2\n", "the standby's copy is the new holder's");
    assert_eq!(std::fs::read_to_string(lab.host("web-d").state("fence/web@etcd")).unwrap(), format!("{rev2}\n"));
    assert!(!first.text()[before_resume..].contains("synced"), "the paused watcher wrote nothing after it resumed: {}", first.text());
    assert_eq!(pid_of(&holder(&etcd).unwrap().0), second.child.id());
}

#[test]
fn three_watchers_share_six_services_two_each_and_take_over_a_killed_ones_within_the_ttl() {
    let etcd = Etcd::start(3);
    // Five more services over the same members, without clients of their own.
    let more: String = (1..=5).map(|n| format!("\n[services.s{n}]\nvirtual = \"s{n}\"\nmembers = [\"web-c\", \"web-d\"]\nheartbeat = \"500ms\"\ndead_after = \"1500ms\"\n")).collect();
    let mut lab = start(&etcd_watch(&etcd), &more);
    let services = ["web", "s1", "s2", "s3", "s4", "s5"];
    let holders = |etcd: &Etcd| -> Vec<Option<u32>> { services.iter().map(|s| etcd.get(&format!("/farmlab/{s}")).map(|(v, _)| pid_of(v.split(' ').next().unwrap()))).collect() };
    let count = |hs: &[Option<u32>], pid: u32| hs.iter().filter(|h| **h == Some(pid)).count();
    let first = Watcher::start(&lab);
    assert!(first.wait_for("web: watching: ", 20), "{}", first.text());
    assert!(wait_until(10, || count(&holders(&etcd), first.child.id()) == 6), "alone, one watcher holds all six: {:?}", holders(&etcd));
    let second = Watcher::start(&lab);
    let third = Watcher::start(&lab);
    let pids = [first.child.id(), second.child.id(), third.child.id()];
    // Each holds its share, ⌈6/3⌉ = 2: the first gives up four, one at a time,
    // and the newcomers take them. 30 s of room for a loaded machine.
    let spread = wait_until(30, || {
        let hs = holders(&etcd);
        pids.iter().all(|p| count(&hs, *p) == 2)
    });
    assert!(spread, "{:?} held by {:?}\n{}\n{}\n{}", pids, holders(&etcd), first.text(), second.text(), third.text());
    assert_eq!(first.count("gave-up: released its lease for another watcher"), 4, "{}", first.text());
    // kill -9 of one watcher: its two services go to the others within the ttl (2 s) + 1 s.
    first.signal("-KILL");
    let killed = Instant::now();
    assert!(wait_until(20, || {
        let hs = holders(&etcd);
        count(&hs, pids[1]) == 3 && count(&hs, pids[2]) == 3
    }), "{:?}", holders(&etcd));
    eprintln!("the killed watcher's services were held by the others {:?} after the kill (ttl 2 s)", killed.elapsed());
    // A member killed right after is failed over by whichever watcher holds web.
    lab.host_mut("web-c").crash();
    assert!(wait_until(20, || IVRS.iter().all(|i| names_web_d(&lab, i))), "{}\n{}", second.text(), third.text());
}

#[test]
fn etcd_over_tls_is_reached_with_its_ca_and_client_certificate_and_a_wrong_one_is_refused_by_name() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(certs_dir.path());
    let etcd = Etcd::start_tls(&certs);
    let lab = start("", "");
    let tls = |ca: &std::path::Path, client: bool| {
        let mut w = format!("{}\nprefix = \"/farmlab/\"\nttl = \"2s\"\nca = \"{}\"", format!("etcd = {}", etcd.toml_endpoints()), ca.display());
        if client {
            w.push_str(&format!("\ncert = \"{}\"\nkey = \"{}\"", certs.client.0.display(), certs.client.1.display()));
        }
        w
    };
    // The right CA and a client certificate: the lease is held, in etcd.
    lab.write_farm("farm.toml", &farm_text(&lab, &tls(&certs.ca, true), ""));
    let mut w = Watcher::start(&lab);
    assert!(w.wait_for("web: watching: web-c is active", 20), "{}", w.text());
    assert_eq!(pid_of(&holder(&etcd).unwrap().0), w.child.id());
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    // A CA that did not sign etcd's certificate: refused, and said so.
    for (name, ca, client, says) in [("other-ca.toml", &certs.other_ca, true, "certificate"), ("no-client-cert.toml", &certs.ca, false, "refused the TLS connection")] {
        lab.write_farm(name, &farm_text(&lab, &tls(ca, client), ""));
        let out = lab.farmctl().args(["watch", name, "--no-wait"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("refused the TLS connection") && err.contains(says), "{name}: {err}");
        assert_eq!(etcd.get(KEY), None, "{name}: nothing was written to etcd");
    }
}
