//! Whole-token name replacement on raw bytes. Pure.
//!
//! A token matches only as a whole host name: it must not be preceded by
//! `[A-Za-z0-9_.-]` and must not be followed by `[A-Za-z0-9_-]`. Addresses
//! are additionally not followed by `.<digit>`, so `10.1.0.11` never matches
//! inside `10.1.0.110` or `10.1.0.11.5`. All rules apply in one pass, so a
//! swap (`a -> b` with `b -> a`) works.

use memchr::memmem;

/// What kind of identity a rule rewrites; addresses have a stricter right edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Name,
    Address,
}

/// One token rewrite: `from` becomes `to` wherever it stands as a whole name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub from: String,
    pub to: String,
    pub kind: TokenKind,
    /// Index of the replacement (in the farm file) this rule came from.
    pub origin: usize,
}

/// A set of rules applied together in one pass.
#[derive(Clone, Debug, Default)]
pub struct Replacer {
    rules: Vec<Rule>,
    /// By origin: `*` globs of whole lines where that origin's rules do not apply.
    skip_lines: std::collections::BTreeMap<usize, Vec<String>>,
}

/// The result of a pass: the new bytes and which origins fired.
#[derive(Debug, PartialEq, Eq)]
pub struct Replaced {
    pub bytes: Vec<u8>,
    /// Sorted, deduplicated origins of the rules that matched.
    pub origins: Vec<usize>,
}

fn is_left_blocker(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn is_right_blocker(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
}

impl Replacer {
    pub fn new(mut rules: Vec<Rule>) -> Self {
        rules.retain(|r| !r.from.is_empty());
        // Longest first, so an FQDN alias wins over its first label.
        rules.sort_by(|a, b| b.from.len().cmp(&a.from.len()).then(a.from.cmp(&b.from)));
        Replacer { rules, skip_lines: Default::default() }
    }

    /// Leaves the names on lines matching any of `lines` alone for the rules of `origin`.
    pub fn skipping(mut self, origin: usize, lines: &[String]) -> Self {
        if !lines.is_empty() {
            self.skip_lines.entry(origin).or_default().extend(lines.iter().cloned());
        }
        self
    }

    /// Whether the line of `whole` around byte `at` is one `origin` must leave alone.
    fn skipped(&self, whole: &[u8], at: usize, origin: usize) -> bool {
        let Some(globs) = self.skip_lines.get(&origin) else { return false };
        let start = whole[..at].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let end = whole[at..].iter().position(|b| *b == b'\n').map_or(whole.len(), |i| at + i);
        let line = String::from_utf8_lossy(&whole[start..end]);
        let line = line.trim_end_matches('\r');
        globs.iter().any(|g| crate::farm::glob(g, line))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    fn bounded(&self, text: &[u8], start: usize, end: usize, kind: TokenKind) -> bool {
        if start > 0 && is_left_blocker(text[start - 1]) {
            return false;
        }
        match text.get(end) {
            Some(&b) if is_right_blocker(b) => false,
            Some(b'.') if kind == TokenKind::Address => {
                !matches!(text.get(end + 1), Some(d) if d.is_ascii_digit())
            }
            _ => true,
        }
    }

    /// Every whole-token match, earliest first, longest first at one position,
    /// with overlaps removed.
    /// `whole` is the file `text` is a part of, starting at `offset`: skipped lines are its lines.
    fn matches(&self, text: &[u8], whole: &[u8], offset: usize) -> Vec<(usize, usize, usize)> {
        let mut found = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let needle = rule.from.as_bytes();
            for start in memmem::find_iter(text, needle) {
                let end = start + needle.len();
                if self.bounded(text, start, end, rule.kind) && !self.skipped(whole, offset + start, rule.origin) {
                    found.push((start, end, i));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut taken = Vec::with_capacity(found.len());
        let mut cursor = 0;
        for m in found {
            if m.0 >= cursor {
                cursor = m.1;
                taken.push(m);
            }
        }
        taken
    }

    /// Applies every rule at once. Bytes outside matched tokens are copied as they are.
    pub fn apply(&self, text: &[u8]) -> Replaced {
        self.apply_within(text, text, 0)
    }

    /// [`Replacer::apply`] on `text`, a part of `whole` starting at `offset`
    /// (a TOML string value in its file), so that skipped lines are the file's.
    pub fn apply_within(&self, text: &[u8], whole: &[u8], offset: usize) -> Replaced {
        let matches = self.matches(text, whole, offset);
        let mut out = Vec::with_capacity(text.len());
        let mut origins = Vec::new();
        let mut cursor = 0;
        for (start, end, i) in matches {
            out.extend_from_slice(&text[cursor..start]);
            out.extend_from_slice(self.rules[i].to.as_bytes());
            origins.push(self.rules[i].origin);
            cursor = end;
        }
        out.extend_from_slice(&text[cursor..]);
        origins.sort_unstable();
        origins.dedup();
        Replaced { bytes: out, origins }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: &str, to: &str, kind: TokenKind) -> Rule {
        Rule { from: from.into(), to: to.into(), kind, origin: 0 }
    }

    fn run(rules: Vec<Rule>, text: &str) -> String {
        String::from_utf8(Replacer::new(rules).apply(text.as_bytes()).bytes).unwrap()
    }

    #[test]
    fn whole_names_only() {
        let r = || vec![rule("web-a", "web-c", TokenKind::Name)];
        assert_eq!(run(r(), "web-a"), "web-c");
        assert_eq!(run(r(), "host=web-a;"), "host=web-c;");
        assert_eq!(run(r(), "web-a.east.example.com"), "web-c.east.example.com");
        assert_eq!(run(r(), "web-ab xweb-a ivr.web-a web-a_1 web-a-2"), "web-ab xweb-a ivr.web-a web-a_1 web-a-2");
        assert_eq!(run(r(), "\"web-a\",'web-a' (web-a) web-a:8080"), "\"web-c\",'web-c' (web-c) web-c:8080");
    }

    #[test]
    fn addresses_are_whole_tokens() {
        let r = || vec![rule("10.1.0.11", "10.1.0.13", TokenKind::Address)];
        assert_eq!(run(r(), "10.1.0.11"), "10.1.0.13");
        assert_eq!(run(r(), "10.1.0.11:80 10.1.0.110 110.1.0.11 10.1.0.11.5"), "10.1.0.13:80 10.1.0.110 110.1.0.11 10.1.0.11.5");
        assert_eq!(run(r(), "at 10.1.0.11."), "at 10.1.0.13.");
    }

    #[test]
    fn swap_happens_in_one_pass() {
        let rules = vec![rule("a", "b", TokenKind::Name), rule("b", "a", TokenKind::Name)];
        assert_eq!(run(rules, "a b ab a.b"), "b a ab b.b");
    }

    #[test]
    fn longest_rule_wins_at_a_position() {
        let rules = vec![
            rule("web-a", "web-c", TokenKind::Name),
            rule("web-a.east.example.com", "web-c.west.example.com", TokenKind::Name),
        ];
        assert_eq!(run(rules, "web-a.east.example.com web-a.east"), "web-c.west.example.com web-c.east");
    }

    #[test]
    fn reports_origins_and_keeps_non_utf8() {
        let mut a = rule("x", "y", TokenKind::Name);
        a.origin = 4;
        let out = Replacer::new(vec![a]).apply(b"\xff x \xfe");
        assert_eq!(out.bytes, b"\xff y \xfe");
        assert_eq!(out.origins, vec![4]);
        let none = Replacer::new(vec![rule("x", "y", TokenKind::Name)]).apply(b"xx");
        assert!(none.origins.is_empty());
    }
}
