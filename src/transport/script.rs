//! The POSIX sh snippets farmctl sends to hosts, built by pure functions.
//!
//! Every host name, path, hash and command is quoted with `shlex` before it is
//! put into a script; nothing from the farm file or a plan reaches a shell
//! unquoted. Scripts report line by line on stdout; the `parse_*` functions
//! read those lines back. Needs only sh, coreutils (`sha256sum`, `stat`,
//! `base64`, `head -c`, `readlink -f`) and `mv`.

use crate::live::{FileInfo, FileState, HostState};
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Quotes one word for sh. NUL bytes cannot be passed to a shell at all.
pub fn q(s: &str) -> String {
    shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_else(|_| "''".to_string())
}

/// A path on the host, under `root` for the local transport ("" over SSH).
pub fn on_host(root: &str, path: &str) -> String {
    format!("{root}{path}")
}

/// Reads the hostname, the clock and every managed file, in one command.
pub fn read_state(root: &str, paths: &[String]) -> String {
    let mut s = String::from(
        "printf 'H %s\\n' \"$(cat /proc/sys/kernel/hostname 2>/dev/null || uname -n)\"\n\
         printf 'T %s\\n' \"$(date +%s%N)\"\n",
    );
    s.push_str("for f in");
    for p in paths {
        write!(s, " {}", q(&on_host(root, p))).unwrap();
    }
    s.push_str(
        "; do\n\
         if [ ! -e \"$f\" ] && [ ! -L \"$f\" ]; then echo M\n\
         elif [ ! -f \"$f\" ]; then echo 'U not a regular file'\n\
         elif [ ! -r \"$f\" ]; then echo 'U permission denied'\n\
         else\n\
         printf 'F %s\\n' \"$(stat -L -c '%a %U %G' -- \"$f\")\"\n\
         if base64 -w 0 < \"$f\"; then printf '\\nOK\\n'; else printf '\\nX\\n'; fi\n\
         fi\n\
         done\n",
    );
    s
}

/// Parses the output of [`read_state`]. `sent_ms`/`received_ms` bracket the command, for the clock offset.
pub fn parse_read_state(out: &[u8], paths: &[String], sent_ms: i64, received_ms: i64) -> Result<HostState, String> {
    let text = std::str::from_utf8(out).map_err(|_| "the host's answer was not text".to_string())?;
    let mut lines = text.lines();
    let hostname = lines
        .next()
        .and_then(|l| l.strip_prefix("H "))
        .ok_or("the host's answer did not start with its hostname")?
        .to_string();
    let clock_offset_ms = lines
        .next()
        .and_then(|l| l.strip_prefix("T "))
        .and_then(|t| t.trim().parse::<i128>().ok())
        .map(|ns| (ns / 1_000_000) as i64 - (sent_ms + received_ms) / 2);
    let mut files = BTreeMap::new();
    for path in paths {
        let line = lines.next().ok_or_else(|| format!("the host's answer ended before {path}"))?;
        let state = if line == "M" {
            FileState::Missing
        } else if let Some(why) = line.strip_prefix("U ") {
            FileState::Unreadable(why.to_string())
        } else if let Some(meta) = line.strip_prefix("F ") {
            let mut m = meta.split(' ');
            let (mode, owner, group) = (m.next().unwrap_or(""), m.next().unwrap_or(""), m.next().unwrap_or(""));
            let b64 = lines.next().unwrap_or("");
            match lines.next() {
                Some("OK") => {}
                _ => return Err(format!("reading {path} failed on the host")),
            }
            let content = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("{path} came back garbled: {e}"))?;
            FileState::Present(FileInfo {
                sha256: crate::farm::sha256_hex(&content),
                content,
                mode: mode.to_string(),
                owner: owner.to_string(),
                group: group.to_string(),
            })
        } else {
            return Err(format!("unexpected answer for {path}: {line:?}"));
        };
        files.insert(path.clone(), state);
    }
    Ok(HostState { hostname, clock_offset_ms, files })
}

/// One file to write in a staged apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub before_sha256: String,
    pub after_sha256: String,
    pub len: usize,
}

/// Where a run keeps its lock, backups and staged files on a host.
#[derive(Clone, Debug)]
pub struct RunIds<'a> {
    pub root: &'a str,
    pub state_dir: &'a str,
    /// Names the backups and staged files: the plan id.
    pub plan_id: &'a str,
    /// Proves lock ownership between the stage and switch commands.
    pub token: &'a str,
}

fn prelude(s: &mut String, ids: &RunIds, files: &[FileWrite], staged_suffix: &str) {
    writeln!(s, "S={}\nP={}\nK={}", q(&on_host(ids.root, ids.state_dir)), q(ids.plan_id), q(ids.token)).unwrap();
    s.push_str("umask 077\n");
    for (i, f) in files.iter().enumerate() {
        // The target (symlinks resolved, so the link survives) and its staged sibling.
        writeln!(
            s,
            "t{i}=$(readlink -f -- {p}) || t{i}={p}\ns{i}=\"${{t{i}%/*}}/.${{t{i}##*/}}.farmctl-$P{suffix}\"",
            p = q(&on_host(ids.root, &f.path)),
            suffix = staged_suffix
        )
        .unwrap();
    }
    s.push_str("cleanup() {");
    for i in 0..files.len() {
        write!(s, " rm -f -- \"$s{i}\";").unwrap();
    }
    s.push_str(" :; }\n");
    s.push_str("unlock() { [ \"$(cat \"$S/lock/token\" 2>/dev/null)\" = \"$K\" ] && rm -rf -- \"$S/lock\"; }\n");
    s.push_str("fail() { printf 'ERR %s\\n' \"$1\"; cleanup; unlock; exit 1; }\n");
}

fn cas_checks(s: &mut String, files: &[FileWrite], hash_of: impl Fn(&FileWrite) -> &str) {
    s.push_str("bad=0\n");
    for (i, f) in files.iter().enumerate() {
        writeln!(
            s,
            "if [ -f \"$t{i}\" ]; then c=$(sha256sum < \"$t{i}\") || fail 'cannot read {i}'; c=${{c%% *}}; else c=missing; fi\n\
             [ \"$c\" = {h} ] || {{ printf 'CHANGED {i} %s\\n' \"$c\"; bad=1; }}",
            h = q(hash_of(f))
        )
        .unwrap();
    }
}

/// Takes the host lock, checks every before-hash, then writes each new content
/// (read from stdin, in order) to a dotfile beside its target with the target's
/// mode and owner, fsyncs it and backs the original up. Nothing is renamed.
pub fn stage(ids: &RunIds, owner: &str, files: &[FileWrite]) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    s.push_str(
        "mkdir -p -- \"$S\" || { echo \"ERR cannot create the state directory $S\"; exit 1; }\n\
         if ! mkdir -- \"$S/lock\" 2>/dev/null; then printf 'LOCKED %s\\n' \"$(head -n 1 \"$S/lock/owner\" 2>/dev/null)\"; exit 3; fi\n",
    );
    writeln!(s, "printf '%s\\n' {} > \"$S/lock/owner\"\nprintf '%s' \"$K\" > \"$S/lock/token\"", q(owner)).unwrap();
    cas_checks(&mut s, files, |f| &f.before_sha256);
    s.push_str("if [ $bad = 1 ]; then unlock; exit 4; fi\n");
    s.push_str("B=\"$S/backups/$P\"\nmkdir -p -- \"$B\" || fail 'cannot create the backup directory'\n");
    for (i, f) in files.iter().enumerate() {
        writeln!(
            s,
            "head -c {len} > \"$s{i}\" || fail 'cannot write the staged copy of {i} (disk full?)'\n\
             c=$(sha256sum < \"$s{i}\"); [ \"${{c%% *}}\" = {after} ] || fail 'the staged copy of {i} is incomplete (disk full?)'\n\
             chmod \"$(stat -L -c %a -- \"$t{i}\")\" \"$s{i}\" || fail 'cannot keep the mode of {i}'\n\
             o=$(stat -L -c %u:%g -- \"$t{i}\"); [ \"$(stat -c %u:%g -- \"$s{i}\")\" = \"$o\" ] || chown \"$o\" \"$s{i}\" || fail 'cannot keep the owner of {i}'\n\
             sync -- \"$s{i}\" 2>/dev/null || sync\n\
             cp -p -- \"$t{i}\" \"$B/{i}\" || fail 'cannot back up {i}'\n\
             printf '%s\\t%s\\n' {i} {path} >> \"$B/index\"\n\
             echo 'STAGED {i}'",
            len = f.len,
            after = q(&f.after_sha256),
            path = q(&f.path),
        )
        .unwrap();
    }
    s.push_str("sync -- \"$B\" 2>/dev/null\necho READY\n");
    s
}

/// Re-checks every before-hash right before renaming the staged copies into
/// place, records the time of each rename, runs the reload and drops the lock.
pub fn switch(ids: &RunIds, files: &[FileWrite], reload: Option<&str>) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    s.push_str("[ \"$(cat \"$S/lock/token\" 2>/dev/null)\" = \"$K\" ] || { echo 'ERR this run no longer holds the host lock'; cleanup; exit 1; }\n");
    for i in 0..files.len() {
        writeln!(s, "[ -f \"$s{i}\" ] || fail 'the staged copy of {i} is gone'").unwrap();
    }
    cas_checks(&mut s, files, |f| &f.before_sha256);
    s.push_str("if [ $bad = 1 ]; then cleanup; unlock; exit 4; fi\n");
    for i in 0..files.len() {
        writeln!(
            s,
            "if mv -f -- \"$s{i}\" \"$t{i}\"; then printf 'RENAMED {i} %s\\n' \"$(date +%s%N)\"; else echo 'ERR cannot rename {i}'; cleanup; unlock; exit 1; fi"
        )
        .unwrap();
    }
    reload_lines(&mut s, ids.root, reload);
    s.push_str("unlock\necho DONE\n");
    s
}

fn reload_lines(s: &mut String, root: &str, reload: Option<&str>) {
    if let Some(cmd) = reload {
        let cd = if root.is_empty() { String::new() } else { format!("cd {} && ", q(root)) };
        writeln!(
            s,
            "if o=$({cd}sh -c {cmd} 2>&1); then echo 'RELOAD 0'; else r=$?; printf 'RELOAD %s %s\\n' \"$r\" \"$(printf '%s' \"$o\" | tail -c 400 | base64 -w 0)\"; fi",
            cmd = q(cmd)
        )
        .unwrap();
    }
}

/// Removes staged copies and releases the lock, if this run holds it.
pub fn abort(ids: &RunIds, files: &[FileWrite]) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    s.push_str("cleanup\nunlock\necho ABORTED\n");
    s
}

/// Restores each file that still has its after-hash from the plan's backup.
pub fn rollback(ids: &RunIds, owner: &str, files: &[FileWrite], reload: Option<&str>) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "-rollback");
    s.push_str("if ! mkdir -p -- \"$S\" || ! mkdir -- \"$S/lock\" 2>/dev/null; then printf 'LOCKED %s\\n' \"$(head -n 1 \"$S/lock/owner\" 2>/dev/null)\"; exit 3; fi\n");
    writeln!(s, "printf '%s\\n' {} > \"$S/lock/owner\"\nprintf '%s' \"$K\" > \"$S/lock/token\"\nB=\"$S/backups/$P\"\nn=0", q(owner)).unwrap();
    for (i, f) in files.iter().enumerate() {
        writeln!(
            s,
            "if [ -f \"$t{i}\" ]; then c=$(sha256sum < \"$t{i}\"); c=${{c%% *}}; else c=missing; fi\n\
             if [ \"$c\" = {after} ]; then\n\
             [ -f \"$B/{i}\" ] || fail 'the backup of {i} is missing'\n\
             cp -p -- \"$B/{i}\" \"$s{i}\" && sync -- \"$s{i}\" 2>/dev/null; mv -f -- \"$s{i}\" \"$t{i}\" || fail 'cannot restore {i}'\n\
             echo 'RESTORED {i}'; n=1\n\
             elif [ \"$c\" = {before} ]; then echo 'ALREADY {i}'\n\
             else printf 'CHANGED {i} %s\\n' \"$c\"; fi",
            after = q(&f.after_sha256),
            before = q(&f.before_sha256),
        )
        .unwrap();
    }
    s.push_str("if [ $n = 1 ]; then :\n");
    reload_lines(&mut s, ids.root, reload);
    s.push_str("fi\nunlock\necho DONE\n");
    s
}

/// One line of a stage, switch, abort or rollback report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Locked(String),
    Changed { file: usize, now: String },
    Staged(usize),
    Renamed { file: usize, at_ns: i128 },
    Restored(usize),
    Already(usize),
    Reload { status: i32, output: String },
    Error(String),
    Ready,
    Done,
}

/// Reads a script's report lines; unknown lines are ignored.
pub fn parse_report(out: &[u8]) -> Vec<Report> {
    let text = String::from_utf8_lossy(out);
    let mut reports = Vec::new();
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let num = |s: &str| s.split(' ').next().and_then(|n| n.parse::<usize>().ok());
        let r = match word {
            "LOCKED" => Report::Locked(rest.to_string()),
            "CHANGED" => match rest.split_once(' ') {
                Some((i, now)) => match i.parse() {
                    Ok(file) => Report::Changed { file, now: now.to_string() },
                    Err(_) => continue,
                },
                None => continue,
            },
            "STAGED" => match num(rest) {
                Some(i) => Report::Staged(i),
                None => continue,
            },
            "RESTORED" => match num(rest) {
                Some(i) => Report::Restored(i),
                None => continue,
            },
            "ALREADY" => match num(rest) {
                Some(i) => Report::Already(i),
                None => continue,
            },
            "RENAMED" => match rest.split_once(' ') {
                Some((i, t)) => match (i.parse(), t.parse()) {
                    (Ok(file), Ok(at_ns)) => Report::Renamed { file, at_ns },
                    _ => continue,
                },
                None => continue,
            },
            "RELOAD" => {
                let (status, out) = rest.split_once(' ').unwrap_or((rest, ""));
                let output = base64::engine::general_purpose::STANDARD
                    .decode(out)
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .unwrap_or_default();
                Report::Reload { status: status.parse().unwrap_or(-1), output }
            }
            "ERR" => Report::Error(rest.to_string()),
            "READY" => Report::Ready,
            "DONE" => Report::Done,
            _ => continue,
        };
        reports.push(r);
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_makes_metacharacters_inert() {
        assert_eq!(q("/etc/a b"), "'/etc/a b'");
        assert_eq!(q("$(touch /tmp/x)"), "'$(touch /tmp/x)'");
        assert_eq!(q("it's"), "\"it's\"");
        assert_eq!(q("a\nb"), "'a\nb'");
        assert_eq!(q("x\0y"), "''");
    }

    #[test]
    fn quoted_words_come_back_unchanged_through_sh() {
        for word in ["$(touch /tmp/farmctl-pwned)", "`id`", "a;b", "it's \"x\"", "line\nbreak", "*"] {
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf %s {}", q(word))).output().unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
        }
        assert!(!std::path::Path::new("/tmp/farmctl-pwned").exists());
    }

    #[test]
    fn read_state_quotes_every_path() {
        let s = read_state("/demo/r", &["/etc/$(reboot)".into(), "/etc/a;b".into()]);
        assert!(s.contains("for f in '/demo/r/etc/$(reboot)' '/demo/r/etc/a;b'; do"), "{s}");
    }

    #[test]
    fn read_state_output_parses() {
        let out = b"H ivr-1\nT 1000000000000\nM\nF 644 root adm\naGVsbG8K\nOK\nU permission denied\n";
        let paths = vec!["/a".to_string(), "/b".to_string(), "/c".to_string()];
        let st = parse_read_state(out, &paths, 999_990, 1_000_010).unwrap();
        assert_eq!(st.hostname, "ivr-1");
        assert_eq!(st.clock_offset_ms, Some(0));
        assert_eq!(st.files["/a"], FileState::Missing);
        match &st.files["/b"] {
            FileState::Present(f) => {
                assert_eq!(f.content, b"hello\n");
                assert_eq!(f.mode, "644");
                assert_eq!(f.group, "adm");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(st.files["/c"], FileState::Unreadable("permission denied".into()));
        assert!(parse_read_state(b"H x\nT 1\nF 644 a b\nYWJj\nX\n", &paths[..1], 0, 0).is_err());
    }

    fn ids() -> RunIds<'static> {
        RunIds { root: "", state_dir: "/var/lib/farmctl", plan_id: "abc123", token: "tok" }
    }

    fn one() -> Vec<FileWrite> {
        vec![FileWrite { path: "/etc/x y.conf".into(), before_sha256: "b".repeat(64), after_sha256: "a".repeat(64), len: 12 }]
    }

    #[test]
    fn stage_checks_before_writing_and_reads_exact_lengths() {
        let s = stage(&ids(), "me@ws pid=1", &one());
        let check = s.find("CHANGED 0").unwrap();
        let write = s.find("head -c 12 >").unwrap();
        assert!(check < write);
        assert!(s.contains("readlink -f -- '/etc/x y.conf'"));
        assert!(s.contains("printf '%s\\n' 'me@ws pid=1' > \"$S/lock/owner\""));
        assert!(!s.contains("mv -f"), "staging never renames into place");
    }

    #[test]
    fn switch_quotes_the_reload_and_renames_after_checks() {
        let cmd = "systemctl reload 'ivr'; echo $HOME";
        let s = switch(&ids(), &one(), Some(cmd));
        assert!(s.find("CHANGED 0").unwrap() < s.find("mv -f").unwrap());
        assert!(s.contains(&format!("$(sh -c {} 2>&1)", q(cmd))), "{s}");
        let local = switch(&RunIds { root: "/tmp/r oot", ..ids() }, &one(), Some("true"));
        assert!(local.contains("cd '/tmp/r oot' && sh -c true"));
        assert!(local.contains("readlink -f -- '/tmp/r oot/etc/x y.conf'"));
    }

    #[test]
    fn reports_parse() {
        let r = parse_report(b"LOCKED bob@ws pid=3\nCHANGED 1 abc\nRENAMED 0 1700000000123456789\nRELOAD 1 b29wcw==\nnoise\nDONE\n");
        assert_eq!(
            r,
            vec![
                Report::Locked("bob@ws pid=3".into()),
                Report::Changed { file: 1, now: "abc".into() },
                Report::Renamed { file: 0, at_ns: 1_700_000_000_123_456_789 },
                Report::Reload { status: 1, output: "oops".into() },
                Report::Done
            ]
        );
    }
}
