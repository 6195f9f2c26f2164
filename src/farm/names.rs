//! Pure checks of the words a farm file hands to hosts and to output: host
//! names, paths and commands. What passes here is unambiguous and cannot
//! forge a line of output or climb out of a directory.

/// The first control character in `s` (NUL, newline, escape...), if any.
/// `allow_newline` lets newlines and tabs through, for multi-line commands.
pub fn control_char(s: &str, allow_newline: bool) -> Option<char> {
    s.chars().find(|c| c.is_control() && !(allow_newline && (*c == '\n' || *c == '\t')))
}

/// Describes a control character for a message.
pub fn describe(c: char) -> String {
    match c {
        '\0' => "a NUL byte".into(),
        '\n' => "a newline".into(),
        '\r' => "a carriage return".into(),
        '\t' => "a tab".into(),
        c => format!("the control character U+{:04X}", c as u32),
    }
}

/// Why `s` is not a usable host name or alias, if it is not: it names state
/// directories and staged files on hosts, and appears in every plan line.
pub fn host_name_problem(s: &str) -> Option<String> {
    if let Some(c) = control_char(s, false) {
        return Some(format!("expected a host name without {}", describe(c)));
    }
    if s.is_empty() {
        return Some("expected a non-empty host name".into());
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Some(format!("expected a host name of letters, digits, `-`, `_` and `.`, found {c:?} in `{s}`"));
    }
    if s.starts_with(['-', '.']) {
        return Some(format!("expected a host name that starts with a letter or digit, found `{s}`"));
    }
    None
}

/// Why `s` is not a usable address, if it is not (it is handed to ssh).
pub fn address_problem(s: &str) -> Option<String> {
    if let Some(c) = control_char(s, false) {
        return Some(format!("expected an address without {}", describe(c)));
    }
    if s.trim().is_empty() {
        return Some("expected a non-empty address".into());
    }
    if s.starts_with('-') || s.chars().any(char::is_whitespace) {
        return Some(format!("expected an address or DNS name, found `{s}`"));
    }
    None
}

/// An absolute path with `.` and repeated slashes taken out. `..` is refused:
/// a path must say where it is without climbing.
pub fn normalize_path(p: &str) -> Result<String, String> {
    if let Some(c) = control_char(p, false) {
        return Err(format!("expected a path without {}", describe(c)));
    }
    if !p.starts_with('/') {
        return Err(format!("expected an absolute path, found `{p}`"));
    }
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("expected a path without `..`, found `{p}`")),
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_and_refuse_climbing() {
        assert_eq!(normalize_path("/etc/x/./a.conf").unwrap(), "/etc/x/a.conf");
        assert_eq!(normalize_path("//etc//x/").unwrap(), "/etc/x");
        assert!(normalize_path("/etc/../root/.ssh/authorized_keys").unwrap_err().contains("`..`"));
        assert!(normalize_path("etc/x").unwrap_err().contains("absolute"));
        assert!(normalize_path("/etc/x\0y").unwrap_err().contains("NUL"));
    }

    #[test]
    fn host_names_are_plain_words() {
        assert_eq!(host_name_problem("web-a.east.example.com"), None);
        assert!(host_name_problem("web\nPlan: 0 hosts to change").unwrap().contains("newline"));
        assert!(host_name_problem("a/../b").is_some());
        assert!(host_name_problem("-oProxyCommand=x").is_some());
        assert!(host_name_problem("web a").is_some());
        assert!(address_problem("-oProxyCommand=touch /tmp/x").is_some());
        assert_eq!(address_problem("fe80::1"), None);
    }

    #[test]
    fn commands_may_span_lines_but_hold_no_other_control_characters() {
        assert_eq!(control_char("systemctl reload ivr &&\n  echo ok", true), None);
        assert_eq!(control_char("true\0rm -rf /", true), Some('\0'));
        assert_eq!(control_char("a\x1b[2Jb", true), Some('\x1b'));
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head) && (0..=text.len() - head.len()).any(|i| {
                let rest = &text[head.len() + i..];
                text.is_char_boundary(head.len() + i) && glob(tail, rest)
            })
        }
    }
}

/// The candidate closest to a mistyped `word`, if one is close enough to be
/// what was meant: "did you mean `web-b`?" (edit distance at most a third of
/// the word, and at least 1), and nearer than every other candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let here = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
                prev = here;
            }
        }
        row[b.len()]
    };
    let limit = (word.chars().count() / 3).max(1);
    let mut near: Vec<(usize, &str)> = candidates.into_iter().map(|c| (distance(word, c), c)).filter(|(d, _)| *d <= limit).collect();
    near.sort();
    near.dedup_by_key(|(_, c)| *c);
    // Only one best guess is a suggestion; two equally near ones are a coin toss.
    match near.as_slice() {
        [(d, c), rest @ ..] if rest.first().is_none_or(|(e, _)| e > d) => Some(c),
        _ => None,
    }
}

/// ` (did you mean `x`?)` when a candidate is close, else nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

#[cfg(test)]
mod closest_tests {
    use super::*;

    #[test]
    fn a_near_miss_is_suggested_and_a_far_one_is_not() {
        let hosts = ["web-a", "web-b", "ivr-1", "ivr-10"];
        assert_eq!(closest("web_b", hosts), Some("web-b"));
        assert_eq!(closest("ivr1", hosts), Some("ivr-1"));
        assert_eq!(closest("database", hosts), None);
        assert_eq!(did_you_mean("wbe-a", hosts), "", "two letters swapped are two edits, too far for five letters");
        assert_eq!(closest("web-z", hosts), None, "web-a and web-b are equally near");
        assert_eq!(did_you_mean("ivr-01", hosts), " (did you mean `ivr-1`?)");
    }
}

/// A path from the farm file: relative to the farm file's directory (`base`).
pub fn resolve(base: &std::path::Path, p: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
