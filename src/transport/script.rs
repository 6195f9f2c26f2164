//! The POSIX sh snippets farmctl sends to hosts, built by pure functions.
//!
//! Every host name, path, hash and command is quoted with `shlex` before it is
//! put into a script; nothing from the farm file or a plan reaches a shell
//! unquoted. Scripts report line by line on stdout; the `parse_*` functions
//! read those lines back. Needs only sh, coreutils (`sha256sum`, `stat`,
//! `base64`, `head -c`, `readlink -f`) and `mv`.

use crate::live::{FileInfo, FileState, LiveHost, Unreadable};
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
    Ok(LiveHost { hostname, clock_offset_ms, clock_uncertainty_ms: (received_ms - sent_ms).max(0) / 2, files })
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
}

fn prelude(s: &mut String, ids: &RunIds, files: &[FileWrite], staged_suffix: &str) {
    writeln!(s, "S={}\nP={}\nK={}\nN={}", q(&on_host(&ids.root, &ids.state_dir)), q(&ids.plan_id), q(&ids.token), q(&ids.host)).unwrap();
    // Messages in C, so that the errno words can be read back; the operator's umask is kept for reloads.
    s.push_str("export LC_ALL=C\nU=$(umask)\numask 077\n");
    for (i, f) in files.iter().enumerate() {
        // The target (symlinks resolved, so the link survives) and its staged sibling.
        writeln!(
            s,
            "t{i}=$(readlink -f -- {p}) || t{i}={p}\ns{i}=\"${{t{i}%/*}}/.${{t{i}##*/}}.farmctl-$N@$P{suffix}\"",
            p = q(&on_host(&ids.root, &f.path)),
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

/// Hashes every listed file in one `sha256sum` and compares the lot; only
/// when that differs does it check file by file, to name what changed.
fn cas_checks(s: &mut String, files: &[FileWrite], hash_of: impl Fn(&FileWrite) -> &str) {
    batch_hashes(s, files.iter().map(&hash_of), (0..files.len()).map(|i| format!("\"$t{i}\"")));
    s.push_str("bad=0\nif [ \"$G\" != \"$E\" ]; then\n");
    for (i, f) in files.iter().enumerate() {
        writeln!(
            s,
            "if [ -f \"$t{i}\" ]; then c=$(sha256sum < \"$t{i}\") || fail 'cannot read {i}'; c=${{c%% *}}; else c=missing; fi\n\
             [ \"$c\" = {h} ] || {{ printf 'CHANGED {i} %s\\n' \"$c\"; bad=1; }}",
            h = q(hash_of(f))
        )
        .unwrap();
    }
    s.push_str("fi\n");
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
    stage_body(&mut s, owner, files);
    s.push_str("echo READY\n");
    s
}

/// [`stage`] and then [`switch`] with [`Trigger::Word`], in one command: one
/// session per host for the whole write. The workstation learns that the host
/// is staged from its `ARMED` line.
pub fn stage_and_switch(ids: &RunIds, owner: &str, files: &[FileWrite], reload: Option<&str>) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    stage_body(&mut s, owner, files);
    switch_body(&mut s, ids, files, reload, Trigger::Word);
    s
}

fn stage_body(s: &mut String, owner: &str, files: &[FileWrite]) {
    s.push_str(
        "e=$(mkdir -p -- \"$S\" 2>&1) || { printf 'ERR cannot create the state directory %s: %s\\n' \"$S\" \"$e\"; exit 1; }\n\
         chmod 700 -- \"$S\" 2>/dev/null\n\
         if ! e=$(mkdir -- \"$S/lock\" 2>&1); then\n\
         if [ -d \"$S/lock\" ]; then printf 'LOCKED %s\\n' \"$(head -n 1 \"$S/lock/owner\" 2>/dev/null)\"; exit 3; fi\n\
         printf 'ERR cannot take the lock in %s: %s\\n' \"$S\" \"$e\"; exit 1; fi\n",
    );
    writeln!(s, "printf '%s\\n' {} > \"$S/lock/owner\"\nprintf '%s' \"$K\" > \"$S/lock/token\"", q(owner)).unwrap();
    // Holding the lock, no other farmctl is at work here: staged copies left by a crash go.
    let leftovers: Vec<String> = (0..files.len()).map(|i| format!("\"${{t{i}%/*}}/.${{t{i}##*/}}.farmctl-$N@\"*")).collect();
    writeln!(s, "rm -f -- {}", leftovers.join(" ")).unwrap();
    cas_checks(s, files, |f| &f.before_sha256);
    s.push_str("if [ $bad = 1 ]; then unlock; exit 4; fi\n");
    s.push_str("B=\"$S/backups/$P\"\ne=$(mkdir -p -- \"$B\" 2>&1) || fail \"cannot create the backup directory: $e\"\n");
    for (i, f) in files.iter().enumerate() {
        // The error words (errno's text) travel back, so the cause is read, not guessed.
        writeln!(s, "e=$(head -c {len} 2>&1 > \"$s{i}\") || fail \"cannot write the staged copy of {i}: $e\"", len = f.len).unwrap();
    }
    let staged = || (0..files.len()).map(|i| format!("\"$s{i}\""));
    let targets = || (0..files.len()).map(|i| format!("\"$t{i}\""));
    // Every staged copy is whole, or the write failed (a full disk can truncate silently).
    batch_hashes(s, files.iter().map(|f| f.after_sha256.as_str()), staged());
    s.push_str("[ \"$G\" = \"$E\" ] || fail 'a staged copy does not hold the planned content: it was cut short or changed while staging'\n");
    // Each copy gets its target's mode and owner: one stat for all targets, one for all copies.
    writeln!(
        s,
        "W=$(stat -L -c '%a %u:%g' -- {t}) || fail 'cannot read the mode of a target'\n\
         H=$(stat -c '%u:%g' -- {c}) || fail 'cannot read a staged copy'\n\
         i=0\n\
         while read -r mode own; do eval \"m$i=\\$mode o$i=\\$own\"; i=$((i+1)); done <<FARMCTL_EOF\n$W\nFARMCTL_EOF\n\
         i=0\n\
         while read -r own; do eval \"h$i=\\$own\"; i=$((i+1)); done <<FARMCTL_EOF\n$H\nFARMCTL_EOF",
        t = targets().collect::<Vec<_>>().join(" "),
        c = staged().collect::<Vec<_>>().join(" "),
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

/// What makes a staged switch fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Print `ARMED`, then wait for `go` (or `abort`) on stdin: the
    /// workstation fires every host together over the connections it holds.
    Word,
    /// Sleep on the host until this instant (ns since the epoch, host clock):
    /// for `apply --detach`, when the workstation may be gone.
    At(i128),
}

/// Re-checks every before-hash right before renaming the staged copies into
/// place, records the time of each rename, runs the reload and drops the lock.
pub fn switch(ids: &RunIds, files: &[FileWrite], reload: Option<&str>, trigger: Trigger) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    switch_body(&mut s, ids, files, reload, trigger);
    s
}

fn switch_body(s: &mut String, ids: &RunIds, files: &[FileWrite], reload: Option<&str>, trigger: Trigger) {
    s.push_str("[ \"$(cat \"$S/lock/token\" 2>/dev/null)\" = \"$K\" ] || { echo 'ERR this run no longer holds the host lock'; cleanup; exit 1; }\n");
    for i in 0..files.len() {
        writeln!(s, "[ -f \"$s{i}\" ] || fail 'the staged copy of {i} is gone'").unwrap();
    }
    cas_checks(s, files, |f| &f.before_sha256);
    s.push_str("if [ $bad = 1 ]; then cleanup; unlock; exit 4; fi\n");
    match trigger {
        Trigger::Word => {
            s.push_str("echo ARMED\nread -r word || word=abort\nif [ \"$word\" = check ]; then\n");
            // At the switch time: one more check on every host before any renames.
            cas_checks(s, files, |f| &f.before_sha256);
            s.push_str(
                "if [ $bad = 1 ]; then echo 'CHECKED bad'; else echo 'CHECKED ok'; fi\n\
                 read -r word || word=abort\n\
                 fi\n\
                 [ \"$word\" = go ] || { cleanup; unlock; echo ABORTED; exit 5; }\n",
            );
        }
        Trigger::At(ns) => {
            writeln!(
                s,
                "trap 'cleanup; unlock; echo CANCELLED; exit 6' TERM INT\n\
                 T={ns}\n\
                 echo ARMED\n\
                 while :; do\n\
                 now=$(date +%s%N); d=$((T - now))\n\
                 [ \"$d\" -le 0 ] && break\n\
                 if [ \"$d\" -gt 3000000000 ]; then sleep $((d / 1000000000 - 2)) & wait $!\n\
                 else sleep \"$(printf '%d.%09d' $((d / 1000000000)) $((d % 1000000000)))\" & wait $!; fi\n\
                 done\n\
                 trap - TERM INT"
            )
            .unwrap();
            // The files may have changed while this waited.
            cas_checks(s, files, |f| &f.before_sha256);
            s.push_str("if [ $bad = 1 ]; then cleanup; unlock; exit 4; fi\n");
        }
    }
    for i in 0..files.len() {
        writeln!(
            s,
            "if e=$(mv -f -- \"$s{i}\" \"$t{i}\" 2>&1); then printf 'RENAMED {i} %s\\n' \"$(date +%s%N)\"; else printf 'ERR cannot rename {i}: %s\\n' \"$e\"; cleanup; unlock; exit 1; fi"
        )
        .unwrap();
    }
    reload_lines(s, &ids.root, reload);
    s.push_str("unlock\necho DONE\n");
}

/// Starts `job` (a [`switch`] with [`Trigger::At`], given on stdin) in the
/// background on the host, detached from this session. Its log, pid and
/// time live in `$S/armed/`.
pub fn detach(ids: &RunIds, at: &str) -> String {
    let mut s = String::new();
    writeln!(s, "S={}\nP={}\nJ=\"$S/armed/$P\"", q(&on_host(&ids.root, &ids.state_dir)), q(&ids.plan_id)).unwrap();
    s.push_str("U=$(umask)\numask 077\nmkdir -p -- \"$S/armed\" || { echo 'ERR cannot create the armed directory'; exit 1; }\n");
    s.push_str("cat > \"$J.sh\" || { echo 'ERR cannot write the switch job'; exit 1; }\n");
    writeln!(s, "printf '%s\\n' {} > \"$J.at\"", q(at)).unwrap();
    s.push_str(
        "rm -f -- \"$J.log\" \"$J.cancelled\"\n\
         if command -v setsid >/dev/null 2>&1; then (umask \"$U\"; exec setsid nohup sh \"$J.sh\" < /dev/null) > \"$J.log\" 2>&1 &\n\
         else (umask \"$U\"; exec nohup sh \"$J.sh\" < /dev/null) > \"$J.log\" 2>&1 & fi\n\
         echo $! > \"$J.pid\"\n\
         i=0; while [ $i -lt 100 ] && ! grep -q '^ARMED$' \"$J.log\" 2>/dev/null; do\n\
         grep -q '^ERR\\|^CHANGED' \"$J.log\" 2>/dev/null && break; sleep 0.05; i=$((i+1)); done\n\
         cat \"$J.log\"\n",
    );
    s
}

/// Reports every detached switch job on the host, with its log.
pub fn status(root: &str, state_dir: &str) -> String {
    let mut s = String::new();
    writeln!(s, "S={}", q(&on_host(root, state_dir))).unwrap();
    s.push_str(
        "for at in \"$S\"/armed/*.at; do\n\
         [ -f \"$at\" ] || continue\n\
         J=${at%.at}; id=${J##*/}\n\
         pid=$(cat \"$J.pid\" 2>/dev/null)\n\
         if grep -q '^DONE$' \"$J.log\" 2>/dev/null; then st=fired\n\
         elif grep -q '^CANCELLED$' \"$J.log\" 2>/dev/null || [ -f \"$J.cancelled\" ]; then st=cancelled\n\
         elif [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null; then st=armed\n\
         else st=failed; fi\n\
         printf 'JOB %s %s %s\\n' \"$id\" \"$st\" \"$(cat \"$at\")\"\n\
         sed -n 's/^\\(RENAMED\\|ERR\\|CHANGED\\|RELOAD\\) /\\1 /p' \"$J.log\" 2>/dev/null | sed \"s/^/LOG $id /\"\n\
         done\n\
         echo DONE\n",
    );
    s
}

/// Disarms every detached switch that has not fired: its job removes its
/// staged copies and releases the lock.
pub fn cancel(root: &str, state_dir: &str) -> String {
    let mut s = String::new();
    writeln!(s, "S={}", q(&on_host(root, state_dir))).unwrap();
    s.push_str(
        "for at in \"$S\"/armed/*.at; do\n\
         [ -f \"$at\" ] || continue\n\
         J=${at%.at}; id=${J##*/}\n\
         grep -q '^DONE$\\|^CANCELLED$' \"$J.log\" 2>/dev/null && continue\n\
         pid=$(cat \"$J.pid\" 2>/dev/null)\n\
         if [ -n \"$pid\" ] && kill -TERM \"$pid\" 2>/dev/null; then\n\
         i=0; while [ $i -lt 100 ] && ! grep -q '^CANCELLED$\\|^DONE$' \"$J.log\" 2>/dev/null; do sleep 0.05; i=$((i+1)); done\n\
         fi\n\
         touch \"$J.cancelled\"\n\
         if grep -q '^DONE$' \"$J.log\" 2>/dev/null; then echo \"FIRED $id\"; else echo \"CANCELLED $id\"; fi\n\
         done\n\
         echo DONE\n",
    );
    s
}

fn reload_lines(s: &mut String, root: &str, reload: Option<&str>) {
    if let Some(cmd) = reload {
        let cd = if root.is_empty() { String::new() } else { format!("cd {} && ", q(root)) };
        // Files a reload creates get the host's usual mode, not the 077 that staging uses.
        writeln!(
            s,
            "if o=$(umask \"${{U:-022}}\"; {cd}sh -c {cmd} 2>&1); then echo 'RELOAD 0'; else r=$?; printf 'RELOAD %s %s\\n' \"$r\" \"$(printf '%s' \"$o\" | tail -c 400 | base64 -w 0)\"; fi",
            cmd = q(cmd)
        )
        .unwrap();
    }
}

/// Removes the host lock if `holder` (its owner line) still holds it, unless
/// a detached switch is armed there: an armed switch's lock is never stale,
/// though the farmctl that armed it has exited.
pub fn break_lock(root: &str, state_dir: &str, holder: &str) -> String {
    let mut s = String::new();
    writeln!(s, "S={}", q(&on_host(root, state_dir))).unwrap();
    s.push_str(ARMED_JOB_GUARD);
    writeln!(s, "if [ \"$(head -n 1 \"$S/lock/owner\" 2>/dev/null)\" = {} ]; then rm -rf -- \"$S/lock\" && echo UNLOCKED; fi\necho DONE", q(holder)).unwrap();
    s
}

/// Stops a script with `ARMEDJOB id` when a detached switch is armed and alive.
const ARMED_JOB_GUARD: &str = "for p in \"$S\"/armed/*.pid; do\n\
     [ -f \"$p\" ] || continue; J=${p%.pid}\n\
     grep -q '^DONE$\\|^CANCELLED$' \"$J.log\" 2>/dev/null && continue\n\
     kill -0 \"$(cat \"$p\")\" 2>/dev/null && { echo \"ARMEDJOB ${J##*/}\"; echo DONE; exit 0; }\n\
     done\n";

/// For `farmctl unlock`: names the lock's holder and removes it with every
/// staged copy beside `paths`, unless a detached switch is armed.
pub fn unlock(root: &str, state_dir: &str, host: &str, paths: &[String]) -> String {
    let mut s = String::new();
    writeln!(s, "S={}\nN={}", q(&on_host(root, state_dir)), q(host)).unwrap();
    s.push_str(
        "[ -d \"$S/lock\" ] || { echo 'FREE'; echo DONE; exit 0; }\n\
         printf 'HOLDER %s\\n' \"$(head -n 1 \"$S/lock/owner\" 2>/dev/null)\"\n",
    );
    s.push_str(ARMED_JOB_GUARD);
    for p in paths {
        writeln!(s, "t=$(readlink -f -- {p}) || t={p}; rm -f -- \"${{t%/*}}/.${{t##*/}}.farmctl-$N@\"*", p = q(&on_host(root, p))).unwrap();
    }
    s.push_str("rm -rf -- \"$S/lock\" && echo UNLOCKED\necho DONE\n");
    s
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
    reload_lines(&mut s, &ids.root, reload);
    s.push_str("fi\nunlock\necho DONE\n");
    s
}

/// Splits a script's error into its words and the cause its errno text names.
pub fn error_cause(e: &str) -> (String, Option<super::protocol::Cause>) {
    use super::protocol::Cause;
    let cause = if e.contains("No space left on device") || e.contains("Disc quota exceeded") {
        Some(Cause::NoSpace)
    } else if e.contains("Permission denied") || e.contains("Operation not permitted") {
        Some(Cause::PermissionDenied)
    } else if e.contains("Read-only file system") {
        Some(Cause::ReadOnly)
    } else {
        None
    };
    (e.to_string(), cause)
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
    Armed,
    Aborted,
    Done,
    /// From `status`: a detached job, its state and its time.
    Job { id: String, state: String, at: String },
    /// From `status`: a line of a detached job's log.
    JobLog { id: String, line: String },
    Cancelled(String),
    Fired(String),
    Holder(String),
    ArmedJob(String),
    Unlocked,
    Free,
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
            "ARMED" => Report::Armed,
            "ABORTED" => Report::Aborted,
            "DONE" => Report::Done,
            "JOB" => {
                let mut p = rest.splitn(3, ' ');
                match (p.next(), p.next(), p.next()) {
                    (Some(id), Some(state), Some(at)) => Report::Job { id: id.into(), state: state.into(), at: at.into() },
                    _ => continue,
                }
            }
            "LOG" => match rest.split_once(' ') {
                Some((id, line)) => Report::JobLog { id: id.into(), line: line.into() },
                None => continue,
            },
            "CANCELLED" => Report::Cancelled(rest.to_string()),
            "HOLDER" => Report::Holder(rest.to_string()),
            "ARMEDJOB" => Report::ArmedJob(rest.to_string()),
            "UNLOCKED" => Report::Unlocked,
            "FREE" => Report::Free,
            "FIRED" => Report::Fired(rest.to_string()),
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
        assert_eq!(st.files["/c"], FileState::Unreadable(Unreadable::PermissionDenied));
        assert!(parse_read_state(b"H x\nT 1\nF 644 a b\nYWJj\nX\n", &paths[..1], 0, 0).is_err());
    }

    fn ids() -> RunIds {
        RunIds { root: "".into(), state_dir: "/var/lib/farmctl/hosts/ivr-1".into(), plan_id: "abc123".into(), token: "tok".into(), host: "ivr-1".into() }
    }

    fn one() -> Vec<FileWrite> {
        vec![FileWrite { path: "/etc/x y.conf".into(), before_sha256: "b".repeat(64), after_sha256: "a".repeat(64), len: 12 }]
    }

    #[test]
    fn stage_checks_before_writing_and_reads_exact_lengths() {
        let s = stage(&ids(), "me@ws pid=1", &one());
        let check = s.find("CHANGED 0").unwrap();
        let write = s.find("head -c 12 2>&1 >").unwrap();
        assert!(check < write);
        assert!(s.contains("readlink -f -- '/etc/x y.conf'"));
        assert!(s.contains("printf '%s\\n' 'me@ws pid=1' > \"$S/lock/owner\""));
        assert!(!s.contains("mv -f"), "staging never renames into place");
        assert!(s.contains(".farmctl-$N@$P"), "staged copies are named per farm host: {s}");
    }

    #[test]
    fn write_errors_carry_the_errno_text_and_its_cause() {
        // A staged copy that cannot be created says why, in the host's own words.
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let target = ro.join("f.conf");
        std::fs::write(&target, "x\n").unwrap();
        let files = vec![FileWrite { path: target.display().to_string(), before_sha256: crate::farm::sha256_hex(b"x\n"), after_sha256: "a".repeat(64), len: 2 }];
        let ids = RunIds { state_dir: dir.path().join("state").display().to_string(), ..ids() };
        let s = stage(&ids, "me", &files);
        // Read-only for everyone but root: make the write fail with EACCES or EROFS-like errors through a file in the way.
        std::fs::create_dir(ro.join(".f.conf.farmctl-ivr-1@abc123")).unwrap();
        let out = std::process::Command::new("sh").arg("-c").arg(&s).stdin(std::process::Stdio::null()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = parse_report(&out.stdout).into_iter().find_map(|r| if let Report::Error(e) = r { Some(e) } else { None }).unwrap_or_else(|| panic!("no ERR line: {text}"));
        assert!(err.contains("cannot write the staged copy of 0: ") && err.contains("Is a directory"), "{err}");
        assert_eq!(error_cause("cannot write: No space left on device").1, Some(super::super::protocol::Cause::NoSpace));
        assert_eq!(error_cause("cannot create: Permission denied").1, Some(super::super::protocol::Cause::PermissionDenied));
        assert_eq!(error_cause("cannot write: Is a directory").1, None, "no cause is guessed");
    }

    #[test]
    fn a_reload_runs_under_the_hosts_umask_not_the_staging_one() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made-by-reload");
        let mut s = String::from("U=0022\numask 077\n");
        reload_lines(&mut s, "", Some(&format!("touch {}", q(&made.display().to_string()))));
        let out = std::process::Command::new("sh").arg("-c").arg(&s).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("RELOAD 0"), "{}", String::from_utf8_lossy(&out.stdout));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn switch_quotes_the_reload_and_renames_after_checks() {
        let cmd = "systemctl reload 'ivr'; echo $HOME";
        let s = switch(&ids(), &one(), Some(cmd), Trigger::Word);
        assert!(s.find("echo ARMED").unwrap() < s.find("mv -f").unwrap());
        assert!(s.find("read -r word").unwrap() < s.find("mv -f").unwrap());
        let check = s.find("if [ \"$word\" = check ]").unwrap();
        assert!(s[check..].find("CHANGED 0").unwrap() < s[check..].find("CHECKED ok").unwrap());
        assert!(s.find("CHANGED 0").unwrap() < s.find("mv -f").unwrap());
        assert!(s.contains(&format!("{{U:-022}}\"; sh -c {} 2>&1)", q(cmd))), "{s}");
        let local = switch(&RunIds { root: "/tmp/r oot".into(), ..ids() }, &one(), Some("true"), Trigger::Word);
        assert!(local.contains("cd '/tmp/r oot' && sh -c true"));
        assert!(local.contains("readlink -f -- '/tmp/r oot/etc/x y.conf'"));
    }

    #[test]
    fn a_timed_switch_sleeps_interruptibly_and_checks_again_before_renaming() {
        let s = switch(&ids(), &one(), None, Trigger::At(1_800_000_000_000_000_000));
        assert!(s.contains("T=1800000000000000000"));
        assert!(s.contains("& wait $!"), "sleep must not block the cancel trap");
        let wait = s.find("while :; do").unwrap();
        assert!(s[wait..].find("CHANGED 0").unwrap() < s[wait..].find("mv -f").unwrap());
        assert!(!s.contains("read -r word"));
    }

    #[test]
    fn detach_quotes_the_time_and_reads_the_job_from_stdin() {
        let s = detach(&ids(), "2026-12-01T02:00:00Z; reboot");
        assert!(s.contains("printf '%s\\n' '2026-12-01T02:00:00Z; reboot' > \"$J.at\""), "{s}");
        assert!(s.contains("cat > \"$J.sh\""));
        assert!(s.contains("setsid nohup sh"));
    }

    #[test]
    fn batched_hashes_match_without_the_file_by_file_path() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a b"), dir.path().join("c\\d"));
        std::fs::write(&a, "one\n").unwrap();
        std::fs::write(&b, "two\n").unwrap();
        let files: Vec<FileWrite> = [(&a, "one\n"), (&b, "two\n")]
            .iter()
            .map(|(p, c)| FileWrite { path: p.display().to_string(), before_sha256: crate::farm::sha256_hex(c.as_bytes()), after_sha256: String::new(), len: 0 })
            .collect();
        let mut s = format!("fail() {{ echo \"FAIL $1\"; exit 1; }}\nt0={}\nt1={}\n", q(&files[0].path), q(&files[1].path));
        cas_checks(&mut s, &files, |f| &f.before_sha256);
        s.push_str("[ \"$G\" = \"$E\" ] && echo FAST\necho bad=$bad\n");
        let out = std::process::Command::new("sh").arg("-c").arg(&s).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "FAST\nbad=0\n", "{s}");
        std::fs::write(&b, "changed\n").unwrap();
        let out = std::process::Command::new("sh").arg("-c").arg(&s).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.starts_with("CHANGED 1 ") && text.ends_with("bad=1\n"), "{text}");
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
