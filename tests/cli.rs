//! farmctl through its binary, on the local transport: farm-file errors,
//! the demo farm, saved plans and confirmation. (Everything that crosses SSH
//! is tested against the lab farm in lab_ssh.rs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn farmctl(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_farmctl"));
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("FARMCTL_JOURNAL", dir.join("journal.jsonl"))
        .env("FARMCTL_CACHE_DIR", dir.join("cache"))
        .stdin(Stdio::null());
    c
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the demo farm in a temp dir, so tests may apply it.
fn demo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp").arg("-r").arg(repo().join("inventories")).arg(dir.path()).status().unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(dir.path().join("inventories/demo/ivr-1/var"));
    dir
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

#[test]
fn every_malformed_farm_file_is_located_and_exits_1() {
    let dir = repo().join("tests/malformed");
    let expected = std::fs::read_to_string(dir.join("EXPECTED")).unwrap();
    let mut seen = 0;
    for line in expected.lines() {
        let file = line.split(':').next().unwrap();
        let out = run(farmctl(&dir).args(["validate", file]));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        assert_eq!(err.lines().next().unwrap(), format!("error: {line}"), "{file}");
        let (_, rest) = line.split_once(".toml:").unwrap();
        let mut pos = rest.split(':');
        let (l, c): (usize, usize) = (pos.next().unwrap().parse().unwrap(), pos.next().unwrap().parse().unwrap());
        // The position is in the file, and the caret display quotes that very line
        // (see issue 25: this once re-checked only numbers read from EXPECTED itself).
        let bytes = std::fs::read(dir.join(file)).unwrap();
        if let Ok(source) = std::str::from_utf8(&bytes) {
            let src_line = source.lines().nth(l - 1).unwrap_or_else(|| panic!("{file}: line {l} is past the end of the file"));
            assert!(c >= 1 && c <= src_line.chars().count() + 1, "{file}: column {c} is outside line {l} ({src_line:?})");
            if !src_line.trim().is_empty() {
                assert_eq!(err.lines().nth(1), Some(format!("  | {src_line}").trim_end()), "{file}: the caret display quotes line {l}");
            }
        }
        seen += 1;
    }
    let files = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "toml")).count();
    assert_eq!(seen, files, "every malformed file has an expectation");
    assert!(seen >= 50);
}

#[test]
fn errors_show_the_source_line_with_a_caret() {
    let dir = repo().join("tests/malformed");
    let out = run(farmctl(&dir).args(["validate", "56-unknown-role.toml"]));
    assert_eq!(text(&out.stderr).lines().nth(1).unwrap(), "  | role = \"wbe\"");
    assert_eq!(text(&out.stderr).lines().nth(2).unwrap(), "  |        ^");
}

#[test]
fn the_demo_plan_shows_diffs_and_is_deterministic() {
    let d = demo();
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "--detailed-exitcode", "-o", "plans/a.json"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("    -primary = \"web-a\"\n") && stdout.contains("    +primary = \"web-b\"\n"), "{stdout}");
    assert!(stdout.ends_with("Plan: 6 hosts to change, 4 unchanged, 0 unreachable; 6 edits, 3 reloads, 6 upgrades.\n"), "{stdout}");
    assert!(stdout.contains("== Stage 2 of 2: when applied: rollout of ivr to 5.2.0"), "the demo shows a rollout: {stdout}");
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "-o", "plans/b.json"]));
    assert!(out.status.success());
    let (a, b) = (std::fs::read(d.path().join("plans/a.json")).unwrap(), std::fs::read(d.path().join("plans/b.json")).unwrap());
    assert_eq!(a, b, "the same farm and state give a byte-identical plan");
    let json = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "--format", "json"]));
    assert_eq!(json.stdout, a);
    let plan: serde_json::Value = serde_json::from_slice(&a).unwrap();
    assert!(!text(&a).contains("max_calls = 240\n"), "a plan holds diffs, not whole files");
    assert_eq!(plan["farm"]["path"], "inventories/demo.toml");
}

#[test]
fn the_text_plan_snapshot() {
    let d = demo();
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "--limit", "ivr-1,web-a"]));
    assert!(out.status.success());
    insta::with_settings!({filters => vec![(r"plan [0-9a-f]{16}", "plan [ID]")]}, {
        insta::assert_snapshot!(text(&out.stdout));
    });
}

#[test]
fn the_markdown_plan_snapshot() {
    let d = demo();
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "--limit", "ivr-4,ivr-1", "--format", "markdown"]));
    assert!(out.status.success());
    insta::with_settings!({filters => vec![(r"`[0-9a-f]{16}`", "`[ID]`")]}, {
        insta::assert_snapshot!(text(&out.stdout));
    });
}

#[test]
fn apply_without_a_terminal_needs_yes_and_writes_nothing() {
    let d = demo();
    let file = d.path().join("inventories/demo/ivr-1/etc/ivr/ivr.toml");
    let before = std::fs::read(&file).unwrap();
    let out = run(farmctl(d.path()).args(["apply", "inventories/demo.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("pass --yes"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let out = run(farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(&file).unwrap(), before);
    let journal = std::fs::read_to_string(d.path().join("journal.jsonl")).unwrap();
    assert_eq!(journal.matches("\"outcome\":\"written\"").count(), 6, "one journal line per written file");
    assert_eq!(journal.matches("\"outcome\":\"upgraded\"").count(), 6, "and one per upgrade, with both versions");
    assert_eq!(journal.matches("\"outcome\":\"upgrade-started\"").count(), 6, "each upgrade is journaled before the host is touched");
    assert_eq!(journal.matches("\"outcome\":\"gate-passed\"").count(), 6, "each host's gate verdict, with its metrics");
    assert!(journal.contains("error_rate=0"), "the health metrics are recorded: {journal}");
    assert_eq!(journal.lines().count(), 24);
    assert!(!journal.contains("max_calls") && !journal.contains("web-b"), "the journal holds hashes, never contents");
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "--detailed-exitcode"]));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn show_tells_ci_when_a_plan_no_longer_matches_its_farm_file() {
    let d = demo();
    assert!(run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "-o", "plans/p.json"])).status.success());
    let out = run(farmctl(d.path()).args(["show", "plans/p.json", "--format", "markdown"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("```diff"));
    let farm = d.path().join("inventories/demo.toml");
    let mut t = std::fs::read_to_string(&farm).unwrap();
    t.push_str("\n# a comment changes the farm file too\n");
    std::fs::write(&farm, t).unwrap();
    let out = run(farmctl(d.path()).args(["show", "plans/p.json"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the plan no longer matches its farm file"), "{}", text(&out.stderr));
    let out = run(farmctl(d.path()).args(["apply", "plans/p.json"]));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn limit_typos_are_errors_not_empty_runs() {
    let d = demo();
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "--limit", "ivr-9"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--limit `ivr-9` matches no host or role"));
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml", "--limit", "ivr_3"]));
    assert!(text(&out.stderr).contains("--limit `ivr_3` matches no host or role in the farm (did you mean `ivr-3`?)"), "{}", text(&out.stderr));
}

#[test]
fn a_missing_local_root_is_named() {
    let d = demo();
    std::fs::remove_dir_all(d.path().join("inventories/demo/ivr-5")).unwrap();
    let out = run(farmctl(d.path()).args(["plan", "inventories/demo.toml"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ivr-5: cannot connect to ivr-5: the local root"), "{err}");
    assert!(err.contains("--limit '!ivr-5'"), "{err}");
}

#[test]
fn completions_and_the_man_page_are_generated() {
    let d = tempfile::tempdir().unwrap();
    let out = run(farmctl(d.path()).args(["completions", "bash"]));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("_farmctl()") && text(&out.stdout).contains("rollback"));
    let out = run(farmctl(d.path()).args(["man"]));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(".TH farmctl 1"));
}

#[test]
fn the_schema_names_exactly_the_keys_the_parser_accepts() {
    let d = tempfile::tempdir().unwrap();
    let out = run(farmctl(d.path()).arg("schema"));
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |v: &serde_json::Value| v["properties"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let p = &schema["properties"];
    // The parser's own list of keys, as its unknown-field errors give it.
    let expected = std::fs::read_to_string(repo().join("tests/malformed/EXPECTED")).unwrap();
    let accepted = |file: &str| -> Vec<String> {
        let line = expected.lines().find(|l| l.starts_with(file)).unwrap();
        let mut k: Vec<String> = line.split("expected ").nth(1).unwrap().split('`').skip(1).step_by(2).map(String::from).collect();
        k.sort();
        k
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(keys(&schema)), accepted("59-unknown-top-level-key"));
    assert_eq!(sorted(keys(&p["farm"])), accepted("53-unknown-farm-key"));
    assert_eq!(sorted(keys(&p["ssh"])), accepted("58-unknown-ssh-key"));
    assert_eq!(sorted(keys(&p["roles"]["additionalProperties"])), accepted("57-unknown-role-key"));
    assert_eq!(sorted(keys(&p["hosts"]["additionalProperties"])), accepted("54-unknown-host-key"));
    assert_eq!(sorted(keys(&p["replace"]["items"])), accepted("55-unknown-replace-key"));
    assert_eq!(sorted(keys(&p["watch"])), accepted("87-unknown-watch-key"));
}

/// Runs `farmctl ARGS | head -1` through a real pipe; returns farmctl's exit status and stderr.
fn into_closed_pipe(dir: &Path, args: &str) -> (String, String) {
    let bin = env!("CARGO_BIN_EXE_farmctl");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("'{bin}' {args} 2>err.txt | head -1 >/dev/null; echo \"${{PIPESTATUS[0]}}\""))
        .current_dir(dir)
        .env("FARMCTL_JOURNAL", dir.join("journal.jsonl"))
        .output()
        .unwrap();
    (text(&out.stdout).trim().to_string(), std::fs::read_to_string(dir.join("err.txt")).unwrap_or_default())
}

// See issue 11: `farmctl journal | head -2` panicked with exit 101, and so did schema and completions.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let d = demo();
    let out = run(farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Enough journal lines that the pipe closes while farmctl still writes.
    let line = std::fs::read_to_string(d.path().join("journal.jsonl")).unwrap();
    std::fs::write(d.path().join("journal.jsonl"), line.repeat(5000)).unwrap();
    for args in ["journal", "schema", "completions bash", "man", "show plans/none.json"] {
        let (status, err) = into_closed_pipe(d.path(), args);
        assert!(!err.contains("panicked"), "{args}: {err}");
        assert_ne!(status, "101", "{args}: {err}");
    }
}

// See issue 11: a usage error exited 2, which CI reads as "changes pending".
#[test]
fn a_usage_error_does_not_exit_2() {
    let d = demo();
    let out = run(farmctl(d.path()).args(["plan", "--no-such-flag", "inventories/demo.toml", "--detailed-exitcode"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--no-such-flag"));
    let out = run(farmctl(d.path()).args(["--help"]));
    assert_eq!(out.status.code(), Some(0));
}

// See issue 11: there was no way back after `apply FARM`: the plan was never saved.
#[test]
fn apply_farm_prints_an_undo_command_that_restores_every_file() {
    let d = demo();
    let snapshot = |d: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        for host in std::fs::read_dir(d.join("inventories/demo")).unwrap() {
            let etc = host.unwrap().path().join("etc");
            for sub in std::fs::read_dir(&etc).unwrap() {
                for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                    let p = f.unwrap().path();
                    v.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        v.sort();
        v
    };
    let before = snapshot(d.path());
    let out = run(farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(snapshot(d.path()), before);
    let err = text(&out.stderr);
    // A person reads this: no internal action ids (`gate:web-b@0`) in it.
    for kind in ["edit:", "gate:", "retire:", "reload:", "upgrade:"] {
        assert!(!err.lines().any(|l| l.contains(kind) && l.contains('@')), "an internal id in the output: {err}");
    }
    assert!(err.contains("readiness check of web-b: passed") && err.contains("retire of web-a: nothing refers to it now"), "{err}");
    assert!(err.contains("stage 2/2: 6 host(s)"), "a rollout stage counts its hosts: {err}");
    let undo = err.lines().find_map(|l| l.strip_prefix("To undo: ")).unwrap_or_else(|| panic!("{err}"));
    let id = undo.strip_prefix("farmctl rollback ").unwrap().split_whitespace().next().unwrap();
    let version = |h: &str| std::fs::read_to_string(d.path().join(format!("inventories/demo/{h}/opt/ivr/VERSION"))).unwrap();
    assert_eq!(version("ivr-6"), "5.2.0\n", "the demo's rollout ran");
    let out = run(farmctl(d.path()).args(["rollback", id, "--yes"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(snapshot(d.path()), before, "the undo command restores every file");
    for h in ["ivr-1", "ivr-6"] {
        assert_eq!(version(h), "5.1.0\n", "and every version the plan changed, on {h}");
    }
    // The journal lists the applied plan.
    let out = run(farmctl(d.path()).args(["journal", "--plans"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(id), "{}", text(&out.stdout));
    // --json gives every entry with its hashes; --plan, --host and --since narrow it.
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = run(farmctl(d.path()).arg("journal").arg("--json").args(args));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let all = json(&[]);
    let writes: Vec<_> = all.iter().filter(|e| e["outcome"] == "written").collect();
    assert!(!writes.is_empty() && writes.iter().all(|e| e["after_sha256"].as_str().is_some_and(|h| h.len() == 64)), "{all:?}");
    let mine = json(&["--plan", id, "--host", "ivr-1"]);
    assert!(!mine.is_empty() && mine.iter().all(|e| e["plan"] == id && e["host"] == "ivr-1"), "{mine:?}");
    assert!(mine.len() < all.len());
    assert_eq!(json(&["--since", "2h"]).len(), all.len(), "everything happened in the last two hours");
    assert!(json(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let people = text(&run(farmctl(d.path()).args(["journal", "--host", "ivr-1"])).stdout);
    assert!(people.lines().any(|l| l.contains("  ivr-1 /etc/ivr/ivr.toml  written (plan ")), "{people}");
    assert!(people.lines().any(|l| l.contains("  ivr-1  upgraded 5.1.0 -> 5.2.0 (plan ")), "versions are said: {people}");
    assert!(!people.contains("..") && !people.contains(&writes[0]["after_sha256"].as_str().unwrap()[..12]), "no hashes for people: {people}");
}

// Issue 21: the journal's records became typed (a version tag, a kind, versions
// as versions). A journal written before that must still serve `journal` and
// `rollback`: here every line is put back into the old form first.
#[test]
fn a_journal_written_before_records_were_typed_still_serves_journal_and_rollback() {
    let d = demo();
    let version = |h: &str| std::fs::read_to_string(d.path().join(format!("inventories/demo/{h}/opt/ivr/VERSION"))).unwrap();
    let out = run(farmctl(d.path()).args(["apply", "inventories/demo.toml", "--yes"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let id = err.lines().find_map(|l| l.strip_prefix("To undo: farmctl rollback ")).unwrap().split_whitespace().next().unwrap().to_string();
    let journal = d.path().join("journal.jsonl");
    let old: Vec<String> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
            assert_eq!(v.remove("v"), Some(serde_json::json!(2)), "today's lines carry the version tag: {l}");
            let kind = v.remove("kind").unwrap();
            let (from, to) = (v.remove("from").unwrap_or_default(), v.remove("to").unwrap_or_default());
            let sentinel = match kind.as_str().unwrap() {
                "version" | "gate" => Some("(version)"),
                "shadow" => Some("(shadow)"),
                "service" => Some("(service)"),
                _ => None,
            };
            if let Some(s) = sentinel {
                v.insert("path".into(), s.into());
                v.insert("before_sha256".into(), if from.is_null() { "".into() } else { from });
                v.insert("after_sha256".into(), if to.is_null() { "".into() } else { to });
            }
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    assert!(old.iter().any(|l| l.contains(r#""path":"(version)""#)), "the demo's rollout journaled versions");
    std::fs::write(&journal, old.join("\n") + "\n").unwrap();
    let out = run(farmctl(d.path()).args(["journal", "--host", "ivr-1"]));
    let people = text(&out.stdout);
    assert!(out.status.success() && !text(&out.stderr).contains("skipped"), "{}", text(&out.stderr));
    assert!(people.lines().any(|l| l.contains("  ivr-1  upgraded 5.1.0 -> 5.2.0 (plan ")), "old version lines read as versions: {people}");
    assert!(people.lines().any(|l| l.contains("  ivr-1  gate-passed (plan ")), "{people}");
    let out = run(farmctl(d.path()).args(["rollback", &id, "--yes"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(version("ivr-1"), "5.1.0\n", "the rollback read the old journal's upgrades");
}

// An empty `journal` says why on stderr: no journal at that path yet, or no
// record that matches; `--json` stays empty for scripts.
#[test]
fn an_empty_journal_says_why() {
    let d = demo();
    let none = run(farmctl(d.path()).arg("journal"));
    assert_eq!(none.status.code(), Some(0));
    assert!(none.stdout.is_empty());
    let path = d.path().join("journal.jsonl");
    assert!(text(&none.stderr).contains(&format!("{}: no journal here yet", path.display())), "{}", text(&none.stderr));
    std::fs::write(&path, r#"{"time":"2026-11-30T10:00:00Z","plan":"p1","farm":"f","host":"web-a","path":"/etc/a","before_sha256":"aa","after_sha256":"bb","outcome":"written"}"#.to_string() + "\n").unwrap();
    let other = run(farmctl(d.path()).args(["journal", "--host", "web-b"]));
    assert!(other.stdout.is_empty() && text(&other.stderr).contains("no record matches"), "{}", text(&other.stderr));
    let json = run(farmctl(d.path()).args(["journal", "--json", "--host", "web-b"]));
    assert!(json.stdout.is_empty() && json.stderr.is_empty(), "{}", text(&json.stderr));
    let one = run(farmctl(d.path()).arg("journal"));
    assert!(text(&one.stdout).contains("web-a /etc/a") && one.stderr.is_empty(), "{}{}", text(&one.stdout), text(&one.stderr));
}

// `rollback` and `show` take a saved plan: a farm file given there is named
// as one, with the way to a plan, and nothing runs.
#[test]
fn a_farm_file_where_a_plan_belongs_is_named_as_one() {
    let d = demo();
    for cmd in ["rollback", "show"] {
        let o = run(farmctl(d.path()).args([cmd, "inventories/demo.toml", "--yes"].iter().filter(|a| cmd == "rollback" || **a != "--yes")));
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let err = text(&o.stderr);
        assert!(err.contains("inventories/demo.toml is a farm file, not a farmctl plan") && err.contains("farmctl plan FARM -o PLAN.json"), "{cmd}: {err}");
    }
    assert!(!d.path().join("journal.jsonl").exists(), "nothing was journaled");
}
