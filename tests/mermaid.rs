//! The Mermaid picture in a markdown plan renders: the demo plan's diagram is
//! drawn by mermaid (npm, pinned in scripts/test.sh) in headless Chromium,
//! and the SVG names every stage and every rollout wave.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Text with the five XML/HTML specials escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[test]
fn the_demo_plans_mermaid_diagram_renders_in_headless_chromium_and_names_every_stage() {
    let js = std::env::var_os("MERMAID_JS").map(PathBuf::from).unwrap_or_else(|| repo().join("target/mermaid/package/dist/mermaid.min.js"));
    assert!(js.exists(), "{} is missing: run `bash scripts/test.sh`, which fetches it", js.display());
    let chromium = Command::new("chromium").arg("--version").output();
    assert!(chromium.is_ok_and(|o| o.status.success()), "chromium is missing: run `bash scripts/test.sh`, which installs it");

    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_farmctl"))
        .current_dir(repo())
        .env("FARMCTL_CACHE_DIR", d.path().join("cache"))
        .args(["plan", "inventories/demo.toml", "--format", "markdown"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = String::from_utf8(out.stdout).unwrap();
    let chart = md.split("```mermaid\n").nth(1).and_then(|rest| rest.split("\n```").next()).expect("a mermaid block");
    let page = d.path().join("page.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><html><head><title>waiting</title></head><body><pre class=\"mermaid\">{}</pre>\n<script src=\"file://{}\"></script>\n\
             <script>mermaid.initialize({{startOnLoad:false}}); mermaid.run().then(() => {{ document.title = 'rendered' }}).catch(e => {{ document.title = 'error: ' + e }});</script></body></html>",
            escape(chart),
            js.display()
        ),
    )
    .unwrap();
    let dom = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files", "--virtual-time-budget=20000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<title>rendered</title>"), "mermaid did not render the diagram: {}", dom.split("<title>").nth(1).unwrap_or(&dom).chars().take(400).collect::<String>());
    let svg = &dom[dom.find("<svg").expect("an SVG")..];
    // Every stage of the plan, by the title the markdown gives it.
    let plan: Vec<&str> = md.lines().filter_map(|l| l.strip_prefix("#### ")).collect();
    assert_eq!(plan.len(), 2, "the demo plan has two stages: {plan:?}");
    for title in &plan {
        assert!(svg.contains(&escape(title)) || svg.contains(*title), "the SVG names stage `{title}`");
    }
    for step in ["ready: web-b", "retire web-a", "canary: upgrade ivr-1", "wave 1 gate: 2 healthy samples", "wave 2: upgrade ivr-4..ivr-6"] {
        assert!(svg.contains(step), "the SVG shows `{step}`");
    }
}
