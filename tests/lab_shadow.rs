//! Shadow canaries on the lab farm (issue 13): 4 web hosts and 6 IVR clients
//! whose `ivr.toml` lists the web pool and a mirror list. The web hosts'
//! health script prints metrics that the test controls per version
//! (`/etc/ivr-web/metrics-VERSION`). An observer reads every client's file
//! while farmctl works.

mod lab;
#[path = "lab/prometheus.rs"]
mod prometheus;

use lab::{stderr, stdout, Lab};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const WEBS: [&str; 4] = ["web-a", "web-b", "web-c", "web-d"];
const IVRS: [&str; 6] = ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

const UPGRADE: &str = "#!/bin/sh\necho \"$(hostname) $1\" >> /var/log/farmlab/upgrades\nprintf '%s\\n' \"$1\" > /etc/ivr-web/VERSION\n";
const HEALTH: &str = "#!/bin/sh\nm=/etc/ivr-web/metrics-$(cat /etc/ivr-web/VERSION)\nif [ -f \"$m\" ]; then cat \"$m\"; else printf 'error_rate=0.010\\np95_ms=40\\n'; fi\n";

fn start() -> Lab {
    start_judged_by("join = [\"error_rate <= baseline * 1.1\", \"p95(p95_ms) <= baseline + 20\"]", "")
}

/// The lab with the shadow's `join` (and the rollout's extra settings).
fn start_judged_by(join: &str, extra: &str) -> Lab {
    let names: Vec<&str> = WEBS.iter().chain(IVRS.iter()).copied().collect();
    let lab = Lab::start(&names);
    for w in WEBS {
        let h = lab.host(w);
        h.write("/etc/ivr-web/web.toml", format!("[server]\nname = \"{w}\"\n").as_bytes());
        h.write("/etc/ivr-web/VERSION", b"1.0.0\n");
        h.write("/etc/ivr-web/upgrade.sh", UPGRADE.as_bytes());
        h.write("/etc/ivr-web/health.sh", HEALTH.as_bytes());
    }
    for i in IVRS {
        lab.host(i).write("/etc/ivr/ivr.toml", format!("# IVR node {i}\n[web]\npool = [\"web-a\", \"web-b\", \"web-c\"]  # the active web servers\nmirror = []\n").as_bytes());
    }
    let text = format!(
        "[farm]\nname = \"shadow\"\n\n{}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\"]\nreload = \"echo reload >> /var/log/farmlab/reloads\"\n\n{}\n\
         [rollout.web]\nversion = \"2.0.0\"\nprobe = \"cat /etc/ivr-web/VERSION\"\nupgrade = \"sh /etc/ivr-web/upgrade.sh {{version}}\"\nhealth = \"sh /etc/ivr-web/health.sh\"\n\
         waves = [\"100%\"]\nmax_unavailable = 1\ngate = {{ samples = 1, interval = \"200ms\", timeout = \"10s\" }}\n\
         shadow = {{ file = \"/etc/ivr/ivr.toml\", mirror_key = \"web.mirror\", active_key = \"web.pool\", window = \"2s\", {join} }}\n{extra}",
        lab.ssh_section(),
        lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" })
    );
    lab.write_farm("farm.toml", &text);
    lab
}

fn list(lab: &Lab, ivr: &str, key: &str) -> Vec<String> {
    let doc: toml_edit::DocumentMut = String::from_utf8(lab.host(ivr).read("/etc/ivr/ivr.toml")).unwrap().parse().unwrap();
    doc["web"][key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn version(lab: &Lab, h: &str) -> String {
    String::from_utf8(lab.host(h).read("/etc/ivr-web/VERSION")).unwrap().trim().to_string()
}

/// Records when web-d first shows up in any client's active pool.
fn watch_pools(lab: &Lab) -> (Arc<AtomicBool>, Arc<Mutex<Option<SystemTime>>>, std::thread::JoinHandle<()>) {
    let files: Vec<std::path::PathBuf> = IVRS.iter().map(|i| lab.host(i).path("/etc/ivr/ivr.toml")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(None));
    let (s, f) = (stop.clone(), seen.clone());
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::SeqCst) {
            for p in &files {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let pool = text.lines().find(|l| l.starts_with("pool")).unwrap_or("");
                if pool.contains("web-d") && f.lock().unwrap().is_none() {
                    *f.lock().unwrap() = Some(SystemTime::now());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, seen, t)
}

#[test]
fn a_worse_shadow_canary_is_never_promoted_and_goes_back() {
    let lab = start();
    lab.host("web-d").write("/etc/ivr-web/metrics-2.0.0", b"error_rate=0.5\np95_ms=45\n");
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("↑ web-d (web): 1.0.0 -> 2.0.0"), "web-d, which no client lists as active, is the shadow canary: {text}");
    assert!(text.contains("+mirror = [\"web-d\"]"), "the plan shows the clients' entry diff: {text}");
    assert!(text.contains("⚖ web-d serves mirrored work"), "{text}");

    let (stop, seen, t) = watch_pools(&lab);
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("web shadow canary web-d was not promoted: `error_rate <= baseline * 1.1`: FAILS: canary 0.5000, baseline 0.0100"), "{err}");
    assert!(seen.lock().unwrap().is_none(), "no client's pool ever listed web-d");
    for i in IVRS {
        assert_eq!(list(&lab, i, "pool"), ["web-a", "web-b", "web-c"], "{i}");
        assert!(list(&lab, i, "mirror").is_empty(), "{i}: its mirror entry is gone");
    }
    assert_eq!(version(&lab, "web-d"), "1.0.0", "back on its old version");
    for w in ["web-a", "web-b", "web-c"] {
        assert_eq!(version(&lab, w), "1.0.0", "{w} untouched");
    }
    let out = lab.farmctl().args(["journal"]).output().unwrap();
    let j = stdout(&out);
    assert!(j.contains("shadow-sample") && j.contains("error_rate=0.5"), "the samples are in the journal: {j}");
    assert!(j.contains("shadow-fails") && j.contains("not-promoted"), "and the verdict: {j}");
}

#[test]
fn a_shadow_canary_within_the_conditions_is_promoted_and_the_role_finishes() {
    let lab = start();
    lab.host("web-d").write("/etc/ivr-web/metrics-2.0.0", b"error_rate=0.010\np95_ms=50\n");
    let (stop, seen, t) = watch_pools(&lab);
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for i in IVRS {
        assert_eq!(list(&lab, i, "pool"), ["web-a", "web-b", "web-c", "web-d"], "{i}");
        assert!(list(&lab, i, "mirror").is_empty(), "{i}");
        assert!(String::from_utf8(lab.host(i).read("/etc/ivr/ivr.toml")).unwrap().contains("# the active web servers"), "comments survive");
    }
    for w in WEBS {
        assert_eq!(version(&lab, w), "2.0.0", "{w}");
    }
    // The pool listed web-d only after the judgement.
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    let promoted = journal.lines().find(|l| l.contains("\"outcome\":\"promoted\"")).expect("the verdict is journaled");
    let at: jiff::Timestamp = serde_json::from_str::<serde_json::Value>(promoted).unwrap()["time"].as_str().unwrap().parse().unwrap();
    let first = seen.lock().unwrap().expect("web-d joined the pool");
    let first = jiff::Timestamp::try_from(first).unwrap();
    assert!(first >= at, "web-d was in a pool at {first}, before the judgement at {at}");
    assert!(journal.contains("shadow-holds"), "{journal}");
}

/// What a web host's exporter serves: 100 requests, and as many errors as
/// `/etc/ivr-web/errors-VERSION` says (1 without it), at the version it runs.
fn web_metrics(root: &std::path::Path) -> String {
    let version = std::fs::read_to_string(root.join("etc/ivr-web/VERSION")).unwrap_or_default().trim().to_string();
    let errors = std::fs::read_to_string(root.join(format!("etc/ivr-web/errors-{version}"))).unwrap_or_else(|_| "1".into()).trim().to_string();
    format!("web_requests_total{{version=\"{version}\"}} 100\nweb_errors_total{{version=\"{version}\"}} {errors}\n")
}

/// Issue 23: a shadow judged by Prometheus queries, promoted or refused as
/// the values Prometheus computes from the web hosts' exporters say.
fn judged_by_prometheus(canary_errors: &str) -> (Lab, std::process::Output) {
    let lab0 = start_judged_by("join = [\"error_rate <= baseline * 1.1\"]", "");
    let mut targets = Vec::new();
    for w in WEBS {
        let h = lab0.host(w);
        prometheus::exporter(&h.address, 9100, h.path("/"), web_metrics);
        targets.push(("web", format!("{}:9100", h.address)));
    }
    let prom = prometheus::Prometheus::start(&targets);
    let q = r#"sum(web_errors_total{instance="{address}:9100",version="{version}"}) / sum(web_requests_total{instance="{address}:9100",version="{version}"})"#;
    // The gate before the shadow allows 25 failed samples 200 ms apart: room
    // for Prometheus's next scrape (1 s) to see the new version on a loaded machine.
    let farm = std::fs::read_to_string(lab0.dir.path().join("farm.toml"))
        .unwrap()
        .replace("health = \"sh /etc/ivr-web/health.sh\"\n", &format!("health = \"true\"\nmetrics = {{ prometheus = \"{}\", error_rate = '{q}' }}\n", prom.url()))
        .replace("timeout = \"10s\" }", "timeout = \"30s\", failure_limit = 25 }");
    lab0.write_farm("farm.toml", &farm);
    lab0.host("web-d").write("/etc/ivr-web/errors-2.0.0", canary_errors.as_bytes());
    let out = lab0.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    drop(prom);
    (lab0, out)
}

#[test]
fn a_shadow_judged_by_prometheus_is_refused_when_its_error_rate_is_worse() {
    let (lab, out) = judged_by_prometheus("50\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    assert!(err.contains("`error_rate <= baseline * 1.1`: FAILS: canary 0.5000, baseline 0.0100"), "{err}");
    for i in IVRS {
        assert_eq!(list(&lab, i, "pool"), ["web-a", "web-b", "web-c"], "{i}");
    }
    assert_eq!(version(&lab, "web-d"), "1.0.0", "back on its old version");
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    assert!(journal.lines().any(|l| l.contains("shadow-sample") && l.contains("error_rate=0.5") && l.contains("web_errors_total{instance=")), "samples keep their queries: {journal}");
}

#[test]
fn a_shadow_judged_by_prometheus_is_promoted_when_its_error_rate_holds() {
    let (lab, out) = judged_by_prometheus("1\n");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for i in IVRS {
        assert_eq!(list(&lab, i, "pool"), ["web-a", "web-b", "web-c", "web-d"], "{i}");
    }
    for w in WEBS {
        assert_eq!(version(&lab, w), "2.0.0", "{w}");
    }
}
