use super::*;
use crate::farm::{self, sha256_hex};
use crate::live::{FileInfo, LiveHost};
use std::path::Path;

const FARM: &str = r#"
[farm]
name = "t"
[roles.web]
files = ["/etc/web.toml"]
[roles.ivr]
files = ["/etc/ivr.toml", "/etc/peers.conf"]
reload = "systemctl reload ivr"
[hosts.web-a]
address = "10.1.0.11"
role = "web"
aliases = ["web-a.east.example.com"]
[hosts.web-b]
address = "10.1.0.12"
role = "web"
[hosts.web-c]
address = "10.1.0.13"
role = "web"
aliases = ["web-c.east.example.com"]
[hosts.ivr-1]
address = "10.1.1.1"
role = "ivr"
[hosts.ivr-2]
address = "10.1.1.2"
role = "ivr"
"#;

fn file(content: &str) -> FileState {
    FileState::Present(FileInfo {
        content: content.as_bytes().to_vec(),
        sha256: sha256_hex(content.as_bytes()),
        mode: "644".into(),
        owner: "root".into(),
        group: "root".into(),
        replaceable: true,
    })
}

fn live(farm: &Farm, ivr: &[(&str, &str)]) -> LiveFarm {
    farm.hosts
        .iter()
        .map(|(name, h)| {
            let mut files = BTreeMap::new();
            for path in &farm.roles[&h.role].files {
                let content = if h.role == "ivr" {
                    ivr.iter().find(|(n, _)| n == name).map_or("", |(_, c)| c)
                } else {
                    "none"
                };
                let text = if path.ends_with(".toml") { format!("web = \"{content}\"\n") } else { format!("server {content}\n") };
                files.insert(path.clone(), file(&text));
            }
            (name.clone(), Ok(LiveHost { hostname: name.clone(), clock_offset_ms: Some(0), clock_uncertainty_ms: 0, files, armed: Vec::new(), version: None, addresses: Vec::new() }))
        })
        .collect()
}

fn farm_with(extra: &str) -> Farm {
    farm::parse(Path::new("t.toml"), &format!("{FARM}{extra}")).unwrap()
}

fn run(farm: &Farm, live: &LiveFarm) -> Plan {
    let scope: Vec<String> = farm.hosts.keys().cloned().collect();
    plan(farm, live, &scope, &[]).unwrap().plan
}

#[test]
fn edits_only_the_hosts_that_refer_to_old() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n");
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-b")]));
    let edited: Vec<_> = p.edits().map(|(a, e)| format!("{}:{}", a.host, e.path)).collect();
    assert_eq!(edited, vec!["ivr-1:/etc/ivr.toml", "ivr-1:/etc/peers.conf"]);
    assert_eq!(p.reloads(), 1);
    let ids: Vec<&str> = p.actions.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["gate:web-c@0", "edit:ivr-1:/etc/ivr.toml@0", "edit:ivr-1:/etc/peers.conf@0", "reload:ivr-1@0", "retire:web-a@0"]
    );
    let reload = &p.actions[3];
    assert_eq!(reload.depends_on, vec!["edit:ivr-1:/etc/ivr.toml@0", "edit:ivr-1:/etc/peers.conf@0"]);
    assert_eq!(p.actions[1].depends_on, vec!["gate:web-c@0"], "a client is repointed only after web-c is ready");
    assert_eq!(p.actions[4].depends_on, vec!["reload:ivr-1@0"], "web-a retires after its last client reloaded");
    assert!(p.actions.iter().all(|a| a.level == 0));
    let (_, e) = p.edits().next().unwrap();
    assert_eq!(e.reasons, vec!["replace web-a -> web-c ([[replace]] #1)"]);
    assert!(e.diff.contains("-web = \"web-a\"\n+web = \"web-c\"\n"), "{}", e.diff);
    assert_eq!(e.after_sha256, sha256_hex(b"web = \"web-c\"\n"));
    assert_eq!(p.count(|s| *s == HostStatus::Changed), 1);
}

#[test]
fn plans_are_deterministic() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n");
    let l = live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-a.east.example.com")]);
    let (a, b) = (run(&farm, &l).to_json(), run(&farm, &l).to_json());
    assert_eq!(a, b);
    let back: Plan = serde_json::from_str(&a).unwrap();
    assert_eq!(back.to_json(), a);
    assert!(a.contains("web-c.east.example.com"));
}

#[test]
fn a_swap_and_a_chain_apply_in_one_pass() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n[[replace]]\nold = \"web-b\"\nnew = \"web-a\"\n");
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a web-b"), ("ivr-2", "web-b")]));
    let diffs: Vec<_> = p.edits().filter(|(_, e)| e.path == "/etc/peers.conf").map(|(_, e)| e.diff.clone()).collect();
    assert!(diffs[0].contains("+server web-b web-a\n"), "{}", diffs[0]);
    assert!(diffs[1].contains("+server web-a\n"), "{}", diffs[1]);
}

#[test]
fn timed_replacements_become_chained_stages() {
    let farm = farm_with(
        "[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\nat = \"2030-01-01T02:00:00Z\"\n\
         [[replace]]\nold = \"web-b\"\nnew = \"web-c\"\nat = \"2030-01-02T02:00:00Z\"\n",
    );
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a")]));
    assert_eq!(p.stages.len(), 2);
    assert_eq!(p.stages[0].at.as_deref(), Some("2030-01-01T02:00:00Z"));
    let toml: Vec<_> = p.edits().filter(|(_, e)| e.path == "/etc/ivr.toml").collect();
    assert_eq!(toml.len(), 2);
    assert_eq!(toml[1].1.before_sha256, toml[0].1.after_sha256);
    assert_eq!(toml[1].0.depends_on, vec![toml[0].0.id.clone(), "gate:web-c@1".to_string()]);
}

#[test]
fn on_limits_a_replacement() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\non = [\"ivr-2\"]\n");
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-a")]));
    assert!(p.edits().all(|(a, _)| a.host == "ivr-2"));
    assert_eq!(p.edits().count(), 2);
}

#[test]
fn unreachable_and_missing_are_reported() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n");
    let mut l = live(&farm, &[("ivr-1", "web-a")]);
    l.insert("ivr-2".into(), Err(crate::live::ReadError { message: "connection refused".into(), hint: None }));
    if let Some(Ok(s)) = l.get_mut("ivr-1") {
        s.files.insert("/etc/peers.conf".into(), FileState::Missing);
    }
    let p = run(&farm, &l);
    assert_eq!(p.failed_hosts(), vec![("ivr-2", "connection refused")]);
    assert_eq!(p.notes, vec!["ivr-1:/etc/peers.conf does not exist; nothing to edit there"]);
}

#[test]
fn limit_selects_by_name_role_glob_and_exclusion() {
    let farm = farm_with("");
    let sel = |l: &[&str]| select(&farm, &l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(sel(&["ivr"]).unwrap(), vec!["ivr-1", "ivr-2"]);
    assert_eq!(sel(&["web-*", "!web-b"]).unwrap(), vec!["web-a", "web-c"]);
    assert_eq!(sel(&["!ivr"]).unwrap().len(), 3);
    assert!(sel(&["ivr-9"]).unwrap_err().contains("ivr-9"));
}

#[test]
fn a_new_host_that_changes_too_is_ready_one_level_before_its_clients() {
    // web-c itself refers to web-b, which is replaced by web-a at the same time as web-a by web-c... no:
    // here web-c's own file changes (asr-1 -> asr-2 style), so its clients wait for it.
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n[[replace]]\nold = \"web-b\"\nnew = \"web-a\"\n");
    let mut l = live(&farm, &[("ivr-1", "web-a")]);
    if let Some(Ok(s)) = l.get_mut("web-c") {
        s.files.insert("/etc/web.toml".into(), file("peer = \"web-b\"\n"));
    }
    let p = run(&farm, &l);
    let level = |id: &str| p.actions.iter().find(|a| a.id == id).map(|a| a.level).unwrap();
    assert_eq!(level("edit:web-c:/etc/web.toml@0"), 0);
    assert_eq!(level("gate:web-c@0"), 1);
    assert_eq!(level("edit:ivr-1:/etc/ivr.toml@0"), 1);
    assert_eq!(level("reload:ivr-1@0"), 1);
}

#[test]
fn hosts_that_must_each_be_ready_before_the_other_are_a_named_circle() {
    // web-a's file names web-c, which web-b replaces; web-b's file names ivr-2, which web-a replaces.
    // So web-a waits for web-b to be ready, and web-b for web-a.
    let farm = farm_with("[[replace]]\nold = \"web-c\"\nnew = \"web-b\"\n[[replace]]\nold = \"ivr-2\"\nnew = \"web-a\"\n");
    let mut l = live(&farm, &[]);
    for (h, peer) in [("web-a", "web-c"), ("web-b", "ivr-2")] {
        if let Some(Ok(s)) = l.get_mut(h) {
            s.files.insert("/etc/web.toml".into(), file(&format!("peer = \"{peer}\"\n")));
        }
    }
    let scope: Vec<String> = farm.hosts.keys().cloned().collect();
    let PlanError::Cycle(err) = plan(&farm, &l, &scope, &[]).unwrap_err() else { panic!("a cycle") };
    assert_eq!(
        err.members,
        vec!["edit of web-a:/etc/web.toml", "readiness check of web-a", "edit of web-b:/etc/web.toml", "readiness check of web-b", "edit of web-a:/etc/web.toml"]
    );
}

#[test]
fn a_host_that_is_its_own_new_name_does_not_wait_for_itself() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n");
    let mut l = live(&farm, &[("ivr-1", "web-a")]);
    if let Some(Ok(s)) = l.get_mut("web-c") {
        s.files.insert("/etc/web.toml".into(), file("peer = \"web-a\"\n"));
    }
    let p = run(&farm, &l);
    let edit = p.actions.iter().find(|a| a.id == "edit:web-c:/etc/web.toml@0").unwrap();
    assert!(edit.depends_on.is_empty());
    assert_eq!(p.actions.iter().find(|a| a.id == "gate:web-c@0").unwrap().depends_on, vec!["edit:web-c:/etc/web.toml@0"]);
}

#[test]
fn a_host_still_referred_to_is_not_retired() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\non = [\"ivr-1\"]\n");
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-a")]));
    assert!(p.edits().all(|(a, _)| a.host == "ivr-1"));
    assert!(!p.actions.iter().any(|a| a.id.starts_with("retire:")), "ivr-2 still uses web-a");
}

fn retires(p: &Plan) -> Vec<&str> {
    p.actions.iter().filter(|a| matches!(a.kind, ActionKind::Retire { .. })).map(|a| a.id.as_str()).collect()
}

// See issue 10: in a swap both old hosts were retired while clients still used them.
#[test]
fn a_swap_retires_neither_host() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n[[replace]]\nold = \"web-b\"\nnew = \"web-a\"\n");
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-b")]));
    assert_eq!(p.edits().count(), 4, "both clients are repointed");
    assert_eq!(retires(&p), Vec::<&str>::new());
}

#[test]
fn a_chain_retires_only_its_first_host() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n[[replace]]\nold = \"web-b\"\nnew = \"web-c\"\n");
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-b")]));
    assert_eq!(retires(&p), vec!["retire:web-a@0"], "web-b is now named by ivr-1");
}

#[test]
fn a_circle_retires_nothing() {
    let farm = farm_with(
        "[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n[[replace]]\nold = \"web-b\"\nnew = \"web-c\"\n[[replace]]\nold = \"web-c\"\nnew = \"web-a\"\n",
    );
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-b web-c")]));
    assert!(p.edits().count() >= 4);
    assert_eq!(retires(&p), Vec::<&str>::new());
}

#[test]
fn a_host_named_again_by_a_later_stage_is_not_retired_earlier() {
    let farm = farm_with(
        "[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\nat = \"2030-01-01T02:00:00Z\"\n\
         [[replace]]\nold = \"web-b\"\nnew = \"web-a\"\nat = \"2030-01-02T02:00:00Z\"\n",
    );
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a")]));
    assert_eq!(p.stages.len(), 2);
    assert_eq!(retires(&p), vec!["retire:web-b@1"], "web-a is named again after the second switch; web-b is not");
}

#[test]
fn a_plain_replacement_still_retires_its_old_host() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n");
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-a.east.example.com")]));
    assert_eq!(retires(&p), vec!["retire:web-a@0"]);
    // A file that still names the old address keeps it.
    let p = run(&farm, &live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "10.1.0.11")]));
    assert_eq!(p.edits().filter(|(a, _)| a.host == "ivr-2").count(), 2, "the address is replaced too");
    assert_eq!(retires(&p), vec!["retire:web-a@0"]);
}

/// A farm whose service `web` keeps `web` in the ivr hosts' hosts file.
fn hosts_service(extra: &str) -> Farm {
    farm_with(&format!("[services.web]\nvirtual = \"web\"\nmembers = [\"web-a\", \"web-b\"]\nstrategy = \"hosts\"\nclients = [\"ivr\"]\nhosts_file = \"/etc/ivr/hosts\"\n{extra}"))
}

fn with_file(mut live: LiveFarm, host: &str, path: &str, content: &str) -> LiveFarm {
    if let Some(Ok(s)) = live.get_mut(host) {
        s.files.insert(path.into(), file(content));
    }
    live
}

#[test]
fn a_hosts_service_points_every_client_at_the_member_most_of_them_name() {
    let farm = hosts_service("");
    let mut l = live(&farm, &[]);
    l = with_file(l, "ivr-1", "/etc/ivr/hosts", "127.0.0.1 localhost\n10.1.0.12\tweb\t# farmctl service web\n");
    l = with_file(l, "ivr-2", "/etc/ivr/hosts", "127.0.0.1 localhost\n");
    let (active, named_by) = services::active(&farm, &l, &farm.services["web"]);
    assert_eq!((active.as_deref(), named_by), (Some("web-b"), vec!["ivr-1".to_string()]), "the clients' hosts files say web-b is active");
    let p = run(&farm, &l);
    let edited: Vec<_> = p.edits().map(|(a, e)| format!("{}:{}", a.host, e.path)).collect();
    assert_eq!(edited, vec!["ivr-2:/etc/ivr/hosts"], "only the client without the line changes; web hosts are not clients");
    let (_, e) = p.edits().next().unwrap();
    assert!(e.diff.contains("+10.1.0.12\tweb\t# farmctl service web"), "{}", e.diff);
    assert!(e.reasons[0].contains("web -> web-b (10.1.0.12)"), "{:?}", e.reasons);
    assert!(p.notes.iter().any(|n| n.starts_with("service web: web-b is active")), "{:?}", p.notes);
}

#[test]
fn a_pinned_member_repoints_every_hosts_client_and_nothing_else() {
    let mut farm = hosts_service("");
    let mut l = live(&farm, &[("ivr-1", "web-a")]);
    for h in ["ivr-1", "ivr-2"] {
        l = with_file(l, h, "/etc/ivr/hosts", "10.1.0.11\tweb\t# farmctl service web\n");
    }
    assert!(!run(&farm, &l).has_changes(), "clients whose line already points at the active member plan clean");
    farm.services.get_mut("web").unwrap().pin = Some("web-b".into());
    let p = run(&farm, &l);
    let edited: Vec<_> = p.edits().map(|(a, e)| format!("{}:{}", a.host, e.path)).collect();
    assert_eq!(edited, vec!["ivr-1:/etc/ivr/hosts", "ivr-2:/etc/ivr/hosts"], "the clients' own config naming web-a is left alone");
    assert!(p.stages.len() == 1 && p.stages[0].at.is_none(), "a failover switches now");
}

#[test]
fn an_adopted_server_gets_its_new_host_name_and_its_clients_keep_the_old_one() {
    let farm = farm::parse(
        Path::new("t.toml"),
        &FARM.replace("[hosts.web-a]", "[hosts.web-a1]").replace("[hosts.ivr-1]", "[services.web-a]\nvirtual = \"web-a\"\nadopt = \"web-a\"\nmembers = [\"web-a1\", \"web-b\"]\nclients = [\"ivr\"]\nhostname_file = \"/etc/ivr/hostname\"\n[hosts.ivr-1]"),
    )
    .unwrap();
    let svc = &farm.services["web-a"];
    assert_eq!(svc.strategy, farm::Strategy::Hosts, "adopting implies the hosts strategy");
    assert!(farm.paths_of("web-a1").contains(&"/etc/ivr/hostname".to_string()));
    let mut l = live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-a")]);
    l = with_file(l, "web-a1", "/etc/ivr/hostname", "web-a\n");
    for h in ["ivr-1", "ivr-2"] {
        l = with_file(l, h, "/etc/hosts", "127.0.0.1 localhost\n10.1.0.11 web-a\n");
    }
    let p = run(&farm, &l);
    let edited: Vec<_> = p.edits().map(|(a, e)| format!("{}:{}", a.host, e.path)).collect();
    assert_eq!(edited, vec!["ivr-1:/etc/hosts", "ivr-2:/etc/hosts", "web-a1:/etc/ivr/hostname"], "the clients' config files are not touched");
    let rename = p.actions.iter().find(|a| a.host == "web-a1" && matches!(a.kind, ActionKind::Reload { .. })).expect("a rename command");
    assert!(matches!(&rename.kind, ActionKind::Reload { command } if command == "hostname 'web-a1'"), "{:?}", rename.kind);
    let (_, e) = p.edits().find(|(a, _)| a.host == "ivr-1").unwrap();
    assert!(e.diff.contains("-10.1.0.11 web-a\n+10.1.0.11\tweb-a\t# farmctl service web-a"), "{}", e.diff);
}

#[test]
fn a_service_whose_virtual_name_is_a_host_is_refused_with_how_to_adopt() {
    let e = farm::parse(Path::new("t.toml"), &format!("{FARM}[services.web]\nvirtual = \"web-a\"\nmembers = [\"web-b\", \"web-c\"]\n")).unwrap_err();
    assert!(e.to_string().contains("a virtual name must not be a host's name; to keep a server's name for its clients, rename the host and set `adopt`"), "{e}");
    let e = farm::parse(Path::new("t.toml"), &format!("{FARM}[services.web]\nvirtual = \"web\"\nmembers = [\"web-b\", \"web-c\"]\nstrategy = \"rewrite\"\nadopt = \"web\"\n")).unwrap_err();
    assert!(e.to_string().contains("needs strategy \"hosts\""), "{e}");
}

#[test]
fn a_replacement_leaves_skipped_files_and_lines_alone_and_says_so() {
    let with_retire = FARM.replace("files = [\"/etc/web.toml\"]", "files = [\"/etc/web.toml\"]\nretire = \"true\"");
    let replace = "[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n";
    let farm = farm::parse(Path::new("t.toml"), &format!("{with_retire}{replace}skip = {{ paths = [\"/etc/peers.*\"], lines = [\"# history:*\", \"*legacy*\"] }}\n")).unwrap();
    let mut l = live(&farm, &[("ivr-1", "web-a")]);
    if let Some(Ok(s)) = l.get_mut("ivr-1") {
        s.files.insert("/etc/ivr.toml".into(), file("# history: web-a was first\nweb = \"web-a\"\nold = \"web-a\" # legacy\n"));
    }
    let planned = plan(&farm, &l, &farm.hosts.keys().cloned().collect::<Vec<_>>(), &[]).unwrap();
    let edited: Vec<_> = planned.plan.edits().map(|(a, e)| format!("{}:{}", a.host, e.path)).collect();
    assert_eq!(edited, vec!["ivr-1:/etc/ivr.toml"], "peers.conf is skipped by path");
    let (a, _) = planned.plan.edits().next().unwrap();
    assert_eq!(String::from_utf8(planned.contents[&a.id].clone()).unwrap(), "# history: web-a was first\nweb = \"web-c\"\nold = \"web-a\" # legacy\n", "skipped lines keep their names");
    assert!(planned.plan.notes.iter().any(|n| n == "replace web-a -> web-c ([[replace]] #1) leaves alone: files /etc/peers.*; lines matching `# history:*`, `*legacy*`"), "{:?}", planned.plan.notes);
    assert!(planned.plan.actions.iter().all(|a| !matches!(a.kind, ActionKind::Retire { .. })), "a skipped line still names web-a, so it is not retired");
    // The same farm without skips retires web-a: the assertion above is about the skips.
    let plain = farm::parse(Path::new("t.toml"), &format!("{with_retire}{replace}")).unwrap();
    let p = plan(&plain, &l, &plain.hosts.keys().cloned().collect::<Vec<_>>(), &[]).unwrap().plan;
    assert!(p.actions.iter().any(|a| matches!(a.kind, ActionKind::Retire { .. }) && a.host == "web-a"));
}

// See issue 24: a user that may not write was found at the stage; it is
// found at the read now, for the files the plan would edit, and only those.
#[test]
fn a_file_to_edit_that_this_user_may_not_replace_stops_its_host_at_plan_time() {
    let farm = farm_with("[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n");
    let mut l = live(&farm, &[("ivr-1", "web-a"), ("ivr-2", "web-b")]);
    for h in ["ivr-1", "ivr-2"] {
        if let Some(Ok(host)) = l.get_mut(h) {
            if let Some(FileState::Present(i)) = host.files.get_mut("/etc/peers.conf") {
                i.replaceable = false;
            }
        }
    }
    let p = run(&farm, &l);
    let failed = p.failed_hosts();
    assert_eq!(failed.len(), 1, "only ivr-1 has an edit there: {failed:?}");
    assert_eq!(failed[0].0, "ivr-1");
    assert!(failed[0].1.contains("/etc/peers.conf: this user may not replace it"), "{}", failed[0].1);
    assert!(p.edits().all(|(a, _)| a.host != "ivr-1"), "nothing is planned for a host that cannot be written");
}

#[test]
fn a_host_whose_probe_fails_is_upgraded_with_a_note_that_it_has_no_rollback() {
    let farm = farm_with("[rollout.ivr]\nversion = \"2.0\"\nprobe = \"cat /opt/v\"\nupgrade = \"install {version}\"\nhealth = \"true\"\n");
    let mut l = live(&farm, &[]);
    for (name, v) in [("ivr-1", Err("the probe failed (exit 1)".to_string())), ("ivr-2", Ok("1.0".to_string()))] {
        if let Some(Ok(h)) = l.get_mut(name) {
            h.version = Some(v);
        }
    }
    let p = run(&farm, &l);
    let upgrade = |host: &str| p.actions.iter().find_map(|a| match &a.kind {
        ActionKind::Upgrade { from, rollback, .. } if a.host == host => Some((from.clone(), rollback.is_some())),
        _ => None,
    });
    assert_eq!(upgrade("ivr-1"), Some(("unknown".to_string(), false)));
    assert_eq!(upgrade("ivr-2"), Some(("1.0".to_string(), true)));
    let notes: Vec<&String> = p.notes.iter().filter(|n| n.contains("did not tell its version")).collect();
    assert_eq!(notes.len(), 1, "{:?}", p.notes);
    assert!(notes[0].starts_with("ivr-1: the probe `cat /opt/v`") && notes[0].contains("exit 1"), "{}", notes[0]);
}
