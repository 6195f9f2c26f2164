//! Scripts for `farmctl watch`: the watcher's lease on a member, a client's
//! own look at a member, and copying a synced file to a standby.

use super::{on_host, q};
use crate::farm::Talk;
use std::fmt::Write;
use std::time::Duration;

/// What to do with the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    /// Take it if it is free, expired or ours (a new holder bumps the epoch), and renew it.
    Acquire,
    /// Give it up if it is ours.
    Release,
    /// Only say who holds it.
    Peek,
}

/// The lease of service `name` in `state_dir` on a member: "holder epoch expiry_ms",
/// read and written under a short lock, by the host's clock. A new holder's
/// epoch is the time it took the lease (ms), so that it is above every epoch
/// an earlier holder had on any member whose clock agrees within the lease:
/// the epoch is the fencing token that [`fence`] checks on the clients.
pub fn lease(root: &str, state_dir: &str, name: &str, holder: &str, ttl_ms: u64, op: LeaseOp, note: &str) -> String {
    let mut s = String::new();
    super::now_ns(&mut s);
    // The note (what the watcher last saw) is words on one line, after the expiry.
    let note: String = note.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    writeln!(s, "S={}\nL=\"$S/leases/\"{}\nME={}\nNOTE={}\nmkdir -p -- \"$S/leases\" || {{ echo 'ERR cannot create the lease directory'; exit 1; }}", q(&on_host(root, state_dir)), q(name), q(holder), q(&note)).unwrap();
    s.push_str(
        // The lock guards a few milliseconds of reading and writing. It names
        // its shell, and goes with it (on any exit or signal); a lock whose
        // shell is gone, or that outlived about 15 waits (its holder is frozen),
        // is broken: the wait stays well under the watcher's reply limit.
        "i=0; until mkdir -- \"$L.lock\" 2>/dev/null; do i=$((i+1)); o=$(cat -- \"$L.lock/pid\" 2>/dev/null)\n\
         if { [ -n \"$o\" ] && ! kill -0 \"$o\" 2>/dev/null; } || [ $i -gt 15 ]; then rm -rf -- \"$L.lock\"; fi; sleep 0.01; done\n\
         trap '[ \"$(cat -- \"$L.lock/pid\" 2>/dev/null)\" = $$ ] && rm -rf -- \"$L.lock\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; echo $$ > \"$L.lock/pid\"\n\
         now=$(now_ns); case $now in ''|*[!0-9]*) echo 'ERR this host cannot tell its clock in milliseconds (no date +%N, no adjtimex)'; exit 1 ;; esac; now=${now%??????}\n\
         holder=; epoch=0; expiry=0; note=\n\
         [ -f \"$L\" ] && read -r holder epoch expiry note < \"$L\"\n",
    );
    match op {
        LeaseOp::Acquire => writeln!(
            s,
            "if [ -z \"$holder\" ] || [ \"$holder\" = \"$ME\" ] || [ \"$now\" -gt \"$expiry\" ]; then\n\
             [ \"$holder\" = \"$ME\" ] || {{ epoch=$((epoch+1)); [ \"$now\" -gt \"$epoch\" ] && epoch=$now; }}\n\
             printf '%s %s %s %s\\n' \"$ME\" \"$epoch\" \"$((now+{ttl_ms}))\" \"$NOTE\" > \"$L.tmp\" && mv -f -- \"$L.tmp\" \"$L\" && printf 'LEASE ok %s\\n' \"$epoch\"\n\
             else printf 'LEASE held %s %s %s\\n' \"$epoch\" \"$((expiry-now))\" \"$holder\"; fi"
        )
        .unwrap(),
        LeaseOp::Release => s.push_str("[ \"$holder\" = \"$ME\" ] && rm -f -- \"$L\" && echo 'LEASE released'\n"),
        LeaseOp::Peek => s.push_str(
            "if [ -n \"$holder\" ] && [ \"$now\" -le \"$expiry\" ]; then printf 'LEASE held %s %s %s %s\\n' \"$epoch\" \"$((expiry-now))\" \"$holder\" \"$note\"; else echo 'LEASE free'; fi\n",
        ),
    }
    s.push_str("echo DONE\n");
    s
}

/// Refuses (exit 7) a write from a watcher whose lease of `service` is older
/// than the newest one that wrote on this host, and records `epoch` otherwise.
/// `$S` is the host's state directory; `undo` runs before a refusal.
pub fn fence(s: &mut String, service: &str, epoch: u64, undo: &str) {
    writeln!(
        s,
        "mkdir -p -- \"$S/fence\" || {{ echo 'ERR cannot create the fence directory'; {undo} exit 1; }}\n\
         f=$(cat -- \"$S/fence/\"{n} 2>/dev/null); case \"$f\" in ''|*[!0-9]*) f=0 ;; esac\n\
         if [ \"$f\" -gt {epoch} ]; then printf 'FENCED %s\\n' \"$f\"; printf 'ERR refused: a watcher with a newer lease of service %s (epoch %s) has written here; this watcher'\"'\"'s lease (epoch %s) is gone\\n' {n} \"$f\" {epoch}; {undo} exit 7; fi\n\
         [ \"$f\" = {epoch} ] || printf '%s\\n' {epoch} > \"$S/fence/\"{n}",
        n = q(service)
    )
    .unwrap();
}

/// A client's own look at a member, the same look the watcher takes: open a
/// TCP connection to `talk.port`, send `talk.send`, and with an `expect`,
/// read the first line of the answer, all within `deadline`. A member whose
/// kernel still accepts connections but whose processes are frozen never
/// answers, so it is down. With bash's `/dev/tcp`; else with `nc` under
/// `timeout` (BusyBox's), which waits out the deadline when the member
/// answers and keeps the connection open; with neither, "unknown", never "down".
pub fn reach(address: &str, talk: &Talk, deadline: Duration) -> String {
    let d = format!("{}.{:03}", deadline.as_secs(), deadline.subsec_millis());
    let (a, port, send, expect) = (q(address), talk.port, q(&talk.send), q(&talk.expect));
    format!(
        "if command -v timeout >/dev/null 2>&1 && command -v bash >/dev/null 2>&1; then\n\
         if timeout {d} bash -c 'exec 3<>\"/dev/tcp/$1/$2\" || exit 1; [ -z \"$3\" ] || printf %s \"$3\" >&3 || exit 1; [ -n \"$4\" ] || exit 0; l=; IFS= read -r l <&3; case $l in *\"$4\"*) exit 0 ;; esac; exit 1' _ {a} {port} {send} {expect} 2>/dev/null; then echo 'REACH up'; else echo 'REACH down'; fi\n\
         elif command -v nc >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then\n\
         e={expect}; l=$(printf %s {send} | timeout {d} nc {a} {port} 2>/dev/null | head -n 1)\n\
         if [ -n \"$e\" ]; then case $l in *\"$e\"*) echo 'REACH up' ;; *) echo 'REACH down' ;; esac\n\
         else timeout {d} nc {a} {port} < /dev/null > /dev/null 2>&1; case $? in 0|124|143) echo 'REACH up' ;; *) echo 'REACH down' ;; esac; fi\n\
         else echo 'REACH unknown'; fi\n"
    )
}

/// What to do with a service's virtual address on a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressOp {
    /// Add it (on `interface`, or the one that holds `own`, the member's own
    /// address) and announce it with gratuitous ARP.
    Take,
    /// Remove it, from whichever interface holds it.
    Drop,
}

/// Adds or removes the virtual address `cidr` (`A.B.C.D/N`) on a member,
/// under the watcher's fencing token: a watcher whose lease is older than
/// the newest that wrote here is refused. Says `ADDRESS held IFACE` or
/// `ADDRESS free`; `ADDRESS taken`/`ADDRESS dropped` when it changed.
pub fn address(state_dir: &str, service: &str, epoch: u64, op: AddressOp, cidr: &str, interface: Option<&str>, own: &str) -> String {
    let ip = cidr.split('/').next().unwrap_or(cidr);
    let mut s = format!("S={}\nV={}\nC={}\nOWN={}\nIF={}\n", q(state_dir), q(ip), q(cidr), q(own), q(interface.unwrap_or("")));
    fence(&mut s, service, epoch, "");
    // Where an address is: the interface whose `inet` line holds it, from
    // `ip -4 addr show` as GNU and BusyBox `ip` both print it.
    s.push_str(
        "\nwhere_is() { ip -4 addr show 2>/dev/null | while read -r a b rest; do\n\
         case $a in [0-9]*:) i=${b%:}; i=${i%@*} ;; inet) [ \"${b%/*}\" = \"$1\" ] && { echo \"$i\"; break; } ;; esac; done; }\n\
         command -v ip >/dev/null 2>&1 || { echo 'ERR this host has no `ip` command to hold an address with'; exit 1; }\n\
         H=$(where_is \"$V\")\n",
    );
    match op {
        AddressOp::Take => s.push_str(
            "if [ -z \"$H\" ]; then\n\
             [ -n \"$IF\" ] || IF=$(where_is \"$OWN\")\n\
             [ -n \"$IF\" ] || { echo \"ERR no interface holds this member's own address $OWN; set the service's interface\"; exit 1; }\n\
             ip addr add \"$C\" dev \"$IF\" || { echo \"ERR ip addr add $C dev $IF failed\"; exit 1; }\n\
             H=$IF; echo 'ADDRESS taken'\n\
             fi\n\
             # Tell the segment: gratuitous ARP, with iputils' or BusyBox's arping.\n\
             # In the background: arping waits out its interval after sending.\n\
             if command -v arping >/dev/null 2>&1; then (arping -q -U -c 2 -I \"$H\" \"$V\" || arping -U -c 2 -I \"$H\" \"$V\") >/dev/null 2>&1 &\n\
             elif command -v busybox >/dev/null 2>&1; then busybox arping -U -c 2 -I \"$H\" \"$V\" >/dev/null 2>&1 & fi\n\
             echo \"ADDRESS held $H\"\n",
        ),
        AddressOp::Drop => s.push_str(
            "if [ -n \"$H\" ]; then ip addr del \"$V/${C#*/}\" dev \"$H\" 2>/dev/null || ip addr del \"$V/32\" dev \"$H\" || { echo \"ERR ip addr del $V dev $H failed\"; exit 1; }; echo 'ADDRESS dropped'; fi\n\
             echo 'ADDRESS free'\n",
        ),
    }
    s.push_str("echo DONE\n");
    s
}

/// Writes stdin to `path` atomically (a dotfile beside it, fsync, rename),
/// keeping an existing file's mode and owner, and checks the sha256.
pub fn put_file(root: &str, state_dir: &str, path: &str, len: usize, sha256: &str, token: Option<(&str, u64)>) -> String {
    let p = q(&on_host(root, path));
    let mut s = format!("S={}\n", q(&on_host(root, state_dir)));
    if let Some((service, epoch)) = token {
        fence(&mut s, service, epoch, "");
    }
    s + &format!(
        "t={p}\nd=$(dirname -- \"$t\")\nmkdir -p -- \"$d\" || {{ echo 'ERR cannot create the directory'; exit 1; }}\n\
         s=\"$d/.$(basename -- \"$t\").farmctl-sync\"\n\
         {read} > \"$s\" 2>/dev/null || {{ rm -f -- \"$s\"; echo 'ERR cannot write the copy'; exit 1; }}\n\
         c=$(sha256sum < \"$s\"); c=${{c%% *}}\n\
         [ \"$c\" = {h} ] || {{ rm -f -- \"$s\"; echo 'ERR the copy does not match'; exit 1; }}\n\
         if [ -f \"$t\" ]; then set -- $(stat -L -c '%a %u:%g' -- \"$t\"); chmod \"$1\" \"$s\" && chown \"$2\" \"$s\" 2>/dev/null; fi\n\
         sync -- \"$s\" 2>/dev/null; mv -f -- \"$s\" \"$t\" && echo DONE\n",
        h = q(sha256),
        read = super::read_exactly(len)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str) -> String {
        String::from_utf8(std::process::Command::new("sh").arg("-c").arg(s).output().unwrap().stdout).unwrap()
    }

    #[test]
    fn a_lease_is_held_until_it_expires_and_a_new_holder_bumps_the_epoch() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display().to_string();
        let epoch = |out: String| out.lines().find_map(|l| l.strip_prefix("LEASE ok ")).and_then(|e| e.parse::<u64>().ok()).unwrap_or_else(|| panic!("{out}"));
        let started = jiff::Timestamp::now().as_millisecond() as u64;
        let first = epoch(run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Acquire, "")));
        assert!(first >= started, "a new holder's epoch is the time it took the lease");
        assert_eq!(epoch(run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Acquire, ""))), first, "renewing keeps the epoch");
        let other = run(&lease("", &dir, "web", "b@ws:2", 60_000, LeaseOp::Acquire, ""));
        assert!(other.contains(&format!("LEASE held {first} ")) && other.contains("a@ws:1"), "{other}");
        // Expired: a 1 ms lease lapses at once.
        run(&lease("", &dir, "web", "a@ws:1", 1, LeaseOp::Acquire, ""));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(epoch(run(&lease("", &dir, "web", "b@ws:2", 60_000, LeaseOp::Acquire, ""))) > first, "the next holder's epoch is higher");
        assert!(!run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Release, "")).contains("released"), "only the holder releases");
        assert!(run(&lease("", &dir, "web", "b@ws:2", 60_000, LeaseOp::Release, "")).contains("released"));
    }

    // Issue 22: a member frozen and thawed kept `leases/web.lock`, and every
    // later watcher was told "no member answers".
    #[test]
    fn a_lease_lock_left_by_a_dead_shell_or_a_stuck_one_is_broken_within_the_reply_limit() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display().to_string();
        let lock = d.path().join("leases/web.lock");
        // Left by a shell that is gone (a pid that cannot be running).
        std::fs::create_dir_all(&lock).unwrap();
        std::fs::write(lock.join("pid"), "999999999\n").unwrap();
        let started = std::time::Instant::now();
        assert!(run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Acquire, "")).contains("LEASE ok"));
        let dead = started.elapsed();
        assert!(!lock.exists(), "the lock goes with the shell that took it");
        // Held by a live process that never lets go (a frozen holder).
        std::fs::create_dir_all(&lock).unwrap();
        std::fs::write(lock.join("pid"), format!("{}\n", std::process::id())).unwrap();
        let started = std::time::Instant::now();
        assert!(run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Acquire, "")).contains("LEASE ok"));
        let stuck = started.elapsed();
        eprintln!("a dead holder's lock was broken after {dead:?}, a stuck one's after {stuck:?}");
        // The watcher's reply limit is at least 500 ms; the wait is about 15
        // sleeps of 10 ms, so 2 s is room for a loaded machine, not a target.
        assert!(stuck < std::time::Duration::from_secs(2), "{stuck:?}");
        assert!(dead < stuck, "a dead holder's lock is broken at once ({dead:?}), a live one's after waiting ({stuck:?})");
    }

    #[test]
    fn a_write_under_an_older_lease_than_the_last_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        let target = d.path().join("file");
        let put = |epoch: u64, body: &str| {
            let script = put_file("", &state.display().to_string(), &target.display().to_string(), body.len(), &crate::farm::sha256_hex(body.as_bytes()), Some(("web", epoch)));
            let out = std::process::Command::new("sh").arg("-c").arg(script).stdin(std::fs::File::open("/dev/null").unwrap()).output().unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        };
        // An empty body reads nothing from stdin.
        assert_eq!(put(5, "").0, Some(0));
        assert_eq!(put(9, "").0, Some(0));
        let (code, out) = put(5, "");
        assert_eq!(code, Some(7), "{out}");
        assert!(out.contains("newer lease of service web (epoch 9)") && out.contains("(epoch 5) is gone"), "{out}");
        assert!(super::super::parse_report(out.as_bytes()).contains(&super::super::Report::Fenced(9)), "the refusal is typed for the watcher: {out}");
        assert_eq!(std::fs::read_to_string(state.join("fence/web")).unwrap(), "9\n", "a refused write leaves the newer epoch");
    }

    #[test]
    fn reach_quotes_everything_and_tells_an_answer_from_silence() {
        let ssh = crate::farm::Check::Ssh.talk(22);
        let s = reach("10.0.0.1; touch /tmp/x", &ssh, Duration::from_millis(500));
        assert!(s.contains("'10.0.0.1; touch /tmp/x' 22"), "{s}");
        let talk = |port, send: &str, expect: &str| Talk { port, send: send.into(), expect: expect.into() };
        let d = Duration::from_millis(800);
        // A server that greets, one that answers what it is sent, and one that
        // accepts but never speaks (as a frozen process's socket does).
        let greeter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let g = greeter.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in greeter.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = std::io::Write::write_all(&mut &c, b"SSH-2.0-test\r\n");
                    std::thread::sleep(Duration::from_secs(2));
                });
            }
        });
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = echo.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in echo.incoming().flatten() {
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&c), &mut line);
                let _ = std::io::Write::write_all(&mut &c, format!("PONG {line}").as_bytes());
            }
        });
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let m = mute.local_addr().unwrap().port();
        let shells = crate::transport::script::tests::Shells::new();
        let cases = [(g, "", "SSH-", "up", "a greeting"), (e, "PING\r\n", "PONG PING", "up", "an answer"), (e, "PING\r\n", "PANG", "down", "the wrong answer"), (m, "", "SSH-", "down", "silence past the deadline"), (m, "", "", "up", "a connection alone, without `expect`")];
        for (port, send, expect, answer, what) in cases {
            for (name, mut sh) in shells.each() {
                let out = sh.arg("-c").arg(reach("127.0.0.1", &talk(port, send, expect), d)).output().unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), format!("REACH {answer}\n"), "{name}: {what}");
            }
        }
        drop(mute);
        assert_eq!(run(&reach("127.0.0.1", &talk(m, "", ""), d)), "REACH down\n", "nothing listens");
    }
}
