//! Rewriting of host config files: name replacement and `set`. Pure, no I/O.
//!
//! TOML files (by extension) are edited through `toml_edit`; every other file
//! gets token-exact byte edits. Either way, nothing outside a matched token or
//! an assigned value changes.

pub mod hosts;
pub mod tokens;
mod toml;

use crate::farm::SetValue;
pub use tokens::{Replacer, Rule, TokenKind};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EditError {
    #[error("not valid TOML at {line}:{col}: {message}")]
    Toml { line: usize, col: usize, message: String },
    #[error("the file is not UTF-8, so it cannot be edited as TOML")]
    NotUtf8,
    #[error("cannot set `{key}`: {message}")]
    BadKey { key: String, message: String },
    #[error("`set` applies to TOML files only")]
    SetOnText,
}

/// How a file is edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Toml,
    Text,
}

impl FileKind {
    pub fn of(path: &str) -> FileKind {
        if path.ends_with(".toml") {
            FileKind::Toml
        } else {
            FileKind::Text
        }
    }
}

/// What caused an edit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// Index of a `[[replace]]` entry.
    Replace(usize),
    /// A `set` key.
    Set(String),
}

/// The new content of a file and why it changed. `causes` is empty when nothing changed.
#[derive(Debug, PartialEq)]
pub struct Edited {
    pub bytes: Vec<u8>,
    pub causes: Vec<Cause>,
}

/// The strings listed at a dotted key of a TOML file, if the key holds an array.
pub fn string_list(content: &[u8], key: &str) -> Option<Vec<String>> {
    toml::string_list(std::str::from_utf8(content).ok()?, key)
}

/// Applies one simultaneous pass of replacements, then the `set` assignments.
pub fn edit_file(path: &str, content: &[u8], replacer: &Replacer, sets: &[(String, SetValue)]) -> Result<Edited, EditError> {
    match FileKind::of(path) {
        FileKind::Text => {
            if !sets.is_empty() {
                return Err(EditError::SetOnText);
            }
            let out = replacer.apply(content);
            Ok(Edited { bytes: out.bytes, causes: out.origins.into_iter().map(Cause::Replace).collect() })
        }
        FileKind::Toml => {
            // Fast path: no name occurs anywhere in the raw text, so none occurs in a string value.
            if sets.is_empty() && (replacer.is_empty() || replacer.apply(content).origins.is_empty()) {
                return Ok(Edited { bytes: content.to_vec(), causes: Vec::new() });
            }
            let text = std::str::from_utf8(content).map_err(|_| EditError::NotUtf8)?;
            let (text, origins) = toml::replace_in_strings(text, replacer)?;
            let (text, keys) = toml::apply_sets(&text, sets)?;
            let mut causes: Vec<Cause> = origins.into_iter().map(Cause::Replace).collect();
            causes.extend(keys.into_iter().map(Cause::Set));
            Ok(Edited { bytes: text.into_bytes(), causes })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replacer() -> Replacer {
        Replacer::new(vec![
            Rule { from: "web-a".into(), to: "web-c".into(), kind: TokenKind::Name, origin: 0 },
            Rule { from: "10.1.0.11".into(), to: "10.1.0.13".into(), kind: TokenKind::Address, origin: 0 },
        ])
    }

    const TOML: &str = "# web-a is our main web server\n[web]\nprimary = 'web-a'   # keep quotes\nbackup  = \"web-ab\"\nurls = [ \"http://web-a:8080/\", \"http://10.1.0.110/\" ]\n[peers]\nweb-a = { addr = \"10.1.0.11\" }\n";

    #[test]
    fn toml_edits_touch_only_string_tokens() {
        let out = edit_file("/etc/ivr/ivr.toml", TOML.as_bytes(), &replacer(), &[]).unwrap();
        let want = "# web-a is our main web server\n[web]\nprimary = 'web-c'   # keep quotes\nbackup  = \"web-ab\"\nurls = [ \"http://web-c:8080/\", \"http://10.1.0.110/\" ]\n[peers]\nweb-a = { addr = \"10.1.0.13\" }\n";
        assert_eq!(String::from_utf8(out.bytes).unwrap(), want);
        assert_eq!(out.causes, vec![Cause::Replace(0)]);
    }

    #[test]
    fn text_edits_are_token_exact() {
        let text = b"# peers: web-a\r\nserver web-a 10.1.0.11:80\r\nserver web-ab 10.1.0.110\r\n";
        let out = edit_file("/etc/ivr/peers.conf", text, &replacer(), &[]).unwrap();
        assert_eq!(out.bytes, b"# peers: web-c\r\nserver web-c 10.1.0.13:80\r\nserver web-ab 10.1.0.110\r\n".to_vec());
    }

    #[test]
    fn set_keeps_decor_and_is_idempotent() {
        let text = "[asr]\npool = [\"asr-1\"] # the pool\nport = 1\n";
        let sets = vec![("asr.pool".to_string(), SetValue::Array(vec![SetValue::String("asr-1".into()), SetValue::String("asr-2".into())]))];
        let out = edit_file("/x.toml", text.as_bytes(), &Replacer::default(), &sets).unwrap();
        let got = String::from_utf8(out.bytes).unwrap();
        assert_eq!(got, "[asr]\npool = [\"asr-1\", \"asr-2\"] # the pool\nport = 1\n");
        assert_eq!(out.causes, vec![Cause::Set("asr.pool".into())]);
        let again = edit_file("/x.toml", got.as_bytes(), &Replacer::default(), &sets).unwrap();
        assert!(again.causes.is_empty());
        assert_eq!(String::from_utf8(again.bytes).unwrap(), got);
    }

    #[test]
    fn set_creates_missing_keys() {
        let sets = vec![("a.b".to_string(), SetValue::Integer(3))];
        let out = edit_file("/x.toml", b"top = 1\n", &Replacer::default(), &sets).unwrap();
        assert_eq!(String::from_utf8(out.bytes).unwrap(), "top = 1\n\n[a]\nb = 3\n");
    }

    #[test]
    fn broken_toml_is_an_error_with_position() {
        let err = edit_file("/x.toml", b"a = \"web-a\"\nb = \n", &replacer(), &[]).unwrap_err();
        assert!(matches!(err, EditError::Toml { line: 2, .. }), "{err:?}");
        // A broken file that names no replaced host needs no edit, so it stops nothing.
        let out = edit_file("/x.toml", b"a = 1\nb = \n", &replacer(), &[]).unwrap();
        assert!(out.causes.is_empty());
    }
}
