//! Plan review at scale and the CLI around it (issue 15), through the binary
//! on the local transport: markdown that fits a pull request comment,
//! colour control, help, man pages and the graph.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn farmctl(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_farmctl"));
    c.current_dir(dir).env_remove("NO_COLOR").env("FARMCTL_JOURNAL", dir.join("journal.jsonl")).env("FARMCTL_CACHE_DIR", dir.join("cache")).stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A farm of `n` local IVR hosts that name web-a, and web-a and web-b.
/// `distinct`: each host's file differs next to the name, so no two diffs are alike.
fn big_farm(dir: &Path, n: usize, distinct: bool) {
    let mut farm = String::from("[farm]\nname = \"big\"\n\n[roles.web]\nfiles = [\"/etc/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr.conf\"]\n\n[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n\n");
    for w in ["web-a", "web-b"] {
        farm.push_str(&format!("[hosts.{w}]\nrole = \"web\"\ntransport = \"local\"\nroot = \"r/{w}\"\n\n"));
        std::fs::create_dir_all(dir.join(format!("r/{w}/etc"))).unwrap();
        std::fs::write(dir.join(format!("r/{w}/etc/web.toml")), "name = \"x\"\n").unwrap();
    }
    for i in 1..=n {
        farm.push_str(&format!("[hosts.ivr-{i}]\nrole = \"ivr\"\ntransport = \"local\"\nroot = \"r/ivr-{i}\"\n\n"));
        std::fs::create_dir_all(dir.join(format!("r/ivr-{i}/etc"))).unwrap();
        let own = if distinct { format!("# node {i}, rack {}\n", i % 7) } else { String::new() };
        let body: String = (0..40).map(|l| format!("setting_{l} = {l}\n")).collect();
        std::fs::write(dir.join(format!("r/ivr-{i}/etc/ivr.conf")), format!("{body}{own}server web-a\nbackup web-a\n{body}")).unwrap();
    }
    std::fs::write(dir.join("farm.toml"), farm).unwrap();
}

#[test]
fn the_markdown_plan_of_200_hosts_with_one_change_fits_a_comment_whole() {
    let d = tempfile::tempdir().unwrap();
    big_farm(d.path(), 200, false);
    let out = run(farmctl(d.path()).args(["plan", "farm.toml", "--format", "markdown"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = text(&out.stdout);
    assert!(md.chars().count() < 60_000, "{} characters", md.chars().count());
    assert!(md.contains("**Plan: 200 hosts to change, 2 unchanged, 0 unreachable; 200 edits, 0 reloads.**"), "the whole summary: {}", &md[..300]);
    assert!(md.contains("```mermaid\nflowchart TD\n"), "a Mermaid picture");
    assert!(md.contains("| ivr-1..ivr-200 (200 hosts) | edit `/etc/ivr.conf` |"), "one row for the one change");
    assert!(md.contains("same change on 200 hosts: ivr-1..ivr-200 <code>/etc/ivr.conf</code>"), "one diff for the one change");
    assert_eq!(md.matches("```diff").count(), 1);
    assert!(!md.contains("left out"), "nothing had to be cut");
}

#[test]
fn two_hundred_different_diffs_are_cut_to_fit_and_say_how_to_see_the_rest() {
    let d = tempfile::tempdir().unwrap();
    big_farm(d.path(), 200, true);
    let out = run(farmctl(d.path()).args(["plan", "farm.toml", "--format", "markdown", "-o", "plan.json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = text(&out.stdout);
    assert!(md.chars().count() < 60_000, "{} characters", md.chars().count());
    assert!(md.contains("**Plan: 200 hosts to change"), "the summary is never cut");
    let shown = md.matches("```diff").count();
    assert!(shown > 10 && shown < 200, "{shown} diffs shown");
    assert!(md.contains(&format!("_{} more diff(s) are left out to fit a comment; `farmctl show PLAN.json` prints them all._", 200 - shown)), "{}", &md[md.len() - 300..]);
    // Without the bound, it would not have fit: the full text view is far longer.
    let full = run(farmctl(d.path()).args(["show", "plan.json"]));
    assert!(full.stdout.len() > 60_000, "{}", full.stdout.len());
}

#[test]
fn colour_follows_no_color_and_the_color_flag() {
    let d = tempfile::tempdir().unwrap();
    big_farm(d.path(), 3, false);
    let plain = run(farmctl(d.path()).env("NO_COLOR", "1").args(["plan", "farm.toml"]));
    assert!(plain.status.success() && !plain.stdout.contains(&0x1b), "no escape codes with NO_COLOR");
    let piped = run(farmctl(d.path()).args(["plan", "farm.toml"]));
    assert!(!piped.stdout.contains(&0x1b), "none into a pipe by default");
    let forced = run(farmctl(d.path()).env("NO_COLOR", "1").args(["plan", "farm.toml", "--color", "always"]));
    assert!(text(&forced.stdout).contains("\x1b[31m-server web-a"), "--color always wins: {}", text(&forced.stdout));
    let never = run(farmctl(d.path()).args(["--color", "never", "plan", "farm.toml"]));
    assert_eq!(never.stdout, plain.stdout, "--color never before the command too");
}

#[test]
fn every_command_has_examples_and_man_dir_writes_a_page_for_each() {
    let d = tempfile::tempdir().unwrap();
    let help = text(&run(farmctl(d.path()).arg("--help")).stdout);
    assert!(help.contains("NO_COLOR") && help.contains("FARMCTL_JOURNAL"), "environment variables are listed: {help}");
    let commands = ["plan", "apply", "show", "rollback", "status", "cancel", "unlock", "graph", "watch", "validate", "schema", "completions", "man", "journal"];
    for c in commands {
        let h = text(&run(farmctl(d.path()).args([c, "--help"])).stdout);
        assert!(h.contains("Examples:\n  farmctl "), "{c} --help has examples: {h}");
        // Every argument and option has a description: no bare `--flag` line.
        for line in h.lines().filter(|l| l.trim_start().starts_with('-') || l.trim_start().starts_with('<')) {
            assert!(line.trim().contains("  "), "{c}: undescribed argument `{line}`");
        }
    }
    let out = run(farmctl(d.path()).args(["man", "--dir", "man1"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for c in commands {
        let page = std::fs::read_to_string(d.path().join(format!("man1/farmctl-{c}.1"))).unwrap_or_else(|e| panic!("farmctl-{c}.1: {e}"));
        assert!(page.contains(&format!(".TH farmctl-{c} 1")), "{c}: {}", &page[..200.min(page.len())]);
    }
    // The top page names only pages that exist.
    let top = std::fs::read_to_string(d.path().join("man1/farmctl.1")).unwrap();
    let named: Vec<&str> = top.split("farmctl\\-").skip(1).filter_map(|t| t.split_once("(1)").map(|(n, _)| n)).filter(|n| !n.contains(char::is_whitespace)).collect();
    assert!(named.len() >= commands.len(), "the top page names the command pages: {named:?}");
    for named in named {
        assert!(d.path().join(format!("man1/farmctl-{named}.1")).exists(), "farmctl.1 names farmctl-{named}, which was not written");
    }
}

#[test]
fn graph_draws_svg_from_a_saved_plan_and_says_how_to_get_graphviz() {
    let d = tempfile::tempdir().unwrap();
    big_farm(d.path(), 3, false);
    assert!(run(farmctl(d.path()).args(["plan", "farm.toml", "-o", "plan.json"])).status.success());
    let out = run(farmctl(d.path()).args(["graph", "plan.json", "--format", "svg"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let svg = text(&out.stdout);
    assert!(svg.contains("<svg") && svg.contains("edit ivr&#45;3:/etc/ivr.conf"), "{}", &svg[..svg.len().min(400)]);
    // Without Graphviz on the PATH: an error that says what to install.
    let out = run(farmctl(d.path()).env("PATH", "/nonexistent").args(["graph", "plan.json", "--format", "svg"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("apt-get install graphviz"), "{}", text(&out.stderr));
}
