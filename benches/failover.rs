//! Failover on a lab farm of real sshd hosts: 20 kills of the active member
//! of a service (heartbeat 250 ms, dead_after 1 s) with 50 clients. Reports
//! detection (kill to the watcher's "confirmed" line) and repoint (kill to
//! the moment every client's file names the new member), p50 and max.
//!
//!     cargo bench --bench failover -- --clients 50 --kills 20

#[path = "../tests/lab/mod.rs"]
#[allow(dead_code)]
mod lab;

use lab::Lab;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(((p * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let n: usize = get("--clients").map(|s| s.parse().unwrap()).unwrap_or(50);
    let kills: usize = get("--kills").map(|s| s.parse().unwrap()).unwrap_or(20);
    let clients: Vec<String> = (1..=n).map(|i| format!("c{i:03}")).collect();
    let mut names = vec!["web-c", "web-d"];
    names.extend(clients.iter().map(String::as_str));
    let mut lab = Lab::start(&names);
    let addr = |lab: &Lab, h: &str| lab.host(h).address.clone();
    for w in ["web-c", "web-d"] {
        lab.host(w).write("/etc/ivr-web/web.toml", format!("[server]\nname = \"{w}\"\n").as_bytes());
    }
    for c in &clients {
        lab.host(c).write("/etc/ivr/ivr.toml", format!("[web]\nprimary = \"web-c\"\nurl = \"http://{}:8080/\"\n", addr(&lab, "web-c")).as_bytes());
    }
    let text = format!(
        "[farm]\nname = \"failover\"\n\n{}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\"]\n\n{}\n\
         [services.web]\nvirtual = \"web\"\nmembers = [\"web-c\", \"web-d\"]\nheartbeat = \"250ms\"\ndead_after = \"1s\"\n",
        lab.ssh_section(),
        lab.hosts_section(|h| if h.starts_with("web") { "web" } else { "ivr" })
    );
    lab.write_farm("farm.toml", &text);
    let mut watcher = lab.farmctl().args(["watch", "farm.toml", "--json", "-v"]).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let err = watcher.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), l));
        }
    });
    let seen = std::cell::RefCell::new(Vec::<String>::new());
    let wait_for = |rx: &mpsc::Receiver<(Instant, String)>, what: &str, secs: u64| -> Option<Instant> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Ok((t, l)) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let hit = l.contains(what);
            seen.borrow_mut().push(l);
            if hit {
                return Some(t);
            }
        }
        None
    };
    let tail = || seen.borrow().iter().rev().take(15).rev().cloned().collect::<Vec<_>>().join("\n");
    wait_for(&rx, "\"event\":\"watching\"", 60).expect("the watcher starts");
    let (mut detect, mut repoint) = (Vec::new(), Vec::new());
    let mut active = "web-c".to_string();
    for k in 0..kills {
        let next = if active == "web-c" { "web-d" } else { "web-c" };
        let want = format!("primary = \"{next}\"");
        // What the watcher said of the member about to be killed while it was healthy:
        // a heartbeat missed before the kill would make the confirmation come early.
        let before: Vec<String> = rx.try_iter().map(|(_, l)| l).collect();
        let missed = before.iter().filter(|l| l.contains("\"event\":\"missed\"") || l.contains("\"event\":\"stalled\"")).cloned().collect::<Vec<_>>();
        if !missed.is_empty() {
            eprintln!("kill {k}: before it, the watcher said:\n  {}", missed.join("\n  "));
        }
        seen.borrow_mut().extend(before);
        let killed = Instant::now();
        lab.host_mut(&active).crash();
        let confirmed = wait_for(&rx, "\"event\":\"confirmed\"", 30).unwrap_or_else(|| panic!("kill {k} of {active}: no confirmation; the watcher said:\n{}", tail()));
        detect.push((confirmed - killed).as_secs_f64());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if clients.iter().all(|c| String::from_utf8_lossy(&lab.host(c).read("/etc/ivr/ivr.toml")).contains(&want)) {
                repoint.push(killed.elapsed().as_secs_f64());
                break;
            }
            assert!(Instant::now() < deadline, "kill {k}: the clients were not repointed");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = wait_for(&rx, "\"event\":\"repointed\"", 10);
        // Where the time went, from the watcher's own debug events.
        let steps: Vec<String> = seen.borrow().iter().rev().take_while(|l| !l.contains("\"event\":\"confirmed\"")).filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let (e, m) = (v["event"].as_str()?, v["message"].as_str()?);
            matches!(e, "read" | "planned" | "applied").then(|| format!("{e}: {m}"))
        }).collect();
        eprintln!("kill {k}: confirmed after {:.2} s, repointed after {:.2} s; {}", detect[k], repoint[k], steps.into_iter().rev().collect::<Vec<_>>().join("; "));
        lab.host_mut(&active).restart();
        std::thread::sleep(Duration::from_millis(1500));
        active = next.to_string();
    }
    let _ = std::process::Command::new("kill").args(["-INT", &watcher.id().to_string()]).status();
    let _ = watcher.wait();
    println!("| clients | kills | heartbeat | dead_after | detection p50 (s) | detection max (s) | repointed p50 (s) | repointed max (s) |");
    println!("|---|---|---|---|---|---|---|---|");
    println!("| {n} | {kills} | 250 ms | 1 s | {:.2} | {:.2} | {:.2} | {:.2} |", pct(detect.clone(), 0.5), pct(detect, 1.0), pct(repoint.clone(), 0.5), pct(repoint, 1.0));
}
