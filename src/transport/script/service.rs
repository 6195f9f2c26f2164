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
/// read and written under a short lock, by the host's clock.
pub fn lease(root: &str, state_dir: &str, name: &str, holder: &str, ttl_ms: u64, op: LeaseOp) -> String {
    let mut s = String::new();
    writeln!(s, "S={}\nL=\"$S/leases/\"{}\nME={}\nmkdir -p -- \"$S/leases\" || {{ echo 'ERR cannot create the lease directory'; exit 1; }}", q(&on_host(root, state_dir)), q(name), q(holder)).unwrap();
    s.push_str(
        "i=0; until mkdir -- \"$L.lock\" 2>/dev/null; do i=$((i+1)); [ $i -gt 200 ] && rm -rf -- \"$L.lock\"; sleep 0.01; done\n\
         now=$(date +%s%3N)\n\
         holder=; epoch=0; expiry=0\n\
         [ -f \"$L\" ] && read -r holder epoch expiry < \"$L\"\n",
    );
    match op {
        LeaseOp::Acquire => writeln!(
            s,
            "if [ -z \"$holder\" ] || [ \"$holder\" = \"$ME\" ] || [ \"$now\" -gt \"$expiry\" ]; then\n\
             [ \"$holder\" = \"$ME\" ] || epoch=$((epoch+1))\n\
             printf '%s %s %s\\n' \"$ME\" \"$epoch\" \"$((now+{ttl_ms}))\" > \"$L.tmp\" && mv -f -- \"$L.tmp\" \"$L\" && printf 'LEASE ok %s\\n' \"$epoch\"\n\
             else printf 'LEASE held %s %s %s\\n' \"$epoch\" \"$((expiry-now))\" \"$holder\"; fi"
        )
        .unwrap(),
        LeaseOp::Release => s.push_str("[ \"$holder\" = \"$ME\" ] && rm -f -- \"$L\" && echo 'LEASE released'\n"),
        LeaseOp::Peek => s.push_str(
            "if [ -n \"$holder\" ] && [ \"$now\" -le \"$expiry\" ]; then printf 'LEASE held %s %s %s\\n' \"$epoch\" \"$((expiry-now))\" \"$holder\"; else echo 'LEASE free'; fi\n",
        ),
    }
    s.push_str("rmdir -- \"$L.lock\" 2>/dev/null\necho DONE\n");
    s
}

/// A client's own look at a member: can it open a TCP connection to it?
pub fn reach(address: &str, port: u16) -> String {
    format!(
        "if command -v timeout >/dev/null 2>&1 && command -v bash >/dev/null 2>&1; then\n\
         if timeout 2 bash -c 'exec 3<>/dev/tcp/$1/$2' _ {a} {port} 2>/dev/null; then echo 'REACH up'; else echo 'REACH down'; fi\n\
         elif command -v nc >/dev/null 2>&1; then\n\
         if nc -z -w 2 {a} {port} 2>/dev/null; then echo 'REACH up'; else echo 'REACH down'; fi\n\
         else echo 'REACH unknown'; fi\n",
        a = q(address)
    )
}

/// Writes stdin to `path` atomically (a dotfile beside it, fsync, rename),
/// keeping an existing file's mode and owner, and checks the sha256.
pub fn put_file(root: &str, path: &str, len: usize, sha256: &str) -> String {
    let p = q(&on_host(root, path));
    format!(
        "t={p}\nd=$(dirname -- \"$t\")\nmkdir -p -- \"$d\" || {{ echo 'ERR cannot create the directory'; exit 1; }}\n\
         s=\"$d/.$(basename -- \"$t\").farmctl-sync\"\n\
         head -c {len} > \"$s\" || {{ rm -f -- \"$s\"; echo 'ERR cannot write the copy'; exit 1; }}\n\
         c=$(sha256sum < \"$s\"); c=${{c%% *}}\n\
         [ \"$c\" = {h} ] || {{ rm -f -- \"$s\"; echo 'ERR the copy does not match'; exit 1; }}\n\
         [ -f \"$t\" ] && chmod --reference=\"$t\" \"$s\" 2>/dev/null && chown --reference=\"$t\" \"$s\" 2>/dev/null\n\
         sync -- \"$s\" 2>/dev/null; mv -f -- \"$s\" \"$t\" && echo DONE\n",
        h = q(sha256)
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
        assert!(run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Acquire)).contains("LEASE ok 1"));
        assert!(run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Acquire)).contains("LEASE ok 1"), "renewing keeps the epoch");
        let other = run(&lease("", &dir, "web", "b@ws:2", 60_000, LeaseOp::Acquire));
        assert!(other.contains("LEASE held 1 ") && other.contains("a@ws:1"), "{other}");
        // Expired: a 1 ms lease lapses at once.
        run(&lease("", &dir, "web", "a@ws:1", 1, LeaseOp::Acquire));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(run(&lease("", &dir, "web", "b@ws:2", 60_000, LeaseOp::Acquire)).contains("LEASE ok 2"));
        assert!(!run(&lease("", &dir, "web", "a@ws:1", 60_000, LeaseOp::Release)).contains("released"), "only the holder releases");
        assert!(run(&lease("", &dir, "web", "b@ws:2", 60_000, LeaseOp::Release)).contains("released"));
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
