//! The switch: what a staged host does between `ARMED` and its renames (the
//! workstation's word, its own clock, or a detached job's time), and the
//! renames themselves.

use super::{cas_checks, prelude, q, reload_lines, FileWrite, RunIds};
use std::fmt::Write;

/// What makes a staged switch fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Print `ARMED`, then wait on stdin for `check` and then `go`, `at NS`
    /// (switch at NS by the host's own clock) or `abort`: the workstation
    /// fires every host together over the connections it holds.
    Word,
    /// Sleep on the host until this instant (ns since the epoch, host clock):
    /// for `apply --detach`, when the workstation may be gone.
    At(i128),
}

/// Re-checks every before-hash right before renaming the staged copies into
/// place, records the time of each rename on the host (its clock right after
/// the rename, or the file's ctime, which the rename sets: the skew is the
/// hosts' own record), runs the reload and drops the lock.
pub fn switch(ids: &RunIds, files: &[FileWrite], reload: Option<&str>, trigger: Trigger) -> String {
    let mut s = String::new();
    prelude(&mut s, ids, files, "");
    switch_body(&mut s, ids, files, reload, trigger, false);
    s
}

/// Waits until T (its first argument, ns since the epoch, the host's clock),
/// never waking early, then renames each (staged, target) pair in order,
/// printing `RENAMED i NS` (the clock right after each rename) or the error
/// and exit 3 at the first failure. Started when the host is told `at T`, it
/// only wakes and renames at T: no process starts at the switch, so fifty
/// hosts sharing two cores still switch together.
pub(super) const AT_T: &str = "use Time::HiRes qw(time sleep); $| = 1; my $t = shift(@ARGV) / 1e9; \
while ((my $r = $t - time()) > 0) { sleep($r) } my $i = 0; \
while (@ARGV) { my ($s, $d) = splice(@ARGV, 0, 2); \
rename($s, $d) or do { print \"ERR cannot rename $i: $!\\n\"; exit 3 }; \
printf(\"RENAMED %d %.0f\\n\", $i, time() * 1e9); $i++ }";

/// Waits until `target` (ns since the epoch, an sh expression) by the host's
/// clock: long waits in whole seconds, then one precise sleep. It never wakes
/// early: the sleep starts after the clock was read. The sleep runs in the
/// background so that a trapped signal ends the wait at once. The fraction is
/// formatted with arithmetic only: each process counts at the switch.
pub(super) fn until_ns(s: &mut String, target: &str) {
    writeln!(
        s,
        "w={target}\n\
         while :; do\n\
         now=$(now_ns); case $now in ''|*[!0-9]*) echo 'ERR this host cannot tell its clock to the microsecond (no date +%N, no adjtimex)'; cleanup; unlock; exit 1 ;; esac; d=$((w - now))\n\
         [ \"$d\" -le 0 ] && break\n\
         if [ \"$d\" -gt 3000000000 ]; then sleep $((d / 1000000000 - 2)) & wait $!; continue; fi\n\
         fr=$((d % 1000000000 + 1000000000)); sleep \"$((d / 1000000000)).${{fr#1}}\" & wait $!; break\n\
         done"
    )
    .unwrap();
}

/// `staged_here`: this same script just staged the files under the lock and
/// checked every hash, so the lock, the copies and the hashes need no second look
/// before `ARMED`.
pub(super) fn switch_body(s: &mut String, ids: &RunIds, files: &[FileWrite], reload: Option<&str>, trigger: Trigger, staged_here: bool) {
    s.push_str("switched=\n");
    putback(s, files);
    super::now_ns(s);
    if !staged_here {
        s.push_str("holds || { echo 'ERR this run no longer holds the host lock'; cleanup; exit 1; }\n");
        for i in 0..files.len() {
            writeln!(s, "[ -f \"$s{i}\" ] || fail 'the staged copy of {i} is gone'").unwrap();
        }
        cas_checks(s, files, |f| &f.before_sha256);
        s.push_str("if [ $bad = 1 ]; then cleanup; unlock; exit 4; fi\n");
    }
    match trigger {
        Trigger::Word => {
            s.push_str(
                // The answer carries the host's clock when the word came and when it
                // answers: with the workstation's two times, its offset (see `Clock`).
                "echo ARMED\nread -r word arg || word=abort\nif [ \"$word\" = check ]; then\nc0=$(now_ns)\n",
            );
            // Before anyone switches: one more check on every host. A host that
            // fails it never switches, whatever word follows.
            cas_checks(s, files, |f| &f.before_sha256);
            s.push_str(
                "if [ $bad = 1 ]; then echo 'CHECKED bad'; cleanup; unlock; exit 4; fi\n\
                 printf 'CHECKED ok %s %s\\n' \"$c0\" \"$(now_ns)\"\n\
                 read -r word arg || word=abort\n\
                 fi\n\
                 case $word in\n\
                 go) ;;\n\
                 at)\n",
            );
            // `at NS`: committed. The host renames at NS by its own clock; a
            // dropped session no longer stops it (every other host got the same word).
            s.push_str("case $arg in ''|*[!0-9]*) cleanup; unlock; echo ABORTED; exit 5 ;; esac\ntrap '' HUP PIPE\n");
            // The files may have changed since the check: a last look, as soon as
            // the word comes. Whatever work is left before T is done now, while the
            // words arrive host after host, not all at once at T.
            cas_checks(s, files, |f| &f.before_sha256);
            s.push_str("if [ $bad = 1 ]; then cleanup; unlock; exit 4; fi\n");
            // One process, started now, waits and renames. Exit 3: a rename failed
            // (said, and what was renamed before it). Any other failure before a
            // rename (no perl: 127; no Time::HiRes: 2) leaves `date`, `sleep` and `mv`.
            let pairs: String = (0..files.len()).map(|i| format!(" \"$s{i}\" \"$t{i}\"")).collect();
            writeln!(s, "perl -e {} \"$arg\"{pairs} 2>/dev/null; pr=$?\ncase $pr in\n0) switched=1 ;;\n3) putback; cleanup; unlock; exit 1 ;;\n*)", q(AT_T)).unwrap();
            until_ns(s, "$arg");
            s.push_str(";;\nesac\n;;\n*) cleanup; unlock; echo ABORTED; exit 5 ;;\nesac\n");
        }
        Trigger::At(ns) => {
            writeln!(
                s,
                "trap 'cleanup; unlock; echo CANCELLED; exit 6' TERM INT\nT={ns}\necho ARMED"
            )
            .unwrap();
            until_ns(s, "$T");
            s.push_str("trap - TERM INT\n");
            // The files may have changed while this waited.
            cas_checks(s, files, |f| &f.before_sha256);
            s.push_str("if [ $bad = 1 ]; then cleanup; unlock; exit 4; fi\n");
        }
    }
    // At T every process counts (in the lab, fifty hosts share two cores): the
    // renames run first, one `mv` each, and their times are read afterwards,
    // in one `stat`, from the files' ctimes, which the renames set (the
    // kernel's coarse clock: a rename at T may read up to a tick early). A
    // `stat` without fractions (BusyBox's) gives no time (0), never seconds
    // taken for nanoseconds.
    s.push_str(
        "renamed() { W=$(stat -c %.9Z -- \"$@\" 2>/dev/null); i=0\n\
         for r in $W; do case $r in *.*) r=${r%.*}${r#*.} ;; *) r=0 ;; esac; case $r in ''|*[!0-9]*) r=0 ;; esac; printf 'RENAMED %s %s\\n' $i \"$r\"; i=$((i+1)); done\n\
         while [ $i -lt $# ]; do printf 'RENAMED %s 0\\n' $i; i=$((i+1)); done; }\n",
    );
    s.push_str("if [ -z \"$switched\" ]; then\n");
    let targets = |n: usize| (0..n).map(|i| format!(" \"$t{i}\"")).collect::<String>();
    for i in 0..files.len() {
        // A rename that fails still reports the ones before it: they happened.
        let done = if i == 0 { String::new() } else { format!("renamed{}; ", targets(i)) };
        writeln!(s, "e=$(mv -f -- \"$s{i}\" \"$t{i}\" 2>&1) || {{ {done}printf 'ERR cannot rename {i}: %s\\n' \"$e\"; putback; cleanup; unlock; exit 1; }}").unwrap();
    }
    writeln!(s, "renamed{}\nfi", targets(files.len())).unwrap();
    reload_lines(s, &ids.root, reload);
    s.push_str("unlock\necho DONE\n");
}

/// `putback`: after a rename failed part way, every file already renamed
/// into place (its staged copy is gone) is put back from its backup, each
/// through a copy and a rename of its own, and said (`RESTORED i`): a host
/// ends with all of its new files or none.
fn putback(s: &mut String, files: &[FileWrite]) {
    s.push_str("B=\"$S/backups/$P\"\nputback() { :");
    for i in 0..files.len() {
        write!(
            s,
            "; [ -e \"$s{i}\" ] || {{ u=\"${{t{i}%/*}}/.${{t{i}##*/}}.farmctl-putback\"; cp -p -- \"$B/{i}\" \"$u\" && mv -f -- \"$u\" \"$t{i}\" && echo 'RESTORED {i}' || {{ rm -f -- \"$u\"; printf 'ERR cannot put back {i}\\n'; }}; }}"
        )
        .unwrap();
    }
    s.push_str("; }\n");
}
