//! A rollout on a lab farm of real sshd hosts, farmctl against Ansible and
//! against the ideal. The same service on every host: a version file, an
//! upgrade script that takes 1 s, and a health script. The same rollout:
//! canary 1, then waves to 25% and 100%, 2 health samples 0.5 s apart after
//! each stage. Ansible runs it with `serial: [1, "25%", "100%"]` and the same
//! scripts. The ideal is the sum over stages of the slowest upgrade plus its
//! gate (1 s + 0.5 s each).
//!
//!     cargo bench --bench rollout -- --hosts 50 --runs 3 --ansible bench/.venv/bin/ansible-playbook

#[path = "../tests/lab/mod.rs"]
#[allow(dead_code)]
mod lab;

use lab::Lab;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

const UPGRADE: &str = "#!/bin/sh\ntouch /etc/ivr/down\nsleep 1\nprintf '%s\\n' \"$1\" > /etc/ivr/VERSION\nrm -f /etc/ivr/down\n";
const HEALTH: &str = "#!/bin/sh\ntest ! -e /etc/ivr/down\n";
/// The stages (canary, 25%, 100%), each 1 s of upgrade and one 0.5 s gap between two samples.
const IDEAL_SECS: f64 = 3.0 * (1.0 + 0.5);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn reset(lab: &Lab, hosts: &[String], version: &str) {
    for h in hosts {
        let host = lab.host(h);
        host.write("/etc/ivr/VERSION", format!("{version}\n").as_bytes());
        host.write("/etc/ivr/upgrade.sh", UPGRADE.as_bytes());
        host.write("/etc/ivr/health.sh", HEALTH.as_bytes());
        let _ = std::fs::remove_file(host.path("/etc/ivr/down"));
    }
}

fn farmctl_run(lab: &Lab, hosts: &[String], to: &str) -> f64 {
    let text = format!(
        "[farm]\nname = \"bench\"\n\n{}\n[roles.ivr]\nfiles = [\"/etc/ivr/VERSION\"]\n\n{}\n\
         [rollout.ivr]\nversion = \"{to}\"\nprobe = \"cat /etc/ivr/VERSION\"\nupgrade = \"sh /etc/ivr/upgrade.sh {{version}}\"\n\
         health = \"sh /etc/ivr/health.sh\"\ncanary = 1\nwaves = [\"25%\", \"100%\"]\nmax_unavailable = \"100%\"\n\
         gate = {{ samples = 2, interval = \"500ms\", timeout = \"60s\" }}\n",
        lab.ssh_section(),
        lab.hosts_section(|_| "ivr")
    );
    lab.write_farm("rollout.toml", &text);
    let t = Instant::now();
    let out = lab.farmctl().args(["apply", "rollout.toml", "--yes", "--parallel", &hosts.len().to_string()]).stdout(Stdio::null()).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "farmctl failed: {}", String::from_utf8_lossy(&out.stderr));
    for h in hosts {
        assert_eq!(String::from_utf8(lab.host(h).read("/etc/ivr/VERSION")).unwrap().trim(), to, "{h}");
    }
    secs
}

fn ansible_run(lab: &Lab, hosts: &[String], playbook: &PathBuf, to: &str, tag: &str) -> f64 {
    let dir = lab.dir.path().join("ansible-rollout");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inventory.ini"), lab.ansible_inventory("ivr", hosts)).unwrap();
    // The same stages and gate: each batch upgrades, then needs 2 healthy samples 0.5 s apart.
    std::fs::write(
        dir.join("rollout.yml"),
        format!(
            "- hosts: ivr\n  gather_facts: false\n  serial: [1, \"25%\", \"100%\"]\n  max_fail_percentage: 0\n  tasks:\n\
             \x20   - name: upgrade\n      ansible.builtin.command: sh /etc/ivr/upgrade.sh {to}\n\
             \x20   - name: first healthy sample\n      ansible.builtin.command: sh /etc/ivr/health.sh\n      register: h\n      until: h.rc == 0\n      retries: 120\n      delay: 0.5\n\
             \x20   - name: the gap between samples\n      ansible.builtin.pause:\n        seconds: 0.5\n      run_once: true\n\
             \x20   - name: second healthy sample\n      ansible.builtin.command: sh /etc/ivr/health.sh\n"
        ),
    )
    .unwrap();
    let cp = PathBuf::from(format!("/tmp/far{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cp);
    std::fs::write(
        dir.join("ansible.cfg"),
        format!("[defaults]\nforks = {}\nhost_key_checking = True\ngathering = explicit\nlocal_tmp = {}/tmp\n\n[ssh_connection]\npipelining = True\ncontrol_path_dir = {}\n", hosts.len(), dir.display(), cp.display()),
    )
    .unwrap();
    let t = Instant::now();
    let out = Command::new(playbook).current_dir(&dir).env("ANSIBLE_CONFIG", dir.join("ansible.cfg")).args(["-i", "inventory.ini", "rollout.yml"]).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "ansible failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = Command::new("pkill").arg("-f").arg(cp.display().to_string()).status();
    for h in hosts {
        assert_eq!(String::from_utf8(lab.host(h).read("/etc/ivr/VERSION")).unwrap().trim(), to, "{h}");
    }
    secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let n: usize = get("--hosts").map(|s| s.parse().unwrap()).unwrap_or(50);
    let runs: usize = get("--runs").map(|s| s.parse().unwrap()).unwrap_or(3);
    let ansible = get("--ansible").map(|p| std::path::absolute(PathBuf::from(p)).expect("a path"));
    let hosts: Vec<String> = (1..=n).map(|i| format!("h{i:03}")).collect();
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let lab = Lab::start(&names);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for r in 0..runs {
        reset(&lab, &hosts, "1.0.0");
        ours.push(farmctl_run(&lab, &hosts, "2.0.0"));
        if let Some(p) = &ansible {
            reset(&lab, &hosts, "1.0.0");
            theirs.push(ansible_run(&lab, &hosts, p, "2.0.0", &r.to_string()));
        }
    }
    let (f, a) = (median(ours), median(theirs));
    println!("| hosts | ideal (s) | farmctl rollout (s) | farmctl - ideal, per stage (s) | ansible serial (s) | ansible / farmctl |");
    println!("|---|---|---|---|---|---|");
    println!("| {n} | {IDEAL_SECS:.2} | {f:.2} | {:.2} | {a:.2} | {:.2} |", (f - IDEAL_SECS) / 3.0, a / f);
}
