//! The POSIX sh snippets farmctl sends to hosts, built by pure functions.
//!
//! Every host name, path, hash and command is quoted with `shlex` before it is
//! put into a script; nothing from the farm file or a plan reaches a shell
//! unquoted. Scripts report line by line on stdout; the `parse_*` functions
//! read those lines back. Needs only sh, coreutils (`sha256sum`, `stat`,
//! `base64`, `dd`, `readlink -f`) and `mv`, as GNU or BusyBox has them.

use crate::live::{FileInfo, FileState, LiveHost, Unreadable};
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt::Write;

mod jobs;
mod report;
mod service;
mod switch;
#[cfg(test)]
mod tests;

pub use jobs::{break_lock, cancel, detach, status, unlock, upgrade};
pub use report::{error_cause, parse_report, Report};
pub use service::{address, lease, put_file, reach, AddressOp, LeaseOp};
pub use switch::{switch, Trigger};
use switch::switch_body;

/// Quotes one word for sh. NUL bytes cannot be passed to a shell at all.
pub fn q(s: &str) -> String {
    shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_else(|_| "''".to_string())
}

/// A path on the host, under `root` for the local transport ("" over SSH).
pub fn on_host(root: &str, path: &str) -> String {
    format!("{root}{path}")
}

/// Reads the hostname, the clock and every managed file, in one command.
pub fn read_state(root: &str, state_dir: &str, paths: &[String], probe: Option<&str>) -> String {
    let mut s = String::new();
    now_ns(&mut s);
    s.push_str(
        "printf 'H %s\\n' \"$(cat /proc/sys/kernel/hostname 2>/dev/null || uname -n)\"\n\
         printf 'T %s\\n' \"$(now_ns)\"\n",
    );
    if let Some(probe) = probe {
        // The installed version, by the rollout's own probe: its first line, or why it failed.
        let cd = if root.is_empty() { String::new() } else { format!("cd {} && ", q(root)) };
        writeln!(s, "if v=$({cd}sh -c {} 2>/dev/null); then printf 'V ok %s\\n' \"$(printf '%s\\n' \"$v\" | head -n 1)\"; else printf 'V fail %s\\n' \"$?\"; fi", q(probe)).unwrap();
    }
    // Switches armed with `apply --detach` that have not fired or been cancelled.
    writeln!(s, "S={}", q(&on_host(root, state_dir))).unwrap();
    s.push_str(
        "for p in \"$S\"/armed/*.pid; do\n\
         [ -f \"$p\" ] || continue; J=${p%.pid}\n\
         grep -qE '^(DONE|CANCELLED)$' \"$J.log\" 2>/dev/null && continue\n\
         kill -0 \"$(cat \"$p\")\" 2>/dev/null && printf 'A %s %s\\n' \"${J##*/}\" \"$(cat \"$J.at\" 2>/dev/null)\"\n\
         done\n",
    );
    if root.is_empty() {
        // The IPv4 addresses the host holds (a service's virtual address among them).
        s.push_str("ip -4 addr show 2>/dev/null | while read -r a b rest; do [ \"$a\" = inet ] && printf 'I %s\\n' \"${b%/*}\"; done\n");
    }
    s.push_str("for f in");
    for p in paths {
        write!(s, " {}", q(&on_host(root, p))).unwrap();
    }
    s.push_str("; do\n");
    if !root.is_empty() {
        // A local host reads nothing outside its root, whatever a symlink says.
        writeln!(s, "case \"$(readlink -f -- \"$f\")\" in {}/*|'') ;; *) echo 'U outside the host root'; continue ;; esac", q(root)).unwrap();
    }
    s.push_str(
        "if [ ! -e \"$f\" ] && [ ! -L \"$f\" ]; then echo M\n\
         elif [ ! -f \"$f\" ]; then echo 'U not a regular file'\n\
         elif [ ! -r \"$f\" ]; then echo 'U permission denied'\n\
         else\n\
         if [ -L \"$f\" ]; then d=$(readlink -f -- \"$f\"); d=${d%/*}; else d=${f%/*}; fi\n\
         if [ -w \"${d:-/}\" ]; then w=w; else w=r; fi\n\
         printf 'F %s %s\\n' \"$(stat -L -c '%a %U %G' -- \"$f\")\" \"$w\"\n\
         if base64 -w 0 < \"$f\"; then printf '\\nOK\\n'; else printf '\\nX\\n'; fi\n\
         fi\n\
         done\n",
    );
    s
}

/// Parses the output of [`read_state`]. `sent_ms`/`received_ms` bracket the command, for the clock offset.
pub fn parse_read_state(out: &[u8], paths: &[String], sent_ms: i64, received_ms: i64) -> Result<LiveHost, String> {
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
    let mut lines = lines.peekable();
    let version = match lines.peek().and_then(|l| l.strip_prefix("V ")) {
        Some(v) => {
            let v = v.to_string();
            lines.next();
            Some(match v.strip_prefix("ok ") {
                Some(ver) if !ver.trim().is_empty() => Ok(ver.trim().to_string()),
                Some(_) => Err("the probe printed nothing".to_string()),
                None => Err(format!("the probe failed (exit {})", v.trim_start_matches("fail ").trim())),
            })
        }
        None => None,
    };
    let mut armed = Vec::new();
    while let Some(a) = lines.peek().and_then(|l| l.strip_prefix("A ")) {
        let (id, at) = a.split_once(' ').unwrap_or((a, ""));
        armed.push((id.to_string(), at.to_string()));
        lines.next();
    }
    let mut addresses = Vec::new();
    while let Some(a) = lines.peek().and_then(|l| l.strip_prefix("I ")) {
        addresses.push(a.trim().to_string());
        lines.next();
    }
    let mut files = BTreeMap::new();
    for path in paths {
        let line = lines.next().ok_or_else(|| format!("the host's answer ended before {path}"))?;
        let state = if line == "M" {
            FileState::Missing
        } else if let Some(why) = line.strip_prefix("U ") {
            FileState::Unreadable(Unreadable::parse(why))
        } else if let Some(meta) = line.strip_prefix("F ") {
            let mut m = meta.split(' ');
            let (mode, owner, group) = (m.next().unwrap_or(""), m.next().unwrap_or(""), m.next().unwrap_or(""));
            // `r`: this user may not replace it (an answer without the word says nothing against it).
            let replaceable = m.next() != Some("r");
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
                replaceable,
                owner: owner.to_string(),
                group: group.to_string(),
            })
        } else {
            return Err(format!("unexpected answer for {path}: {line:?}"));
        };
        files.insert(path.clone(), state);
    }
    Ok(LiveHost { hostname, clock_offset_ms, clock_uncertainty_ms: (received_ms - sent_ms).max(0) / 2, files, armed, version, addresses })
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
pub struct RunIds {
    pub root: String,
    /// This farm host's own state directory (see [`super::host_state_dir`]).
    pub state_dir: String,
    /// Names the backups and staged files: the plan id.
    pub plan_id: String,
    /// Proves lock ownership between the stage and switch commands.
    pub token: String,
    /// The farm host this run writes for: names its staged copies, so that two
    /// farm hosts on one machine never take each other's for leftovers.
    pub host: String,
    /// A watcher's write: the service and its lease epoch, checked against
    /// the newest epoch that wrote here (see [`service::fence`]).
    pub fence: Option<(String, u64)>,
}

fn prelude(s: &mut String, ids: &RunIds, files: &[FileWrite], staged_suffix: &str) {
    writeln!(s, "S={}\nP={}\nK={}\nN={}", q(&on_host(&ids.root, &ids.state_dir)), q(&ids.plan_id), q(&ids.token), q(&ids.host)).unwrap();
    // Messages in C, so that the errno words can be read back; the operator's umask is kept for reloads.
    s.push_str("export LC_ALL=C\nU=$(umask)\numask 077\n");
    for (i, f) in files.iter().enumerate() {
        // The target (symlinks resolved, so the link survives) and its staged sibling.
        // Resolving costs a process: only a symlink needs it, or a local host's
        // path, whose confinement is checked on the resolved path.
        let p = q(&on_host(&ids.root, &f.path));
        if ids.root.is_empty() {
            writeln!(s, "t{i}={p}; if [ -L \"$t{i}\" ]; then t{i}=$(readlink -f -- {p}) || t{i}={p}; fi").unwrap();
        } else {
            writeln!(s, "t{i}=$(readlink -f -- {p}) || t{i}={p}").unwrap();
        }
        writeln!(s, "s{i}=\"${{t{i}%/*}}/.${{t{i}##*/}}.farmctl-$N@$P{staged_suffix}\"").unwrap();
    }
    if !ids.root.is_empty() {
        // A local host: every resolved target must stay under its root.
        for i in 0..files.len() {
            writeln!(s, "case \"$t{i}\" in {r}/*) ;; *) echo 'ERR {i} leads outside the host root'; exit 1 ;; esac", r = q(&ids.root)).unwrap();
        }
    }
    s.push_str("cleanup() {");
    for i in 0..files.len() {
        write!(s, " rm -f -- \"$s{i}\";").unwrap();
    }
    s.push_str(" :; }\n");
    // `read`, a builtin, not `cat`: every process counts on a busy host.
    s.push_str("holds() { tok=; read -r tok 2>/dev/null < \"$S/lock/token\"; [ \"$tok\" = \"$K\" ]; }\n");
    s.push_str("unlock() { holds && rm -rf -- \"$S/lock\"; }\n");
    lock_holder(s);
    s.push_str("fail() { printf 'ERR %s\\n' \"$1\"; cleanup; unlock; exit 1; }\n");
    // A dropped session or a signal mid-way leaves no staged copy and no lock behind.
    s.push_str("trap 'cleanup; unlock; exit 129' HUP PIPE TERM INT\n");
}

/// Hashes every listed file in one `sha256sum` and compares the lot; only
/// when that differs does it check file by file, to name what changed.
fn cas_checks(s: &mut String, files: &[FileWrite], hash_of: impl Fn(&FileWrite) -> &str) {
    if files.len() <= FEW {
        // One `sha256sum` per file is fewer processes than the batch's pipeline.
        s.push_str("bad=0\n");
        file_checks(s, files, hash_of);
        return;
    }
    batch_hashes(s, files.iter().map(&hash_of), (0..files.len()).map(|i| format!("\"$t{i}\"")));
    s.push_str("bad=0\nif [ \"$G\" != \"$E\" ]; then\n");
    file_checks(s, files, hash_of);
    s.push_str("fi\n");
}

/// Up to this many files, each is hashed on its own; beyond, in one batch.
const FEW: usize = 3;

/// Hashes each file and names each one that differs (`CHANGED i HASH`), setting `bad`.
fn file_checks(s: &mut String, files: &[FileWrite], hash_of: impl Fn(&FileWrite) -> &str) {
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

/// Sets `E` to the expected hashes and `G` to the hashes of `paths`, one per line.
fn batch_hashes<'a>(s: &mut String, expected: impl Iterator<Item = &'a str>, paths: impl Iterator<Item = String>) {
    let expected: Vec<&str> = expected.collect();
    let paths: Vec<String> = paths.collect();
    writeln!(
        s,
        "E={}\nG=$(sha256sum -- {} 2>/dev/null | sed 's/^\\\\//' | cut -c1-64)",
        q(&expected.join("\n")),
        paths.join(" ")
    )
    .unwrap();
}

/// Takes the host lock, checks every before-hash, then writes each new content
/// (read from stdin, in order) to a dotfile beside its target with the target's
/// mode and owner, fsyncs it and backs the original up. Nothing is renamed.
pub fn stage(ids: &RunIds, owner: &str, files: &[FileWrite]) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    stage_body(&mut s, ids, owner, files);
    s.push_str("echo READY\n");
    s
}

/// [`stage`] and then [`switch`] with [`Trigger::Word`], in one command: one
/// session per host for the whole write. The workstation learns that the host
/// is staged from its `ARMED` line.
pub fn stage_and_switch(ids: &RunIds, owner: &str, files: &[FileWrite], reload: Option<&str>) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    stage_body(&mut s, ids, owner, files);
    switch_body(&mut s, ids, files, reload, Trigger::Word, true);
    s
}

fn stage_body(s: &mut String, ids: &RunIds, owner: &str, files: &[FileWrite]) {
    s.push_str(
        "if [ ! -d \"$S\" ]; then e=$(mkdir -p -- \"$S\" 2>&1) || { printf 'ERR cannot create the state directory %s: %s\\n' \"$S\" \"$e\"; exit 1; }; chmod 700 -- \"$S\" 2>/dev/null; fi\n\
         if ! e=$(mkdir -- \"$S/lock\" 2>&1); then\n\
         case $e in *[Ee]xists*) if lock_holder; then printf 'LOCKED %s\\n' \"$o\"; exit 3; fi ;;\n\
         *) printf 'ERR cannot take the lock in %s: %s\\n' \"$S\" \"$e\"; exit 1 ;; esac; fi\n",
    );
    writeln!(s, "printf '%s\\n' {} > \"$S/lock/owner\"\nprintf '%s' \"$K\" > \"$S/lock/token\"", q(owner)).unwrap();
    if let Some((service, epoch)) = &ids.fence {
        service::fence(s, service, *epoch, "unlock;");
    }
    // Holding the lock, no other farmctl is at work here: staged copies left by a crash go.
    let leftovers: Vec<String> = (0..files.len()).map(|i| format!("\"${{t{i}%/*}}/.${{t{i}##*/}}.farmctl-$N@\"*")).collect();
    // A glob that matches nothing stays as it is, and is not a file: no `rm` then.
    writeln!(s, "for x in {}; do [ -e \"$x\" ] && rm -f -- \"$x\"; done", leftovers.join(" ")).unwrap();
    cas_checks(s, files, |f| &f.before_sha256);
    s.push_str("if [ $bad = 1 ]; then unlock; exit 4; fi\n");
    replaceable(s, files);
    s.push_str("B=\"$S/backups/$P\"\ne=$(mkdir -p -- \"$B\" 2>&1) || fail \"cannot create the backup directory: $e\"\n");
    for (i, f) in files.iter().enumerate() {
        // The error words (errno's text) travel back, so the cause is read, not guessed.
        writeln!(s, "e=$({} 2>&1 > \"$s{i}\") || fail \"cannot write the staged copy of {i}: $e\"", read_exactly(f.len)).unwrap();
    }
    let staged = || (0..files.len()).map(|i| format!("\"$s{i}\""));
    let targets = || (0..files.len()).map(|i| format!("\"$t{i}\""));
    // Every staged copy is whole, or the write failed (a full disk can truncate silently).
    let short = "a staged copy does not hold the planned content: it was cut short or changed while staging";
    if files.len() <= FEW {
        for (i, f) in files.iter().enumerate() {
            writeln!(s, "c=$(sha256sum < \"$s{i}\") || fail 'cannot read a staged copy'; [ \"${{c%% *}}\" = {h} ] || fail '{short}'", h = q(&f.after_sha256)).unwrap();
        }
    } else {
        batch_hashes(s, files.iter().map(|f| f.after_sha256.as_str()), staged());
        writeln!(s, "[ \"$G\" = \"$E\" ] || fail '{short}'").unwrap();
    }
    // Each copy gets its target's mode and owner: one stat for all targets, one for all copies.
    writeln!(
        s,
        "W=$(stat -L -c '%a %u:%g' -- {t} {c}) || fail 'cannot read the mode of a target or a staged copy'\n\
         i=0\n\
         while read -r mode own; do if [ $i -lt {n} ]; then eval \"m$i=\\$mode o$i=\\$own\"; else eval \"h$((i-{n}))=\\$own\"; fi; i=$((i+1)); done <<FARMCTL_EOF\n$W\nFARMCTL_EOF",
        t = targets().collect::<Vec<_>>().join(" "),
        c = staged().collect::<Vec<_>>().join(" "),
        n = files.len(),
    )
    .unwrap();
    for (i, f) in files.iter().enumerate() {
        writeln!(
            s,
            "chmod \"$m{i}\" \"$s{i}\" || fail 'cannot keep the mode of {i}'\n\
             [ \"$h{i}\" = \"$o{i}\" ] || chown \"$o{i}\" \"$s{i}\" || fail 'cannot keep the owner of {i}'\n\
             e=$(cp -p -- \"$t{i}\" \"$B/{i}\" 2>&1) || fail \"cannot back up {i}: $e\"\n\
             printf '%s\\t%s\\n' {i} {path} >> \"$B/index\"\n\
             echo 'STAGED {i}'",
            path = q(&f.path),
        )
        .unwrap();
    }
    writeln!(s, "sync -- {} \"$B\" 2>/dev/null || sync", staged().collect::<Vec<_>>().join(" ")).unwrap();
}

pub(super) fn reload_lines(s: &mut String, root: &str, reload: Option<&str>) {
    if let Some(cmd) = reload {
        let cd = if root.is_empty() { String::new() } else { format!("cd {} && ", q(root)) };
        // Files a reload creates get the host's usual mode, not the 077 that staging uses.
        writeln!(
            s,
            "if o=$(umask \"${{U:-022}}\"; {cd}sh -c {cmd} 2>&1); then r=0; else r=$?; fi; printf 'RELOAD %s %s\\n' \"$r\" \"$(printf '%s' \"$o\" | tail -c 400 | base64 -w 0)\"",
            cmd = q(cmd)
        )
        .unwrap();
    }
}

/// Runs one operator command (a health check or a retire) and reports its status.
pub fn one_command(root: &str, cmd: &str) -> String {
    let mut s = String::new();
    reload_lines(&mut s, root, Some(cmd));
    s.push_str("echo DONE\n");
    s
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
    s.push_str("o=\nif ! mkdir -p -- \"$S\" || { ! mkdir -- \"$S/lock\" 2>/dev/null && lock_holder; }; then printf 'LOCKED %s\\n' \"$o\"; exit 3; fi\n");
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
    reload_lines(&mut s, &ids.root, reload);
    s.push_str("fi\nunlock\necho DONE\n");
    s
}


/// Before anything is staged, as root: every target can be replaced by a
/// rename. A hard link to it fails where the rename would (an immutable or
/// append-only file or directory: EPERM; a bind-mounted file: EXDEV), so a
/// host never ends with some files new and the rest refused. (A user that is
/// not root may be refused a hard link it could rename over, so it is not
/// asked; a failed rename is then put back, see `putback`.) The probe's name
/// is a staged copy's: if this run dies between the link and its removal,
/// the next run (or `unlock`) removes it with the other leftovers.
fn replaceable(s: &mut String, files: &[FileWrite]) {
    s.push_str("if [ \"$(id -u 2>/dev/null)\" = 0 ]; then\n");
    for i in 0..files.len() {
        writeln!(s, "l=\"${{t{i}%/*}}/.${{t{i}##*/}}.farmctl-$N@$P-probe\"; e=$(ln -f -- \"$t{i}\" \"$l\" 2>&1) || {{ printf 'ERR cannot replace {i}: %s\\n' \"$e\"; unlock; exit 1; }}; rm -f -- \"$l\"").unwrap();
    }
    s.push_str("fi\n");
}

/// A command that copies exactly `len` bytes of its input to its output and
/// reads no further, so that the next file's bytes stay for the next reader.
/// BusyBox's `head -c` reads ahead (a buffered read) and loses them; `dd`
/// with byte counts and full blocks does not, on GNU and BusyBox alike.
pub(super) fn read_exactly(len: usize) -> String {
    format!("dd bs=65536 count={len} iflag=count_bytes,fullblock")
}

/// `lock_holder`, after a `mkdir` of the lock in `$S` failed: sets `o` to
/// the holder's owner line and returns 0 (locked), or returns 1 when the
/// lock was let go meanwhile and this script took it after all. A lock is a
/// directory made first and its owner written just after, and let go by
/// removing both: a lock seen in between has no owner, so it is looked at
/// again for a while (about 10 s at most) before it is called a lock of an
/// unknown holder (both found by the rollout model test).
pub(super) fn lock_holder(s: &mut String) {
    s.push_str(
        "lock_holder() { n=0; while [ $n -le 10 ]; do o=$(head -n 1 \"$S/lock/owner\" 2>/dev/null); [ -n \"$o\" ] && return 0; \
         if [ -d \"$S/lock\" ]; then sleep 1; else mkdir -- \"$S/lock\" 2>/dev/null && return 1; fi; n=$((n+1)); done; return 0; }\n",
    );
}

/// `now_ns`: the host's clock in nanoseconds since the epoch, or nothing.
/// GNU `date` has `%N`; BusyBox's prints it literally, and its `adjtimex`
/// applet tells the time to the microsecond (read-only: any user may ask).
pub(super) fn now_ns(s: &mut String) {
    s.push_str(
        "now_ns() { n=$(date +%s%N); case $n in *[!0-9]*|'') set -- $(adjtimex 2>/dev/null | sed -n 's/^ *time\\.tv_[su]*sec: *//p'); if [ -n \"$2\" ]; then n=$1$(printf %06d \"$2\")000; else n=; fi ;; esac; printf '%s' \"$n\"; }\n",
    );
}
