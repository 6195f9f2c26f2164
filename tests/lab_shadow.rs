//! Shadow canaries on the lab farm (issue 13): 4 web hosts and 6 IVR clients
//! whose `ivr.toml` lists the web pool and a mirror list. The web hosts'
//! health script prints metrics that the test controls per version
//! (`/etc/ivr-web/metrics-VERSION`). An observer reads every client's file
//! while farmctl works.

mod lab;

use lab::{stderr, stdout, Lab};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const WEBS: [&str; 4] = ["web-a", "web-b", "web-c", "web-d"];
const IVRS: [&str; 6] = ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

const UPGRADE: &str = "#!/bin/sh\necho \"$(hostname) $1\" >> /var/log/farmlab/upgrades\nprintf '%s\\n' \"$1\" > /etc/ivr-web/VERSION\n";
const HEALTH: &str = "#!/bin/sh\nm=/etc/ivr-web/metrics-$(cat /etc/ivr-web/VERSION)\nif [ -f \"$m\" ]; then cat \"$m\"; else printf 'error_rate=0.010\\np95_ms=40\\n'; fi\n";

fn start() -> Lab {
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
         shadow = {{ file = \"/etc/ivr/ivr.toml\", mirror_key = \"web.mirror\", active_key = \"web.pool\", window = \"2s\", join = [\"error_rate <= baseline * 1.1\", \"p95(p95_ms) <= baseline + 20\"] }}\n",
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
