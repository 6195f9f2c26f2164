//! Property tests: the farm-file parser never panics, and name replacement
//! is idempotent, touches nothing outside matched tokens, and swaps round-trip.

use farmctl::edit::{edit_file, Replacer, Rule, TokenKind};
use farmctl::farm::{self, FarmError};
use proptest::prelude::*;
use std::path::Path;

const GOOD_FARM: &str = r#"[farm]
name = "p"

[ssh]
user = "ops"
connect_timeout = "5s"

[roles.web]
files = ["/etc/web.toml"]
reload = "systemctl reload web"

[roles.ivr]
files = ["/etc/ivr.toml", "/etc/peers.conf"]

[roles.ivr.set."/etc/ivr.toml"]
"asr.pool" = ["asr-1", "asr-2"]

[hosts.web-a]
address = "10.0.0.1"
role = "web"
aliases = ["web-a.example.com"]

[hosts.web-b]
address = "10.0.0.2"
role = "web"

[[replace]]
old = "web-a"
new = "web-b"
at = "2030-01-01T00:00:00Z"
on = ["ivr"]
"#;

fn mutate(text: &str, edits: &[(usize, u8, u8)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for &(pos, op, b) in edits {
        let at = pos % (bytes.len() + 1);
        const CHARS: &[u8] = b" \n=\"'[]{},.#0123456789abcxyz-_:\\\t";
        let ch = CHARS[b as usize % CHARS.len()];
        match op % 3 {
            0 if at < bytes.len() => {
                bytes.remove(at);
            }
            1 => bytes.insert(at, ch),
            _ if at < bytes.len() => bytes[at] = ch,
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Any mangling of a farm file gives a farm or located errors, never a panic.
    #[test]
    fn the_farm_parser_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)) {
        let text = mutate(GOOD_FARM, &edits);
        match farm::parse(Path::new("f.toml"), &text) {
            Ok(_) => {}
            Err(FarmError::Invalid(problems)) => {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    prop_assert!(p.line >= 1 && p.line <= text.lines().count() + 1, "{p}");
                    prop_assert!(p.col >= 1, "{p}");
                }
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }
}

/// A deliberately plain reference of the matching rules, to check the engine against.
fn reference(text: &[u8], rules: &[(String, String)]) -> Vec<u8> {
    let left = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    let right = |b: u8| b.is_ascii_alphanumeric() || b"_-".contains(&b);
    let mut sorted: Vec<&(String, String)> = rules.iter().collect();
    sorted.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
    let mut out = Vec::new();
    let mut i = 0;
    'scan: while i < text.len() {
        if i == 0 || !left(text[i - 1]) {
            for (from, to) in &sorted {
                let f = from.as_bytes();
                if text[i..].starts_with(f) && text.get(i + f.len()).is_none_or(|&b| !right(b)) {
                    out.extend_from_slice(to.as_bytes());
                    i += f.len();
                    continue 'scan;
                }
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn name() -> impl Strategy<Value = String> {
    "[a-z]{1,3}(-[a-z0-9]{1,2})?"
}

/// Text made of names and filler, including boundary characters and non-UTF-8 bytes.
fn text_with(names: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => proptest::sample::select(names).prop_map(String::into_bytes),
        2 => proptest::collection::vec(proptest::sample::select(b" \n\r\t.-_:;=\"'/x9\xff\xe9".to_vec()), 1..4),
        1 => "[a-z0-9]{1,3}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|p| p.concat())
}

fn replacer(rules: &[(String, String)]) -> Replacer {
    Replacer::new(rules.iter().map(|(f, t)| Rule { from: f.clone(), to: t.clone(), kind: TokenKind::Name, origin: 0 }).collect())
}

proptest! {
    /// The engine agrees with the plain reference: every byte outside a matched token is kept.
    #[test]
    fn only_matched_tokens_change((old, new, text) in (name(), name()).prop_flat_map(|(o, n)| (Just(o.clone()), Just(n.clone()), text_with(vec![o, n, "web-ab".into()])))) {
        prop_assume!(old != new);
        let rules = vec![(old, new)];
        prop_assert_eq!(replacer(&rules).apply(&text).bytes, reference(&text, &rules));
    }

    /// A second pass changes nothing, unless the new name itself contains the old one as a token.
    #[test]
    fn a_second_apply_changes_nothing((old, new, text) in (name(), name()).prop_flat_map(|(o, n)| (Just(o.clone()), Just(n.clone()), text_with(vec![o, n])))) {
        prop_assume!(old != new);
        let r = replacer(&[(old.clone(), new.clone())]);
        prop_assume!(r.apply(new.as_bytes()).origins.is_empty());
        let once = r.apply(&text).bytes;
        let twice = r.apply(&once);
        prop_assert!(twice.origins.is_empty());
        prop_assert_eq!(twice.bytes, once);
    }

    /// A swap applied twice gives back the original.
    #[test]
    fn a_swap_round_trips((a, b, text) in (name(), name()).prop_flat_map(|(a, b)| (Just(a.clone()), Just(b.clone()), text_with(vec![a, b])))) {
        prop_assume!(a != b);
        let r = replacer(&[(a.clone(), b.clone()), (b, a)]);
        let there = r.apply(&text).bytes;
        prop_assert_eq!(r.apply(&there).bytes, text);
    }

    /// In TOML files, comments and keys never change, and the result still parses.
    #[test]
    fn toml_edits_keep_comments_and_keys((old, new, values) in (name(), name()).prop_flat_map(|(o, n)| (Just(o.clone()), Just(n.clone()), proptest::collection::vec(proptest::sample::select(vec![o.clone(), format!("{o}.x"), format!("http://{o}:80/"), format!("x{o}"), n]), 1..6)))) {
        prop_assume!(old != new);
        let mut doc = format!("# {old} is here\n[t]\n");
        for (i, v) in values.iter().enumerate() {
            doc.push_str(&format!("k{i} = \"{v}\" # {old}\n"));
        }
        let r = replacer(&[(old.clone(), new.clone())]);
        let out = edit_file("/x.toml", doc.as_bytes(), &r, &[]).unwrap();
        let out = String::from_utf8(out.bytes).unwrap();
        prop_assert!(out.parse::<toml_edit::DocumentMut>().is_ok());
        let comments = |s: &str| s.lines().map(|l| l.split('#').nth(1).unwrap_or("").to_string()).collect::<Vec<_>>();
        prop_assert_eq!(comments(&out), comments(&doc));
        let keys = |s: &str| s.lines().map(|l| l.split(" = ").next().unwrap_or("").to_string()).collect::<Vec<_>>();
        prop_assert_eq!(keys(&out), keys(&doc));
    }
}
