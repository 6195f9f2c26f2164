//! Scripts for detached switches and locks: arm a job on the host, report,
//! cancel, and break a dead run's lock.

use super::{on_host, q, RunIds};
use std::fmt::Write;

/// Starts `job` (a [`switch`] with [`Trigger::At`], given on stdin) in the
/// background on the host, detached from this session: in a session of its
/// own (`setsid`), or under `nohup`, or at least ignoring SIGHUP (BusyBox
/// has `setsid` but no `nohup`). Its log, pid and time live in `$S/armed/`.
/// Patterns are POSIX ERE (`grep -E`): BRE's `\|` is a GNU extension.
pub fn detach(ids: &RunIds, at: &str) -> String {
    let mut s = String::new();
    writeln!(s, "S={}\nP={}\nJ=\"$S/armed/$P\"", q(&on_host(&ids.root, &ids.state_dir)), q(&ids.plan_id)).unwrap();
    s.push_str("U=$(umask)\numask 077\nmkdir -p -- \"$S/armed\" || { echo 'ERR cannot create the armed directory'; exit 1; }\n");
    s.push_str("cat > \"$J.sh\" || { echo 'ERR cannot write the switch job'; exit 1; }\n");
    writeln!(s, "printf '%s\\n' {} > \"$J.at\"", q(at)).unwrap();
    s.push_str(
        "rm -f -- \"$J.log\" \"$J.cancelled\"\n\
         if command -v setsid >/dev/null 2>&1; then (umask \"$U\"; trap '' HUP; exec setsid sh \"$J.sh\" < /dev/null) > \"$J.log\" 2>&1 &\n\
         elif command -v nohup >/dev/null 2>&1; then (umask \"$U\"; exec nohup sh \"$J.sh\" < /dev/null) > \"$J.log\" 2>&1 &\n\
         else (umask \"$U\"; trap '' HUP; exec sh \"$J.sh\" < /dev/null) > \"$J.log\" 2>&1 & fi\n\
         echo $! > \"$J.pid\"\n\
         i=0; while [ $i -lt 100 ] && ! grep -q '^ARMED$' \"$J.log\" 2>/dev/null; do\n\
         grep -qE '^(ERR|CHANGED)' \"$J.log\" 2>/dev/null && break; sleep 0.05; i=$((i+1)); done\n\
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
         grep -E '^(RENAMED|ERR|CHANGED|RELOAD) ' \"$J.log\" 2>/dev/null | sed \"s/^/LOG $id /\"\n\
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
         grep -qE '^(DONE|CANCELLED)$' \"$J.log\" 2>/dev/null && continue\n\
         pid=$(cat \"$J.pid\" 2>/dev/null)\n\
         if [ -n \"$pid\" ] && kill -TERM \"$pid\" 2>/dev/null; then\n\
         i=0; while [ $i -lt 100 ] && ! grep -qE '^(CANCELLED|DONE)$' \"$J.log\" 2>/dev/null; do sleep 0.05; i=$((i+1)); done\n\
         fi\n\
         touch \"$J.cancelled\"\n\
         if grep -q '^DONE$' \"$J.log\" 2>/dev/null; then echo \"FIRED $id\"; else echo \"CANCELLED $id\"; fi\n\
         done\n\
         echo DONE\n",
    );
    s
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

/// Stops a script with `ARMEDJOB id` when a detached switch is armed and
/// alive, or an upgrade is still running (`ARMEDJOB upgrade`).
const ARMED_JOB_GUARD: &str = "for p in \"$S\"/armed/*.pid; do\n\
     [ -f \"$p\" ] || continue; J=${p%.pid}\n\
     grep -qE '^(DONE|CANCELLED)$' \"$J.log\" 2>/dev/null && continue\n\
     kill -0 \"$(cat \"$p\")\" 2>/dev/null && { echo \"ARMEDJOB ${J##*/}\"; echo DONE; exit 0; }\n\
     done\n\
     [ -f \"$S/upgrade.pid\" ] && kill -0 \"$(cat \"$S/upgrade.pid\")\" 2>/dev/null && { echo 'ARMEDJOB upgrade'; echo DONE; exit 0; }\n";

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


/// Upgrades one host: takes its lock, reads the version with `probe`, and
/// unless it already is `target`, runs `command` and reads the version again.
/// Once started, the upgrade finishes and releases the lock even if this
/// session drops (SIGHUP and SIGPIPE are ignored): a killed workstation never
/// leaves a host half-upgraded by farmctl, and a resumed rollout re-reads the
/// version before touching it again.
/// With `only_from`, a host that runs neither `target` nor `only_from` is
/// left alone (`SKIPPED`): an undo never downgrades a host someone moved on.
pub fn upgrade(ids: &RunIds, owner: &str, probe: &str, target: &str, command: &str, only_from: Option<&str>) -> String {
    let mut s = String::new();
    let cd = if ids.root.is_empty() { String::new() } else { format!("cd {} && ", q(&ids.root)) };
    writeln!(s, "S={}\nK={}\nU=$(umask)\numask 077", q(&on_host(&ids.root, &ids.state_dir)), q(&ids.token)).unwrap();
    super::lock_holder(&mut s);
    s.push_str(
        "e=$(mkdir -p -- \"$S\" 2>&1) || { printf 'ERR cannot create the state directory %s: %s\\n' \"$S\" \"$e\"; exit 1; }\n\
         chmod 700 -- \"$S\" 2>/dev/null\n\
         if ! mkdir -- \"$S/lock\" 2>/dev/null && lock_holder; then printf 'LOCKED %s\\n' \"$o\"; exit 3; fi\n",
    );
    writeln!(s, "printf '%s\\n' {} > \"$S/lock/owner\"\nprintf '%s' \"$K\" > \"$S/lock/token\"", q(owner)).unwrap();
    s.push_str("trap '' HUP PIPE INT TERM\necho $$ > \"$S/upgrade.pid\"\nupgrade_umask=$U\n");
    writeln!(s, "probe() {{ ( umask \"$upgrade_umask\"; {cd}sh -c {} 2>/dev/null ) | head -n 1; }}", q(probe)).unwrap();
    writeln!(s, "v=$(probe)\nif [ \"$v\" = {t} ]; then printf 'UPTODATE %s\\n' \"$v\"", t = q(target)).unwrap();
    if let Some(from) = only_from {
        writeln!(s, "elif [ \"$v\" != {} ]; then printf 'SKIPPED %s\\n' \"$v\"", q(from)).unwrap();
    }
    s.push_str("else\nprintf 'WAS %s\\n' \"$v\"\n");
    super::reload_lines(&mut s, &ids.root, Some(command));
    s.push_str("printf 'NOW %s\\n' \"$(probe)\"\nfi\nrm -f -- \"$S/upgrade.pid\"\n[ \"$(cat \"$S/lock/token\" 2>/dev/null)\" = \"$K\" ] && rm -rf -- \"$S/lock\"\necho DONE\n");
    s
}
