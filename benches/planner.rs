//! Planner scale: synthetic farms of 1,000 to 50,000 hosts, planned in memory
//! (the live state is built as a snapshot would be, without any transport).
//! Each size runs in a child process so that its peak RSS is its own.
//!
//!     cargo bench --bench planner                 # 1000,10000,50000 hosts; 1 and 10 replacements
//!     cargo bench --bench planner -- --hosts 10000 --replacements 1

use farmctl::farm::{self, sha256_hex};
use farmctl::live::{FileInfo, FileState, LiveHost, LiveFarm};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn farm_text(hosts: usize, replacements: usize) -> String {
    let mut s = String::from("[farm]\nname = \"scale\"\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/peers.conf\", \"/etc/ivr/routes.conf\"]\nreload = \"systemctl reload ivr\"\n\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n");
    for w in 0..replacements * 2 {
        s.push_str(&format!("[hosts.web-{w}]\naddress = \"10.9.{}.{}\"\nrole = \"web\"\n\n", w / 250, w % 250 + 1));
    }
    for h in 0..hosts {
        s.push_str(&format!("[hosts.ivr-{h}]\naddress = \"10.{}.{}.{}\"\nrole = \"ivr\"\n\n", h / 62500, h / 250 % 250, h % 250 + 1));
    }
    for r in 0..replacements {
        s.push_str(&format!("[[replace]]\nold = \"web-{}\"\nnew = \"web-{}\"\n\n", 2 * r, 2 * r + 1));
    }
    s
}

/// About 2 KiB per file; every third host refers to an old web host.
fn files(host: usize, replacements: usize) -> [(String, String); 3] {
    let web = if host % 3 == 0 { 2 * (host % replacements.max(1)) } else { 2 * replacements + 7 };
    let pad: String = (0..40).map(|i| format!("# line {i} of padding for a realistic config file size\n")).collect();
    [
        ("/etc/ivr/ivr.toml".into(), format!("[node]\nname = \"ivr-{host}\"\n\n[web]\nprimary = \"web-{web}\"\nurl = \"http://web-{web}:8080/\"\n{pad}")),
        ("/etc/ivr/peers.conf".into(), format!("web web-{web} 8080\nasr asr-1 9000\n{pad}")),
        ("/etc/ivr/routes.conf".into(), format!("route default via web-{web}\n{pad}")),
    ]
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn child(hosts: usize, replacements: usize) {
    let t0 = Instant::now();
    let text = farm_text(hosts, replacements);
    let farm = farm::parse(Path::new("scale.toml"), &text).expect("the synthetic farm is valid");
    let parse = t0.elapsed();
    let mut live = LiveFarm::new();
    for (name, h) in &farm.hosts {
        let mut map = BTreeMap::new();
        if h.role == "ivr" {
            let n: usize = name[4..].parse().unwrap();
            for (path, content) in files(n, replacements) {
                let bytes = content.into_bytes();
                map.insert(path, FileState::Present(FileInfo { sha256: sha256_hex(&bytes), content: bytes, mode: "644".into(), owner: "root".into(), group: "root".into(), replaceable: true }));
            }
        } else {
            map.insert("/etc/ivr-web/web.toml".into(), FileState::Missing);
        }
        live.insert(name.clone(), Ok(LiveHost { hostname: name.clone(), clock_offset_ms: Some(0), clock_uncertainty_ms: 0, files: map, armed: Vec::new(), version: None, addresses: Vec::new() }));
    }
    let scope: Vec<String> = farm.hosts.keys().cloned().collect();
    let t1 = Instant::now();
    let planned = farmctl::plan::plan(&farm, &live, &scope, &[]).expect("no cycle");
    let plan = t1.elapsed();
    let t2 = Instant::now();
    let json = planned.plan.to_json();
    let render = t2.elapsed();
    println!(
        "| {hosts} | {replacements} | {:.3} | {:.3} | {:.3} | {} | {:.1} | {:.0} |",
        parse.as_secs_f64(),
        plan.as_secs_f64(),
        render.as_secs_f64(),
        planned.plan.edits().count(),
        json.len() as f64 / 1_048_576.0,
        peak_rss_mib()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if let Some(h) = get("--child") {
        child(h.parse().unwrap(), get("--replacements").unwrap().parse().unwrap());
        return;
    }
    let hosts: Vec<usize> = get("--hosts").unwrap_or_else(|| "1000,10000,50000".into()).split(',').map(|h| h.parse().unwrap()).collect();
    let reps: Vec<usize> = get("--replacements").unwrap_or_else(|| "1,10".into()).split(',').map(|h| h.parse().unwrap()).collect();
    println!("| hosts | replacements | parse farm file (s) | plan (s) | plan to JSON (s) | edits | plan JSON (MiB) | peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|---|");
    for &h in &hosts {
        for &r in &reps {
            let me = std::env::current_exe().unwrap();
            let status = std::process::Command::new(me).args(["--child", &h.to_string(), "--replacements", &r.to_string()]).status().unwrap();
            assert!(status.success());
        }
    }
}
