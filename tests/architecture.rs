//! docs/ARCHITECTURE.md's picture matches the code: every `crate::module`
//! use between top-level modules of `src/` is an arrow in the Mermaid
//! diagram, and every arrow is a use. Adding an import across layers without
//! drawing it (or the reverse) fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// (from, to) for each top-level module that names another as `crate::to` (or `farmctl::to` in main).
fn uses() -> BTreeSet<(String, String)> {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| m != "lib")
        .collect();
    let mut edges = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let from = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for prefix in ["crate::", "farmctl::"] {
            for (i, _) in text.match_indices(prefix) {
                let rest = &text[i + prefix.len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if modules.contains(&name) && name != from {
                    edges.insert((from.clone(), name));
                }
            }
        }
    }
    edges
}

/// The arrows of the Mermaid diagram, by node id.
fn drawn() -> BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(repo().join("docs/ARCHITECTURE.md")).unwrap();
    let start = doc.find("```mermaid").expect("a mermaid diagram");
    let body = &doc[start..doc[start + 3..].find("```").unwrap() + start + 3];
    let id = |s: &str| s.trim().split(['[', ' ']).next().unwrap().to_string();
    body.lines()
        .filter_map(|l| l.split_once("-->"))
        .map(|(a, b)| {
            let a = id(a);
            (if a == "main" { "main".to_string() } else { a }, id(b))
        })
        .collect()
}

#[test]
fn the_architecture_picture_matches_the_imports() {
    let (code, picture) = (uses(), drawn());
    let undrawn: Vec<_> = code.difference(&picture).collect();
    let unused: Vec<_> = picture.difference(&code).collect();
    assert!(undrawn.is_empty(), "uses missing from docs/ARCHITECTURE.md: {undrawn:?}");
    assert!(unused.is_empty(), "arrows in docs/ARCHITECTURE.md that the code does not have: {unused:?}");
    // The rules the picture states.
    for (from, to) in &code {
        assert!(!(["plan", "edit", "farm", "live", "render", "judge", "watch"].contains(&from.as_str()) && ["transport", "apply", "pipeline", "cmd"].contains(&to.as_str())), "a pure layer uses I/O: {from} -> {to}");
        assert!(!(from != "cmd" && from != "main" && to == "cmd"), "only main uses the commands: {from} -> {to}");
        assert!(!(from == "cmd" && ["transport", "apply"].contains(&to.as_str())), "a command reaches hosts and the executor only through the pipeline: {from} -> {to}");
    }
}

#[test]
fn no_command_imports_another_and_scripts_stay_in_transport() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(repo().join("src")).unwrap().to_string_lossy().into_owned();
        if rel.starts_with("cmd/") && rel != "cmd/mod.rs" {
            for other in ["apply", "graph", "journal", "meta", "plan", "rollback", "show", "switches", "validate", "watch"] {
                let me = rel.trim_start_matches("cmd/").trim_end_matches(".rs");
                if other != me {
                    assert!(!text.contains(&format!("cmd::{other}")) && !text.contains(&format!("super::{other}::")), "{rel} imports cmd::{other}");
                }
            }
        }
        if !rel.starts_with("transport/") {
            for word in ["parse_report", "script::", "starts_with(\"edit:", "split_once(\"\\nhint"] {
                assert!(!text.contains(word), "{rel} uses {word}");
            }
        }
        if !rel.contains("tests") {
            assert!(text.lines().count() <= 500, "{rel} has {} lines", text.lines().count());
        }
    }
}

/// The module path of a file under `src/` (`pipeline::watch`, `apply` for `apply/mod.rs`).
fn module_of(src: &Path, f: &Path) -> String {
    let rel = f.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

// Issue 21: three pairs of files imported each other (apply/rollout.rs and
// apply/shadow.rs; farm/check.rs and farm/rollout.rs, farm/services.rs;
// pipeline/watch.rs and failover.rs, lease.rs). No two modules may: a module
// names its parent or its children freely, never a sibling that names it back.
#[test]
fn no_two_modules_import_each_other() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeSet::new();
    for f in &files {
        let from = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        // Tests aside: a test module may use whatever it tests.
        let text = text.split("#[cfg(test)]").next().unwrap();
        let parent = |m: &str| m.rsplit_once("::").map_or(String::new(), |(p, _)| p.to_string());
        // `super` of `a::b` (a file `a/b.rs` or `a/b/mod.rs`) is `a`.
        let sup = parent(&from);
        for (prefix, base) in [("super::", sup.clone()), ("crate::", String::new())] {
            for (i, _) in text.match_indices(prefix) {
                let mut target = base.clone();
                let mut rest = &text[i + prefix.len()..];
                // The longest module path the reference names.
                let mut found = None;
                loop {
                    let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if name.is_empty() {
                        break;
                    }
                    target = if target.is_empty() { name.clone() } else { format!("{target}::{name}") };
                    if !modules.contains(&target) {
                        break;
                    }
                    found = Some(target.clone());
                    rest = &rest[name.len()..];
                    match rest.strip_prefix("::") {
                        Some(r) => rest = r,
                        None => break,
                    }
                }
                let Some(to) = found else { continue };
                let related = to == from || from.starts_with(&format!("{to}::")) || to.starts_with(&format!("{from}::"));
                if !related {
                    edges.insert((from.clone(), to));
                }
            }
        }
    }
    let both: Vec<_> = edges.iter().filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone()))).collect();
    assert!(both.is_empty(), "modules that import each other: {both:?}");
}

/// Each function of `src/` (tests aside) with its length in lines, from its
/// `fn` line to the closing brace at the same indentation.
fn function_lengths() -> Vec<(String, usize)> {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.split("#[cfg(test)]").next().unwrap().lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            let indent = line.len() - body.len();
            let after_vis = ["pub(crate) ", "pub(super) ", "pub "].iter().find_map(|v| body.strip_prefix(v)).unwrap_or(body);
            let after_async = after_vis.strip_prefix("async ").unwrap_or(after_vis);
            let Some(sig) = after_async.strip_prefix("fn ") else { continue };
            // A signature without a body (a trait's) ends in `;` before any `{`.
            let opens = lines[i..].iter().find(|l| l.contains('{') || l.trim_end().ends_with(';'));
            if !opens.is_some_and(|l| l.contains('{')) {
                continue;
            }
            let name: String = sig.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let closing = format!("{}}}", " ".repeat(indent));
            let Some(end) = lines[i..].iter().position(|l| l.trim_end() == closing) else { continue };
            let rel = f.strip_prefix(&src).unwrap().display().to_string();
            out.push((format!("{rel}::{name}"), end + 1));
        }
    }
    out
}

// Issue 21: long functions carry the weight (`farm::check` was 261 lines).
// No function may pass 120 lines; the ones still over it are listed with
// their length today, which may only shrink until they leave the list.
#[test]
fn no_function_grows_past_120_lines() {
    const BOUND: usize = 120;
    // Functions allowed past the bound, each with its ceiling: none now.
    let still_long: &[(&str, usize)] = &[];
    let lengths = function_lengths();
    let mut too_long = Vec::new();
    for (f, n) in lengths.iter().cloned() {
        match still_long.iter().find(|(name, _)| *name == f) {
            Some((_, ceiling)) if n <= *ceiling => {}
            Some((_, ceiling)) => too_long.push(format!("{f}: {n} lines, more than its ceiling of {ceiling}")),
            None if n > BOUND => too_long.push(format!("{f}: {n} lines")),
            None => {}
        }
    }
    assert!(too_long.is_empty(), "functions over {BOUND} lines: split them\n{}", too_long.join("\n"));
    // The list shrinks: a function split below the bound leaves it.
    for (name, _) in still_long {
        let n = lengths.iter().find(|(f, _)| f == name).map_or(0, |(_, n)| *n);
        assert!(n > BOUND, "{name} is {n} lines now: take it off the list");
    }
}
