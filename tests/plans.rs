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
