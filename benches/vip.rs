//! The address takeover side by side with keepalived, on the network lab
//! (every host in its own network namespace on one bridge): a service's
//! virtual address held by farmctl's active member (`strategy = "address"`),
//! and another held by keepalived's VRRP master (`nopreempt`). The active
//! member, or the master, is killed whole (every process, and its link goes
//! down) again and again; a client on the segment connects to the address
//! every 20 ms. Printed for each: the time from the death to the first
//! answer at the address (an SSH greeting), median and max.
//!
//!     cargo bench --bench vip -- --kills 20
//!     cargo bench --bench vip -- --kills 5 --freeze   # farmctl, holder frozen (SIGSTOP)
//!     cargo bench --bench vip -- --kills 20 --only-farmctl
//!
//! Needs root and Debian's keepalived (the README's test command installs it).

#[path = "../tests/lab/mod.rs"]
#[allow(dead_code)]
mod lab;

use lab::{Lab, Options};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = if v.is_empty() { f64::NAN } else if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (mid, v.last().copied().unwrap_or(f64::NAN))
}

/// Whether something greets at `vip:22` within 100 ms.
fn greets(vip: &str) -> bool {
    let addr: std::net::SocketAddr = format!("{vip}:22").parse().unwrap();
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// From the death to the first greeting at the address, polling every 20 ms.
fn time_to_answer(vip: &str, died: Instant) -> Option<f64> {
    while died.elapsed() < Duration::from_secs(30) {
        if greets(vip) {
            return Some(died.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn holds(lab: &Lab, host: &str, vip: &str) -> bool {
    String::from_utf8(lab.host(host).net_exec("ip -4 addr show dev eth0").stdout).unwrap().contains(&format!("inet {vip}/"))
}

/// keepalived on a lab host, as a router of one VRRP instance.
fn keepalived(lab: &Lab, host: &str, vip: &str, priority: u32, advert: &str, vrid: u32) {
    let h = lab.host(host);
    let dir = h.dir.join("keepalived");
    std::fs::create_dir_all(&dir).unwrap();
    let version = if advert.parse::<f64>().unwrap() < 1.0 { "    version 3\n" } else { "" };
    let conf = format!(
        "global_defs {{\n    router_id {host}\n    enable_script_security\n}}\n\
         vrrp_instance VI_{vrid} {{\n    state BACKUP\n    nopreempt\n    interface eth0\n    virtual_router_id {vrid}\n{version}    priority {priority}\n    advert_int {advert}\n    virtual_ipaddress {{\n        {vip}/24\n    }}\n}}\n"
    );
    std::fs::write(dir.join("keepalived.conf"), conf).unwrap();
    for p in ["keepalived.pid", "vrrp.pid"] {
        let _ = std::fs::remove_file(dir.join(p));
    }
    let ns = h.netns.clone().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &ns, "keepalived", "-l", "-P", "-f"])
        .arg(dir.join("keepalived.conf"))
        .arg("-p")
        .arg(dir.join("keepalived.pid"))
        .arg("-r")
        .arg(dir.join("vrrp.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "keepalived did not start on {host}");
}

/// Kills whichever of `a` and `b` holds the address, `kills` times; the
/// killed one comes back (restarted by `revive`) before the next kill.
/// `log`: the watcher's, whose lines from a kill that took over 1.5 s are
/// printed, to say where the time went.
fn run(lab: &mut Lab, vip: &str, members: [&str; 2], kills: usize, freeze: bool, log: Option<&std::path::Path>, revive: &dyn Fn(&mut Lab, &str)) -> Vec<f64> {
    let size = || log.and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len() as usize);
    let mut times = Vec::new();
    // The address may still be on a member from the row before: the first
    // kill waits until this row's watcher watches.
    let started = Instant::now();
    while log.is_some_and(|p| !std::fs::read_to_string(p).unwrap_or_default().contains(" watching: ")) {
        assert!(started.elapsed() < Duration::from_secs(60), "the watcher did not start watching");
        std::thread::sleep(Duration::from_millis(50));
    }
    for k in 0..kills {
        let settled = Instant::now();
        while !members.iter().any(|m| holds(lab, m, vip)) || !greets(vip) {
            assert!(settled.elapsed() < Duration::from_secs(60), "no member holds {vip}: {}", std::fs::read_dir(lab.dir.path()).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("watch-")).map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect::<String>());
            std::thread::sleep(Duration::from_millis(50));
        }
        let active = *members.iter().find(|m| holds(lab, m, vip)).unwrap();
        let (died, from) = (Instant::now(), size());
        if freeze {
            lab.host(active).hang();
        } else {
            lab.host_mut(active).crash();
        }
        let answered = time_to_answer(vip, died);
        if let Some(p) = log.filter(|_| answered.is_none_or(|t| t > 1.5)) {
            std::thread::sleep(Duration::from_millis(500));
            let text = std::fs::read(p).unwrap_or_default();
            eprintln!("kill {k} of {active}: {answered:?} s; the watcher's log since:\n{}", String::from_utf8_lossy(&text[from.min(text.len())..]));
        }
        match answered {
            Some(t) => times.push(t),
            None => eprintln!("kill {k}: nothing answered at {vip} within 30 s"),
        }
        if freeze {
            lab.host(active).resume();
        } else {
            lab.host_mut(active).restart();
            revive(lab, active);
        }
        // Let the revived member settle as a standby (and lose the address).
        std::thread::sleep(Duration::from_secs(3));
    }
    times
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let kills: usize = get("--kills").map(|s| s.parse().unwrap()).unwrap_or(20);
    let freeze = args.iter().any(|a| a == "--freeze");
    let only_farmctl = args.iter().any(|a| a == "--only-farmctl");
    let mut lab = Lab::start_with(&["web-c", "web-d", "ka-1", "ka-2", "c-1", "c-2"], Options { network: true, ..Default::default() });
    let prefix = lab.net.as_ref().unwrap().prefix.clone();
    let (vip_f, vip_k) = (format!("{prefix}.100"), format!("{prefix}.101"));
    for w in ["web-c", "web-d"] {
        lab.host(w).write("/etc/ivr-web/web.toml", format!("[server]\nname = \"{w}\"\n").as_bytes());
    }
    let rows = [("1", "250ms", "1s"), ("0.25", "250ms", "750ms")];
    let mut report = Vec::new();
    for (i, (advert, heartbeat, dead_after)) in rows.iter().enumerate() {
        let text = format!(
            "[farm]\nname = \"vip\"\n\n{}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.other]\nfiles = [\"/etc/other.conf\"]\n\n{}\n\
             [services.web]\nvirtual = \"web\"\nmembers = [\"web-c\", \"web-d\"]\nstrategy = \"address\"\naddress = \"{vip_f}/24\"\nclients = [\"c-1\", \"c-2\"]\nheartbeat = \"{heartbeat}\"\ndead_after = \"{dead_after}\"\n",
            lab.ssh_section(),
            lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "other" })
        );
        lab.write_farm("farm.toml", &text);
        let log_path = lab.dir.path().join(format!("watch-{i}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut watcher: Child = lab.farmctl().args(["watch", "farm.toml"]).stderr(log).spawn().unwrap();
        let f = run(&mut lab, &vip_f, ["web-c", "web-d"], kills, freeze, Some(&log_path), &|_, _| {});
        let _ = Command::new("kill").args(["-INT", &watcher.id().to_string()]).status();
        let _ = watcher.wait();
        if freeze || only_farmctl {
            let (fm, fx) = median_max(f.clone());
            report.push(format!("| farmctl watch,{} heartbeat {heartbeat}, dead_after {dead_after} | {} | {:.3} | {:.3} |", if freeze { " holder frozen," } else { "" }, f.len(), fm, fx));
            if freeze {
                break;
            }
            continue;
        }
        let vrid = 50 + i as u32;
        keepalived(&lab, "ka-1", &vip_k, 150, advert, vrid);
        keepalived(&lab, "ka-2", &vip_k, 100, advert, vrid);
        let vk = vip_k.clone();
        let k = run(&mut lab, &vip_k, ["ka-1", "ka-2"], kills, false, None, &move |lab: &mut Lab, host: &str| {
            let prio = if host == "ka-1" { 150 } else { 100 };
            keepalived(lab, host, &vk, prio, advert, vrid);
        });
        for h in ["ka-1", "ka-2"] {
            lab.host_mut(h).crash();
            lab.host_mut(h).restart();
        }
        let (fm, fx) = median_max(f.clone());
        let (km, kx) = median_max(k.clone());
        report.push(format!("| keepalived, advert_int {advert} s{} | {} | {:.3} | {:.3} |", if *advert == "0.25" { " (VRRPv3)" } else { "" }, k.len(), km, kx));
        report.push(format!("| farmctl watch, heartbeat {heartbeat}, dead_after {dead_after} | {} | {:.3} | {:.3} |", f.len(), fm, fx));
    }
    println!("Time from the death of the address's holder to the first answer at the address, as a client on the segment sees it (s):\n");
    println!("| who | kills | median | max |\n|---|---|---|---|");
    for r in report {
        println!("{r}");
    }
}
