//! The committed plans under `plans/` are what farmctl makes of the demo farm
//! now: regenerated from a clean copy of `inventories/`, byte for byte. When
//! the farm file or the planner changes, this fails and prints what moved;
//! regenerate with the commands in `plans/README.md`.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_demo_plans_are_what_farmctl_makes_now() {
    let d = tempfile::tempdir().unwrap();
    assert!(Command::new("cp").arg("-r").arg(repo().join("inventories")).arg(d.path()).status().unwrap().success());
    for host in std::fs::read_dir(d.path().join("inventories/demo")).unwrap() {
        let _ = std::fs::remove_dir_all(host.unwrap().path().join("var"));
    }
    std::fs::create_dir(d.path().join("plans")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .current_dir(d.path())
        .env("FARMCTL_CACHE_DIR", d.path().join("cache"))
        .args(["plan", "inventories/demo.toml", "-o", "plans/demo.json", "--format", "markdown"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(d.path().join("plans/demo.md"), &out.stdout).unwrap();
    let mut stale = Vec::new();
    for name in ["demo.json", "demo.md"] {
        let committed = std::fs::read_to_string(repo().join("plans").join(name)).unwrap_or_default();
        let now = std::fs::read_to_string(d.path().join("plans").join(name)).unwrap();
        if committed != now {
            let diff = similar::TextDiff::from_lines(&committed, &now).unified_diff().header(&format!("plans/{name} (committed)"), &format!("plans/{name} (made now)")).to_string();
            stale.push(diff);
        }
    }
    assert!(stale.is_empty(), "the committed plans are stale; what moved:\n{}", stale.join("\n"));
}

/// Checks `v` against the parts of JSON Schema that `farmctl schema --plan`
/// uses: type, const, enum, properties, required, additionalProperties,
/// items and oneOf. Returns what does not hold, with where.
fn violations(v: &serde_json::Value, s: &serde_json::Value, at: &str) -> Vec<String> {
    use serde_json::Value;
    let mut out = Vec::new();
    if let Some(c) = s.get("const") {
        if v != c {
            out.push(format!("{at}: expected {c}, found {v}"));
        }
    }
    if let Some(Value::Array(e)) = s.get("enum") {
        if !e.contains(v) {
            out.push(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    let type_ok = match s.get("type").and_then(Value::as_str) {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some("number") => v.is_number(),
        _ => true,
    };
    if !type_ok {
        out.push(format!("{at}: expected {}, found {v}", s["type"]));
    }
    if let (Some(o), Some(props)) = (v.as_object(), s.get("properties").and_then(Value::as_object)) {
        for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                out.push(format!("{at}: missing {r}"));
            }
        }
        for (k, x) in o {
            match props.get(k) {
                Some(ps) => out.extend(violations(x, ps, &format!("{at}.{k}"))),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => out.push(format!("{at}: {k} is not in the schema")),
                None => {}
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), s.get("items")) {
        for (i, x) in a.iter().enumerate() {
            out.extend(violations(x, items, &format!("{at}[{i}]")));
        }
    }
    if let Some(Value::Array(one)) = s.get("oneOf") {
        let fits = one.iter().filter(|o| violations(v, o, at).is_empty()).count();
        if fits != 1 {
            out.push(format!("{at}: fits {fits} of the oneOf alternatives, not exactly one"));
        }
    }
    out
}

#[test]
fn the_committed_demo_plan_fits_the_plan_schema_and_an_edited_one_does_not() {
    let out = Command::new(env!("CARGO_BIN_EXE_farmctl")).args(["schema", "--plan"]).output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo().join("plans/demo.json")).unwrap()).unwrap();
    assert!(plan["actions"].as_array().is_some_and(|a| a.len() > 5), "the demo plan has actions to check");
    assert_eq!(violations(&plan, &schema, "plan"), Vec::<String>::new());
    // The checker is not blind: a renamed field, a wrong kind and a missing field are each caught.
    let mut bad = plan.clone();
    bad["actions"][0]["hosst"] = bad["actions"][0]["host"].take();
    bad["actions"][1]["kind"] = "teleport".into();
    bad.as_object_mut().unwrap().remove("notes");
    let found = violations(&bad, &schema, "plan");
    assert_eq!(found.len(), 3, "{found:#?}");
}
