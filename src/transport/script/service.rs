//! Scripts for `farmctl watch`: the watcher's lease on a member, a client's
//! own look at a member, and copying a synced file to a standby.

use super::{on_host, q};
use std::fmt::Write;

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
        "i=0; until mkdir -- \"$L.lock\" 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && rm -rf -- \"$L.lock\"; sleep 0.01; done\n\
         now=$(now_ns); case $now in ''|*[!0-9]*) rmdir -- \"$L.lock\" 2>/dev/null; echo 'ERR this host cannot tell its clock in milliseconds (no date +%N, no adjtimex)'; exit 1 ;; esac; now=${now%??????}\n\
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
    s.push_str("rmdir -- \"$L.lock\" 2>/dev/null\necho DONE\n");
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
         if [ \"$f\" -gt {epoch} ]; then printf 'ERR refused: a watcher with a newer lease of service %s (epoch %s) has written here; this watcher'\"'\"'s lease (epoch %s) is gone\\n' {n} \"$f\" {epoch}; {undo} exit 7; fi\n\
         [ \"$f\" = {epoch} ] || printf '%s\\n' {epoch} > \"$S/fence/\"{n}",
        n = q(service)
    )
    .unwrap();
}

/// A client's own look at a member: can it open a TCP connection to it?
/// With bash's `/dev/tcp`, or `nc -z`; with an `nc` that has no `-z`
/// (BusyBox's), a connection that ends by itself (0) or is still open when
/// `timeout` stops it (124, 143) is up, and one refused or not made within
/// `-w 2` is down; with none of these, the answer is "unknown", never "down".
pub fn reach(address: &str, port: u16) -> String {
    format!(
        "if command -v timeout >/dev/null 2>&1 && command -v bash >/dev/null 2>&1; then\n\
         if timeout 2 bash -c 'exec 3<>/dev/tcp/$1/$2' _ {a} {port} 2>/dev/null; then echo 'REACH up'; else echo 'REACH down'; fi\n\
         elif command -v nc >/dev/null 2>&1 && nc -h 2>&1 | grep -q -- ' -z'; then\n\
         if nc -z -w 2 {a} {port} 2>/dev/null; then echo 'REACH up'; else echo 'REACH down'; fi\n\
         elif command -v nc >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then\n\
         timeout 3 nc -w 2 {a} {port} < /dev/null > /dev/null 2>&1\n\
         case $? in 0|124|143) echo 'REACH up' ;; *) echo 'REACH down' ;; esac\n\
         else echo 'REACH unknown'; fi\n",
        a = q(address)
    )
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
        assert_eq!(std::fs::read_to_string(state.join("fence/web")).unwrap(), "9\n", "a refused write leaves the newer epoch");
    }

    #[test]
    fn reach_quotes_the_address_and_tells_up_from_down() {
        let s = reach("10.0.0.1; touch /tmp/x", 22);
        assert!(s.contains("'10.0.0.1; touch /tmp/x' 22"), "{s}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(run(&reach("127.0.0.1", port)), "REACH up\n");
        drop(listener);
        assert_eq!(run(&reach("127.0.0.1", port)), "REACH down\n");
    }
}
