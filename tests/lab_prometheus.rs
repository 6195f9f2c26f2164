//! Rollout gates that read real Prometheus (issue 23). Each IVR host has the
//! lab's small upgradable service (a version file and an upgrade script) and
//! an exporter at its own address, port 9100, that serves what the host's
//! files say: `ivr_requests_total` and `ivr_errors_total`, labelled with the
//! version the host runs. Prometheus scrapes them every second and computes
//! each host's error rate; the gate's query asks for the host's series *at
//! the version the plan brings it to*, so a sample taken before Prometheus
//! has seen the new version finds no data, which is never a pass.

mod lab;
#[path = "lab/prometheus.rs"]
mod prometheus;

use lab::voice::{farm, lab};
use lab::{stderr, stdout, Lab};
use prometheus::Prometheus;
use std::time::{Duration, Instant};

const IVRS: [&str; 6] = ["ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

const UPGRADE: &str = "#!/bin/sh\n\
echo \"$(hostname) $1\" >> /var/log/farmlab/upgrades\n\
printf '%s\\n' \"$1\" > /etc/ivr/VERSION\n";

/// What a host's exporter serves: 100 requests, and as many errors as the
/// host's `/etc/ivr/errors-VERSION` says (0 without it).
fn render(root: &std::path::Path) -> String {
    let version = std::fs::read_to_string(root.join("etc/ivr/VERSION")).unwrap_or_default().trim().to_string();
    let errors = std::fs::read_to_string(root.join(format!("etc/ivr/errors-{version}"))).unwrap_or_else(|_| "0".into()).trim().to_string();
    format!("# TYPE ivr_requests_total counter\nivr_requests_total{{version=\"{version}\"}} 100\n# TYPE ivr_errors_total counter\nivr_errors_total{{version=\"{version}\"}} {errors}\n")
}

const QUERY: &str = r#"sum(ivr_errors_total{instance="{address}:9100",version="{version}"}) / sum(ivr_requests_total{instance="{address}:9100",version="{version}"})"#;

/// The lab, its exporters and a Prometheus scraping them; the farm's rollout
/// of ivr to 5.2.0 gated on `error_rate < 0.05` from Prometheus.
fn start() -> (Lab, Prometheus) {
    let lab = lab();
    let mut targets = Vec::new();
    for h in IVRS {
        let host = lab.host(h);
        host.write("/etc/ivr/VERSION", b"5.1.0\n");
        host.write("/etc/ivr/upgrade.sh", UPGRADE.as_bytes());
        prometheus::exporter(&host.address, 9100, host.path("/"), render);
        targets.push(("ivr", format!("{}:9100", host.address)));
    }
    let prom = Prometheus::start(&targets);
    // The gate allows 8 failed samples in a row, a second apart: room for
    // Prometheus's next scrape (1 s) to see a new version on a loaded machine.
    farm(
        &lab,
        &format!(
            "[rollout.ivr]\nversion = \"5.2.0\"\nprobe = \"cat /etc/ivr/VERSION\"\nupgrade = \"sh /etc/ivr/upgrade.sh {{version}}\"\n\
             canary = 1\nwaves = [\"100%\"]\nmax_unavailable = 2\n\
             metrics = {{ prometheus = \"{}\", error_rate = '{QUERY}' }}\n\
             gate = {{ samples = 2, interval = \"1s\", timeout = \"60s\", failure_limit = 8, conditions = [\"error_rate < 0.05\"] }}\n",
            prom.url()
        ),
    );
    (lab, prom)
}

fn version(lab: &Lab, h: &str) -> String {
    String::from_utf8(lab.host(h).read("/etc/ivr/VERSION")).unwrap().trim().to_string()
}

fn upgrades(lab: &Lab, h: &str) -> Vec<String> {
    std::fs::read_to_string(lab.host(h).path("/var/log/farmlab/upgrades")).unwrap_or_default().lines().map(|l| l.split(' ').nth(1).unwrap_or("").to_string()).collect()
}

fn journal(lab: &Lab) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&lab.journal).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_canary_whose_error_rate_prometheus_finds_too_high_is_rolled_back_and_named() {
    let (lab, prom) = start();
    // 5.2.0 fails 20 of 100 requests on the canary.
    lab.host("ivr-1").write("/etc/ivr/errors-5.2.0", b"20\n");
    let plan = stdout(&lab.farmctl().args(["plan", "farm.toml"]).output().unwrap());
    assert!(plan.contains("and `error_rate < 0.05`") && plan.contains(&format!("metrics from {}", prom.url())), "the plan shows the gate's condition and source: {plan}");
    let addr = &lab.host("ivr-1").address;
    assert!(plan.contains(&format!(r#"ivr-1 error_rate = sum(ivr_errors_total{{instance="{addr}:9100",version="5.2.0"}})"#)), "the plan shows each host's query, filled in: {plan}");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_ne!(out.status.code(), Some(0), "{}{err}", stdout(&out));
    // The exit names the query and both values: the canary's and the bound.
    assert!(err.contains("error_rate is 0.2") && err.contains("< 0.05") && err.contains("ivr_errors_total{instance="), "{err}");
    assert_eq!(version(&lab, "ivr-1"), "5.1.0", "the canary went back: {err}");
    assert_eq!(upgrades(&lab, "ivr-1"), ["5.2.0", "5.1.0"], "{err}");
    for h in &IVRS[1..] {
        assert!(upgrades(&lab, h).is_empty(), "{h} was never upgraded: {err}");
    }
    // Every sample is in the journal with the query it came from.
    let failed: Vec<_> = journal(&lab).into_iter().filter(|e| e["outcome"] == "sample-failed" && e["host"] == "ivr-1").collect();
    assert!(!failed.is_empty(), "{err}");
    assert!(failed.iter().any(|e| e["detail"].as_str().unwrap().contains("error_rate is 0.2") && e["detail"].as_str().unwrap().contains("ivr_requests_total{instance=")), "{failed:?}");
    // Prometheus itself says the same of the canary.
    let seen = prom.query(&format!(r#"sum(ivr_errors_total{{instance="{addr}:9100",version="5.2.0"}}) / sum(ivr_requests_total{{instance="{addr}:9100",version="5.2.0"}})"#));
    assert_eq!(seen, Some(0.2));
}

#[test]
fn a_good_canary_goes_on_and_prometheus_stopped_in_a_gate_fails_it_naming_why() {
    let (lab, mut prom) = start();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for h in IVRS {
        assert_eq!(version(&lab, h), "5.2.0", "{h}");
    }
    let healthy = journal(&lab).into_iter().filter(|e| e["outcome"] == "sample-healthy").count();
    assert!(healthy >= 2 * 6, "every host's passing samples are journaled: {healthy}");

    // The next rollout: Prometheus dies once the canary runs the new version.
    let text = std::fs::read_to_string(lab.dir.path().join("farm.toml")).unwrap().replace("5.2.0", "5.3.0");
    lab.write_farm("farm.toml", &text);
    let apply = lab.farmctl().args(["apply", "farm.toml", "--yes"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while version(&lab, "ivr-1") != "5.3.0" {
        assert!(started.elapsed() < Duration::from_secs(60), "the canary was never upgraded");
        std::thread::sleep(Duration::from_millis(20));
    }
    prom.kill();
    let out = apply.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("{err}");
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("does not answer") && err.contains(&prom.url()), "the gate names why: {err}");
    assert_eq!(version(&lab, "ivr-1"), "5.2.0", "the canary went back: {err}");
    for h in &IVRS[1..] {
        assert_eq!(version(&lab, h), "5.2.0", "nothing was promoted past the gate: {err}");
    }
}
