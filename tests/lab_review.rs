//! `farmctl apply` on 100 lab hosts, as a person sees it in a 40-line
//! terminal (tmux): the progress is one bar and a few lines, so it never
//! scrolls off the screen, and the end names hosts and files, never an
//! internal id. Needs tmux (scripts/test.sh installs it).

mod lab;

use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(["-L", "farmctl-lab-review"]).args(args).output().expect("tmux is missing: run `bash scripts/test.sh`, which installs it");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn apply_on_100_hosts_fits_a_40_line_terminal_and_ends_in_words() {
    let mut names: Vec<String> = (1..=100).map(|i| format!("ivr-{i}")).collect();
    names.extend(["web-a".to_string(), "web-b".to_string()]);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let lab = lab::Lab::start(&refs);
    for i in 1..=100 {
        lab.host(&format!("ivr-{i}")).write("/etc/ivr/ivr.conf", b"server web-a\n");
    }
    let farm = format!(
        "[farm]\nname = \"review\"\n\n{}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = [\"/etc/ivr/ivr.conf\"]\n\n{}\n[[replace]]\nold = \"web-a\"\nnew = \"web-b\"\n",
        lab.ssh_section(),
        lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" })
    );
    for w in ["web-a", "web-b"] {
        lab.host(w).write("/etc/ivr-web/web.toml", b"name = \"x\"\n");
    }
    lab.write_farm("farm.toml", &farm);
    // The same environment as lab.farmctl(), in a shell tmux runs in a 150x40 terminal.
    let cmd = lab.farmctl();
    let envs: String = cmd.get_envs().filter_map(|(k, v)| Some(format!("{}='{}' ", k.to_string_lossy(), v?.to_string_lossy()))).collect();
    let script = lab.dir.path().join("run.sh");
    std::fs::write(&script, format!("cd '{}' && env {envs} TERM=xterm-256color '{}' apply farm.toml --yes; echo FARMCTL-EXIT=$?; sleep 600\n", lab.dir.path().display(), env!("CARGO_BIN_EXE_farmctl"))).unwrap();
    let _ = tmux(&["kill-server"]);
    tmux(&["new-session", "-d", "-s", "t", "-x", "150", "-y", "40", &format!("bash '{}'", script.display())]);
    let started = Instant::now();
    let mut bar_seen = false;
    let screen = loop {
        let screen = tmux(&["capture-pane", "-p", "-t", "t"]);
        bar_seen |= screen.contains(" hosts ") && screen.contains('[');
        if screen.contains("FARMCTL-EXIT=") || started.elapsed() > Duration::from_secs(180) {
            break screen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let history = tmux(&["capture-pane", "-p", "-S", "-", "-t", "t"]);
    let _ = tmux(&["kill-server"]);
    eprintln!("the end of the run as the terminal shows it:\n{screen}");
    assert!(screen.contains("FARMCTL-EXIT=0"), "apply finished well: {screen}");
    assert!(bar_seen, "a progress bar was on the screen");
    // Everything from the first stage line to the end fits on one screen.
    let from_stage: Vec<&str> = history.lines().skip_while(|l| !l.starts_with("stage 1/")).collect();
    let used = from_stage.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    assert!(used > 0 && used <= 40, "the progress and the end take {used} lines:\n{}", from_stage.join("\n"));
    assert!(from_stage.iter().any(|l| l.starts_with("applied: ivr-1..ivr-100")), "{}", from_stage.join("\n"));
    for kind in ["edit:", "gate:", "retire:", "reload:"] {
        assert!(!from_stage.iter().any(|l| l.contains(kind) && l.contains('@')), "an internal id: {}", from_stage.join("\n"));
    }
    for i in 1..=100 {
        assert_eq!(lab.host(&format!("ivr-{i}")).read("/etc/ivr/ivr.conf"), b"server web-b\n", "ivr-{i}");
    }
}
