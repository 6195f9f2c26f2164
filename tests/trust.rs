//! A saved plan is verified, never trusted (issue 10): a corpus of tampered
//! plans, each refused before any host is touched; local hosts confined to
//! their roots; farms that could be read two ways refused. All on the local
//! transport: the checks run on this workstation before anything reaches a
//! host. (SSH hosts get the same verification: it runs before connecting.)

use farmctl::plan::Plan;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn farmctl(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_farmctl"));
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("FARMCTL_JOURNAL", dir.join("state/journal.jsonl"))
        .env("FARMCTL_CACHE_DIR", dir.join("cache"))
        .stdin(Stdio::null());
    c
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn demo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(Command::new("cp").arg("-r").arg(repo.join("inventories")).arg(dir.path()).status().unwrap().success());
    let _ = std::fs::remove_dir_all(dir.path().join("inventories/demo/ivr-1/var"));
    dir
}

/// Every file under `dir` with its bytes (symlinks as their targets).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(p.clone(), std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes());
            } else if meta.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Serializes a tampered plan as farmctl would, with its id recomputed: the
/// careful forger, whom only re-deriving the plan can catch.
fn forged(v: &Value) -> String {
    let mut plan: Plan = serde_json::from_value(v.clone()).expect("the tampered plan still parses");
    plan.id = plan.digest();
    plan.to_json()
}

fn first(v: &mut Value, kind: &str) -> usize {
    v["actions"].as_array().unwrap().iter().position(|a| a["kind"] == kind).unwrap()
}

type Tamper = fn(&mut Value);

/// The corpus: what a careless or hostile colleague might edit in a plan file.
fn corpus() -> Vec<(&'static str, Tamper)> {
    vec![
        ("edited diff", |v| {
            let i = first(v, "edit");
            v["actions"][i]["diff"] = json!("--- harmless\n+++ harmless\n");
        }),
        ("edited reload command", |v| {
            let i = first(v, "reload");
            v["actions"][i]["command"] = json!("touch /tmp/farmctl-tampered-reload");
        }),
        ("edited gate command", |v| {
            let i = first(v, "gate");
            v["actions"][i]["command"] = json!("true");
        }),
        ("edited retire command", |v| {
            let i = first(v, "retire");
            v["actions"][i]["command"] = json!("rm -rf /");
        }),
        ("retire removed", |v| {
            let i = first(v, "retire");
            v["actions"].as_array_mut().unwrap().remove(i);
            for s in v["stages"].as_array_mut().unwrap() {
                s["actions"].as_array_mut().unwrap().retain(|a| !a.as_str().unwrap().starts_with("retire:"));
            }
        }),
        ("gate removed", |v| {
            let i = first(v, "gate");
            v["actions"].as_array_mut().unwrap().remove(i);
        }),
        ("edit removed", |v| {
            let i = first(v, "edit");
            v["actions"].as_array_mut().unwrap().remove(i);
        }),
        ("stage emptied", |v| {
            v["stages"] = json!([]);
        }),
        ("stage given a time", |v| {
            v["stages"][0]["at"] = json!("2099-01-01T00:00:00Z");
        }),
        ("level changed", |v| {
            let i = first(v, "edit");
            v["actions"][i]["level"] = json!(3);
        }),
        ("before hash changed", |v| {
            let i = first(v, "edit");
            v["actions"][i]["before_sha256"] = json!("0".repeat(64));
        }),
        ("after hash changed", |v| {
            let i = first(v, "edit");
            v["actions"][i]["after_sha256"] = json!("f".repeat(64));
        }),
        ("size changed", |v| {
            let i = first(v, "edit");
            v["actions"][i]["after_size"] = json!(1);
        }),
        ("host changed", |v| {
            let i = first(v, "edit");
            v["actions"][i]["host"] = json!("asr-1");
        }),
        ("path changed", |v| {
            let i = first(v, "edit");
            v["actions"][i]["path"] = json!("/etc/ivr/evil.conf");
        }),
        ("dependency dropped", |v| {
            let i = first(v, "edit");
            v["actions"][i]["depends_on"] = json!([]);
        }),
        ("limit widened", |v| {
            v["limit"] = json!(["ivr-1"]);
        }),
        ("host list edited", |v| {
            v["hosts"].as_array_mut().unwrap().pop();
        }),
        ("edited upgrade command", |v| {
            let i = first(v, "upgrade");
            v["actions"][i]["command"] = json!("touch /tmp/farmctl-tampered-reload");
        }),
        ("wave gate weakened", |v| {
            let i = first(v, "wave_gate");
            v["actions"][i]["samples"] = json!(1);
            v["actions"][i]["max_unavailable"] = json!(6);
        }),
        ("notes edited", |v| {
            v["notes"] = json!(["nothing to see here"]);
        }),
    ]
}

fn refused(out: &Output, why: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{why}: {err}");
    assert!(err.contains("refusing"), "{why}: {err}");
    assert!(!err.contains("panicked"), "{why}: {err}");
}

#[test]
fn every_tampered_plan_is_refused_and_nothing_is_written() {
    let d = demo();
    let out = farmctl(d.path()).args(["plan", "inventories/demo.toml", "-o", "plans/demo.json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let original = std::fs::read_to_string(d.path().join("plans/demo.json")).unwrap();
    let value: Value = serde_json::from_str(&original).unwrap();
    let before = tree(&d.path().join("inventories"));
    let cases = corpus();
    assert!(cases.len() >= 15);
    for (name, tamper) in &cases {
        let mut v = value.clone();
        tamper(&mut v);
        // As edited by hand: the id no longer matches the content.
        let by_hand = serde_json::to_string_pretty(&v).unwrap() + "\n";
        assert_ne!(by_hand, original, "{name}: the tamper changed something");
        std::fs::write(d.path().join("plans/t.json"), &by_hand).unwrap();
        let out = farmctl(d.path()).args(["apply", "plans/t.json"]).output().unwrap();
        refused(&out, name);
        assert!(text(&out.stderr).contains("was edited"), "{name}: {}", text(&out.stderr));
        let shown = farmctl(d.path()).args(["show", "plans/t.json"]).output().unwrap();
        assert_eq!(shown.status.code(), Some(1), "{name}: show refuses an edited plan");
        // Forged with a recomputed id: caught by deriving the plan again.
        std::fs::write(d.path().join("plans/t.json"), forged(&v)).unwrap();
        let out = farmctl(d.path()).args(["apply", "plans/t.json"]).output().unwrap();
        refused(&out, name);
        assert!(text(&out.stderr).contains("differs from what the farm file and the hosts give"), "{name}: {}", text(&out.stderr));
        assert_eq!(tree(&d.path().join("inventories")), before, "{name}: nothing was written on any host");
        assert!(!Path::new("/tmp/farmctl-tampered-reload").exists(), "{name}");
    }
    // The untouched plan still applies: the refusals above were about the edits.
    let out = farmctl(d.path()).args(["apply", "plans/demo.json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(tree(&d.path().join("inventories")), before);
}

#[test]
fn a_truncated_plan_an_id_that_is_a_path_and_a_plan_of_another_farm_are_refused() {
    let d = demo();
    let out = farmctl(d.path()).args(["plan", "inventories/demo.toml", "-o", "plans/demo.json"]).output().unwrap();
    assert!(out.status.success());
    let original = std::fs::read_to_string(d.path().join("plans/demo.json")).unwrap();
    let before = tree(&d.path().join("inventories"));
    let cases: Vec<(&str, String)> = vec![
        ("truncated", original[..original.len() / 2].to_string()),
        ("reformatted", serde_json::to_string(&serde_json::from_str::<Value>(&original).unwrap()).unwrap()),
        ("extra field", original.replacen("\"limit\"", "\"approved_by\": \"ceo\",\n  \"limit\"", 1)),
        ("id is a path", {
            let mut v: Value = serde_json::from_str(&original).unwrap();
            v["id"] = json!("../../../../tmp/x");
            serde_json::to_string_pretty(&v).unwrap() + "\n"
        }),
    ];
    for (name, body) in cases {
        std::fs::write(d.path().join("plans/t.json"), body).unwrap();
        let out = farmctl(d.path()).args(["apply", "plans/t.json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("panicked"));
    }
    // From another farm: the same plan pointed at a different farm file.
    std::fs::write(d.path().join("inventories/other.toml"), std::fs::read_to_string(d.path().join("inventories/demo.toml")).unwrap().replace("name = \"demo\"", "name = \"other\"")).unwrap();
    let mut v: Value = serde_json::from_str(&original).unwrap();
    v["farm"]["path"] = json!("inventories/other.toml");
    std::fs::write(d.path().join("plans/t.json"), forged(&v)).unwrap();
    let out = farmctl(d.path()).args(["apply", "plans/t.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no longer matches its farm file"), "{}", text(&out.stderr));
    assert_eq!(tree(&d.path().join("inventories")).len(), before.len() + 1, "only other.toml was added");
    assert!(!Path::new("/tmp/x").exists() || !Path::new("/tmp/x").is_dir());
}

#[test]
fn a_symlink_out_of_a_local_root_is_neither_read_nor_written() {
    let d = demo();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("ivr.toml");
    // Looks like a client of web-a, so the plan would edit it.
    let inside = d.path().join("inventories/demo/ivr-1/etc/ivr/ivr.toml");
    std::fs::copy(&inside, &secret).unwrap();
    std::fs::remove_file(&inside).unwrap();
    std::os::unix::fs::symlink(&secret, &inside).unwrap();
    let before = tree(outside.path());
    let out = farmctl(d.path()).args(["plan", "inventories/demo.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("leads outside the host's root"), "{}", text(&out.stderr));
    let out = farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(tree(outside.path()), before, "nothing outside the root was written");
}

#[test]
fn a_state_directory_that_leads_out_of_a_local_root_is_refused() {
    let d = demo();
    let outside = tempfile::tempdir().unwrap();
    let var = d.path().join("inventories/demo/ivr-2/var/lib");
    std::fs::create_dir_all(&var).unwrap();
    std::os::unix::fs::symlink(outside.path(), var.join("farmctl")).unwrap();
    let out = farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("ivr-2") && text(&out.stderr).contains("outside"), "{}", text(&out.stderr));
    assert!(tree(outside.path()).is_empty(), "no lock, backup or staged file outside the root");
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "not even a directory");
}

#[test]
fn two_names_for_one_machine_need_allow_shared_address_and_then_warn() {
    let dir = tempfile::tempdir().unwrap();
    let farm = "[farm]\nname = \"f\"\n[roles.web]\nfiles = [\"/etc/web.toml\"]\n\
                [hosts.mail]\naddress = \"10.0.0.5\"\nrole = \"web\"\n\
                [hosts.mail-old]\naddress = \"10.0.0.5\"\nrole = \"web\"\n";
    std::fs::write(dir.path().join("f.toml"), farm).unwrap();
    let out = farmctl(dir.path()).args(["validate", "f.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("f.toml:9:11: host `mail-old` has the same address and port as host `mail`"), "{}", text(&out.stderr));
    std::fs::write(dir.path().join("f.toml"), farm.replace("[hosts.mail-old]\n", "[hosts.mail-old]\nallow_shared_address = true\n")).unwrap();
    let out = farmctl(dir.path()).args(["validate", "f.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: hosts `mail` and `mail-old` share the address 10.0.0.5"), "{}", text(&out.stderr));
}
