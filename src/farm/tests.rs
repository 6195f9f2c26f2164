//! Unit tests of farm-file parsing and validation.

use super::*;

fn problems(text: &str) -> Vec<String> {
    match parse(Path::new("f.toml"), text) {
        Ok(_) => vec![],
        Err(FarmError::Invalid(p)) => p.iter().map(|p| format!("{}:{} {}", p.line, p.col, p.message)).collect(),
        Err(e) => vec![e.to_string()],
    }
}

const GOOD: &str = r#"
[farm]
name = "east"
[roles.web]
files = ["/etc/web.toml"]
[roles.ivr]
files = ["/etc/ivr.toml", "/etc/peers.conf"]
reload = "systemctl reload ivr"
[roles.ivr.set."/etc/ivr.toml"]
"asr.pool" = ["asr-1"]
[hosts.web-a]
address = "10.0.0.1"
role = "web"
[hosts.web-c]
address = "10.0.0.3"
role = "web"
[hosts.ivr-1]
role = "ivr"
transport = "local"
root = "demo/ivr-1"
[[replace]]
old = "web-a"
new = "web-c"
at = 2026-12-01T02:00:00Z
on = ["ivr"]
"#;

#[test]
fn a_good_farm_loads() {
    let farm = parse(Path::new("inv/f.toml"), GOOD).unwrap();
    assert_eq!(farm.hosts.len(), 3);
    assert_eq!(farm.hosts["ivr-1"].transport, Transport::Local { root: PathBuf::from("inv/demo/ivr-1") });
    assert_eq!(farm.replacements[0].at.unwrap().to_string(), "2026-12-01T02:00:00Z");
    assert_eq!(farm.roles["ivr"].set["/etc/ivr.toml"][0].0, "asr.pool");
}

#[test]
fn unknown_keys_and_hosts_are_located() {
    let bad = GOOD.replace("address = \"10.0.0.1\"", "adress = \"10.0.0.1\"");
    let p = problems(&bad);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("12:1 unknown field `adress`"), "{p:?}");
    let bad = GOOD.replace("new = \"web-c\"", "new = \"web-z\"");
    assert_eq!(problems(&bad), vec!["23:7 unknown host `web-z`; a replacement names hosts of this farm's [hosts]"]);
}

#[test]
fn bad_time_is_located() {
    let bad = GOOD.replace("at = 2026-12-01T02:00:00Z", "at = \"tomorrow\"");
    let p = problems(&bad);
    assert!(p[0].starts_with("24:6 expected an RFC 3339 time"), "{p:?}");
}

#[test]
fn line_col_counts_chars() {
    assert_eq!(line_col("ab\ncé d", 7), (2, 4));
    assert_eq!(line_col("x", 99), (1, 2));
}
