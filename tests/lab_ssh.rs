//! farmctl against a lab farm of real sshd hosts: plan, apply, stale-plan
//! refusal, rollback, locks and unreachable hosts, all over real SSH.

mod lab;

use lab::voice::{farm, lab, render, IVR_TOML, PEERS, WEB_A_TO_C};
use lab::{stderr, stdout};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn plan_apply_replan_changes_exactly_the_matched_tokens() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let ivr1 = lab.host("ivr-1");
    std::fs::set_permissions(ivr1.path("/etc/ivr/peers.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(ivr1.path("/etc/ivr/peers.conf"), Some(4242), Some(4243)).unwrap();
    let before = lab.snapshot();

    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode", "-o", "plans/p.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Plan: 3 hosts to change, 6 unchanged, 0 unreachable; 6 edits, 3 reloads."), "{text}");
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(lab.dir.path().join("plans/p.json")).unwrap()).unwrap();
    let mut edited: Vec<String> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "edit")
        .map(|a| format!("{}:{}", a["host"].as_str().unwrap(), a["path"].as_str().unwrap()))
        .collect();
    edited.sort();
    let want: Vec<String> = ["ivr-1", "ivr-2", "ivr-3"]
        .iter()
        .flat_map(|h| [format!("{h}:/etc/ivr/ivr.toml"), format!("{h}:/etc/ivr/peers.conf")])
        .collect();
    assert_eq!(edited, want);
    lab::assert_same(&lab.snapshot(), &before, "plan must not write anything");

    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let (a, c) = (&lab.host("web-a").address, &lab.host("web-c").address);
    for h in ["ivr-1", "ivr-2", "ivr-3"] {
        let host = lab.host(h);
        assert_eq!(String::from_utf8(host.read("/etc/ivr/ivr.toml")).unwrap(), render(IVR_TOML, h, "web-c", c, "web-a", a));
        assert_eq!(String::from_utf8(host.read("/etc/ivr/peers.conf")).unwrap(), render(PEERS, h, "web-c", c, "web-a", a));
        assert_eq!(std::fs::read_to_string(host.path("/var/log/farmlab/reloads")).unwrap(), format!("reload {h}\n"));
        let backups = std::fs::read_dir(host.state("backups")).unwrap().count();
        assert_eq!(backups, 1, "one backup directory per applied plan stage on {h}");
    }
    let meta = std::fs::metadata(ivr1.path("/etc/ivr/peers.conf")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o640, 4242, 4243), "mode and owner survive");
    let after = lab.snapshot();
    for ((host, path), bytes) in &before {
        if !["ivr-1", "ivr-2", "ivr-3"].contains(&host.as_str()) {
            assert_eq!(after.get(&(host.clone(), path.clone())), Some(bytes), "{host}:{path} must be untouched");
        }
    }
    assert_eq!(after.len(), before.len(), "no temp or staged files are left behind");
    for h in ["ivr-4", "ivr-5", "ivr-6", "web-a"] {
        assert!(!lab.host(h).path("/var/log/farmlab/reloads").exists(), "{h} must not be reloaded");
    }
    let retired = std::fs::read_to_string(lab.host("web-a").path("/var/log/farmlab/retired")).unwrap();
    assert_eq!(retired, "retired web-a\n", "no host refers to web-a any more, so its role's retire ran there");
    let journal = std::fs::read_to_string(&lab.journal).unwrap();
    assert_eq!(journal.lines().filter(|l| l.contains("\"outcome\":\"written\"")).count(), 6);

    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("No changes."));
}

#[test]
fn a_saved_plan_is_refused_when_a_file_changed_and_nothing_is_written() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let out = lab.farmctl().args(["plan", "farm.toml", "-o", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ivr2 = lab.host("ivr-2");
    let mut peers = ivr2.read("/etc/ivr/peers.conf");
    peers.extend_from_slice(b"# edited by hand after the plan\n");
    ivr2.write("/etc/ivr/peers.conf", &peers);
    let before = lab.snapshot();

    let out = lab.farmctl().args(["apply", "plans/p.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-2: refused, nothing written: changed since the plan: /etc/ivr/peers.conf"), "{err}");
    assert!(err.contains("aborted (nothing written): ivr-1, ivr-3"), "{err}");

    // Without the snapshot `plan -o` left (another workstation, or later), apply reads
    // every host first and refuses before it stages anything.
    std::fs::remove_dir_all(lab.dir.path().join("cache")).unwrap();
    let out = lab.farmctl().args(["apply", "plans/p.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-2:/etc/ivr/peers.conf: the file changed since the plan"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    lab::assert_same(&lab.snapshot(), &before, "no host may be written");
    for h in lab.hosts.values() {
        assert!(!h.state("lock").exists(), "no lock left on {}", h.name);
    }
}

#[test]
fn a_saved_plan_applies_exactly_and_rolls_back() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let before = lab.snapshot();
    let out = lab.farmctl().args(["plan", "farm.toml", "-o", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.farmctl().args(["show", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ivr-3"));

    let out = lab.farmctl().args(["apply", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_ne!(lab.snapshot(), before);

    // Someone edits one applied file by hand; rollback must leave it alone and say so.
    let ivr3 = lab.host("ivr-3");
    let mut toml = ivr3.read("/etc/ivr/ivr.toml");
    toml.extend_from_slice(b"# hand edit\n");
    ivr3.write("/etc/ivr/ivr.toml", &toml);

    let out = lab.farmctl().args(["rollback", "plans/p.json", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed since the apply: /etc/ivr/ivr.toml"), "{}", stderr(&out));
    let after = lab.snapshot();
    for (key, bytes) in &before {
        if key.0 == "ivr-3" && key.1 == "/etc/ivr/ivr.toml" {
            assert_eq!(after[key], toml, "the hand-edited file is left as it is");
        } else {
            assert_eq!(&after[key], bytes, "{key:?} is restored byte for byte");
        }
    }
}

#[test]
fn a_killed_host_is_named_and_limit_lets_the_rest_go_ahead() {
    let mut lab = lab();
    farm(&lab, WEB_A_TO_C);
    lab.host_mut("ivr-2").kill();
    let before = lab.snapshot();

    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-2") && err.contains("Connection refused"), "{err}");
    assert!(err.contains("--limit '!ivr-2'"), "{err}");

    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    lab::assert_same(&lab.snapshot(), &before, "an apply that cannot reach every host writes nothing");

    let out = lab.farmctl().args(["apply", "farm.toml", "--yes", "--limit", "!ivr-2"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after = lab.snapshot();
    assert_eq!(after[&("ivr-2".to_string(), "/etc/ivr/ivr.toml".to_string())], before[&("ivr-2".to_string(), "/etc/ivr/ivr.toml".to_string())]);
    assert_ne!(after[&("ivr-1".to_string(), "/etc/ivr/ivr.toml".to_string())], before[&("ivr-1".to_string(), "/etc/ivr/ivr.toml".to_string())]);
}

#[test]
fn an_unknown_host_key_is_refused_with_a_hint() {
    let lab = lab();
    let f = farm(&lab, WEB_A_TO_C);
    std::fs::write(&lab.known_hosts, "").unwrap();
    let out = lab.farmctl().args(["plan"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Host key verification failed"), "{err}");
    assert!(err.contains("never accepts a key by itself"), "{err}");
    assert_eq!(std::fs::read_to_string(&lab.known_hosts).unwrap(), "", "no key may be added");
}

#[test]
fn a_held_lock_refuses_the_apply_and_names_its_holder() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let ivr1 = lab.host("ivr-1");
    ivr1.write("/var/lib/farmctl/hosts/ivr-1/lock/owner", b"alice@ops-ws pid=4711 plan=abc since=2026-11-23T01:00:00Z\n");
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-1: refused, nothing written: another apply holds the lock (alice@ops-ws pid=4711"), "{err}");
    lab::assert_same(&lab.snapshot(), &before, "all or nothing: no host is switched");
    assert!(ivr1.state("lock/owner").exists(), "someone else's lock is never removed");
    assert!(!lab.host("ivr-3").state("lock").exists(), "our own locks are released");
}

#[test]
fn each_lab_host_has_its_own_hostname_and_files() {
    let lab = lab();
    let f = farm(&lab, "");
    let out = lab.farmctl().args(["plan", "--detailed-exitcode"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = std::process::Command::new("ssh")
        .args(["-F"]).arg(&lab.ssh_config)
        .args(["-i"]).arg(&lab.key)
        .arg("-o").arg(format!("UserKnownHostsFile={}", lab.known_hosts.display()))
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-p", &lab.port.to_string()])
        .arg(format!("root@{}", lab.host("ivr-4").address))
        .arg("hostname; cat /etc/ivr/ivr.toml | head -1")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ivr-4\n# IVR node ivr-4. Main web server was web-a; see the runbook.\n", "{}", stderr(&out));
}

/// The sockets of the SSH masters farmctl left for reuse, in this lab's control directory.
fn masters(lab: &lab::Lab) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(lab.control_dir.join("reuse"))
        .map(|d| d.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
        .unwrap_or_default()
}

#[test]
fn an_apply_right_after_a_plan_reuses_its_connections() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let out = lab.farmctl().args(["plan", "farm.toml", "-o", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after_plan = masters(&lab);
    assert_eq!(after_plan.len(), 9, "one master per host is left running for the next farmctl");
    let out = lab.farmctl().args(["apply", "plans/p.json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let after_apply = masters(&lab);
    // A fresh connection would have recorded a new socket for its host.
    assert_eq!(after_apply, after_plan, "every host the apply touched was reached over the plan's master");

    // With control_persist = "0s", nothing outlives the process.
    let farm_path = lab.dir.path().join("farm.toml");
    let text = std::fs::read_to_string(&farm_path).unwrap().replace("[ssh]\n", "[ssh]\ncontrol_persist = \"0s\"\n");
    std::fs::write(&farm_path, text).unwrap();
    let _ = std::fs::remove_dir_all(lab.control_dir.join("reuse"));
    let out = lab.farmctl().args(["plan", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(masters(&lab).is_empty());
}

// See issue 9: two farm hosts on one machine (a shared /var/lib) locked each other out.
#[test]
fn two_farm_hosts_on_one_machine_apply_replan_clean_and_roll_back() {
    let lab = lab();
    let ivr1 = lab.host("ivr-1");
    // ivr-1's machine also runs a web front end, managed as its own farm host.
    ivr1.write("/etc/ivr-web/web.toml", b"[server]\nname = \"ivr-1-web\"\nupstream = \"web-a\"\n");
    let extra = format!("[hosts.ivr-1-web]\naddress = \"{}\"\nrole = \"web\"\nallow_shared_address = true\n\n{WEB_A_TO_C}", ivr1.address);
    farm(&lab, &extra);
    let before = lab.snapshot();
    let web_before = ivr1.read("/etc/ivr-web/web.toml");

    // Another apply holds ivr-1-web's lock: this apply is refused there, and writes nothing anywhere.
    std::fs::create_dir_all(ivr1.path("/var/lib/farmctl/hosts/ivr-1-web/lock")).unwrap();
    ivr1.write("/var/lib/farmctl/hosts/ivr-1-web/lock/owner", b"alice@ops-ws pid=4711 plan=abc since=2026-11-23T01:00:00Z\n");
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ivr-1-web: refused, nothing written: another apply holds the lock (alice@ops-ws"), "{}", stderr(&out));
    lab::assert_same(&lab.snapshot(), &before, "the other apply's lock stops this one everywhere");
    assert_eq!(ivr1.read("/etc/ivr-web/web.toml"), web_before);
    std::fs::remove_dir_all(ivr1.path("/var/lib/farmctl/hosts/ivr-1-web/lock")).unwrap();

    // Alone, the apply goes through: the two farm hosts on ivr-1 do not lock each other out.
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let applied = stderr(&out);
    assert_eq!(String::from_utf8_lossy(&ivr1.read("/etc/ivr-web/web.toml")), "[server]\nname = \"ivr-1-web\"\nupstream = \"web-c\"\n");
    assert!(String::from_utf8_lossy(&ivr1.read("/etc/ivr/ivr.toml")).contains("primary = \"web-c\""));
    assert!(ivr1.state("backups").is_dir() && ivr1.path("/var/lib/farmctl/hosts/ivr-1-web/backups").is_dir(), "each farm host keeps its own backups");
    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "re-plans clean: {}{}", stdout(&out), stderr(&out));

    // The undo command the apply printed restores both farm hosts' files.
    let undo = applied.lines().find_map(|l| l.strip_prefix("To undo: farmctl rollback ")).unwrap_or_else(|| panic!("no undo command: {applied}"));
    let plan_id = undo.split_whitespace().next().unwrap();
    let out = lab.farmctl().args(["rollback", plan_id, "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    lab::assert_same(&lab.snapshot(), &before, "rollback restores every file of both farm hosts");
    assert_eq!(ivr1.read("/etc/ivr-web/web.toml"), web_before);
}

#[test]
fn an_imported_ansible_inventory_of_20_hosts_in_3_groups_validates_and_plans_against_the_hosts() {
    let names: Vec<String> = (1..=20).map(|i| format!("node-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let lab = lab::Lab::start(&refs);
    // Three groups, and the lab's SSH options in [all:vars], as an Ansible user has them.
    let vars = lab.ansible_inventory("unused", &[]);
    let vars = &vars[vars.find("[all:vars]").unwrap()..];
    let mut ini = String::new();
    for (group, hosts) in [("web", &names[..4]), ("ivr", &names[4..16]), ("asr", &names[16..])] {
        ini.push_str(&format!("[{group}]\n"));
        for h in hosts {
            ini.push_str(&format!("{h} ansible_host={}\n", lab.host(h).address));
        }
        ini.push('\n');
    }
    ini.push_str(vars);
    std::fs::write(lab.dir.path().join("inventory.ini"), &ini).unwrap();
    let out = lab.farmctl().args(["import", "ansible", "inventory.ini", "-o", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = lab.farmctl().args(["validate", "farm.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let farm = std::fs::read_to_string(lab.dir.path().join("farm.toml")).unwrap();
    assert_eq!(farm.matches("[hosts.").count(), 20, "{farm}");
    assert_eq!(farm.matches("role = \"ivr\"").count(), 12, "{farm}");
    let out = lab.farmctl().args(["plan", "farm.toml", "--detailed-exitcode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "every host was reached and read: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Plan: 0 hosts to change, 20 unchanged, 0 unreachable"), "{}", stdout(&out));
    // Importing again never overwrites the farm file.
    let again = lab.farmctl().args(["import", "ansible", "inventory.ini", "-o", "farm.toml"]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(lab.dir.path().join("farm.toml")).unwrap(), farm);
}

#[test]
fn a_host_behind_the_labs_delaying_relay_is_planned_and_applied_through_it() {
    // tests/lab/delay.py as ProxyCommand: 100 ms each way for ivr-1, as a far site would have.
    let lab = lab::Lab::start(&["web-a", "web-b", "ivr-1"]);
    let config = lab.delayed_ssh_config("ssh_config_delayed", &[("ivr-1", 100)]);
    lab.host("ivr-1")
        .write("/etc/ivr/ivr.conf", b"server web-a\n");
    for w in ["web-a", "web-b"] {
        lab.host(w).write("/etc/ivr-web/web.toml", b"name = \"x\"\n");
    }
    let farm = |cfg: &std::path::Path| {
        format!(
            "[farm]\nname = \"far\"\n\n{}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.conf\"]\n\n{}\n[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n",
            lab.ssh_section().replace(&lab.ssh_config.display().to_string(), &cfg.display().to_string()),
            lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" })
        )
    };
    lab.write_farm("near.toml", &farm(&lab.ssh_config));
    lab.write_farm("far.toml", &farm(&config));
    let timed = |file: &str| {
        let t = std::time::Instant::now();
        let out = lab.farmctl().args(["plan", file]).env("FARMCTL_CONTROL_DIR", lab.dir.path().join(format!("ctl-{file}"))).output().unwrap();
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        t.elapsed()
    };
    let near = timed("near.toml");
    let far = timed("far.toml");
    // An SSH handshake and a command take several round trips; each is at least 200 ms through the relay.
    assert!(far >= std::time::Duration::from_millis(800), "the relay delays: {far:?} (without it: {near:?})");
    let out = lab.farmctl().args(["apply", "far.toml", "--yes"]).env("FARMCTL_CONTROL_DIR", lab.dir.path().join("ctl-apply")).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lab.host("ivr-1").read("/etc/ivr/ivr.conf"), b"server web-b\n", "applied through the relay");
}
