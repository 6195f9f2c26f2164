//! Who holds a host lock: written into the lock so that a second operator is
//! told, and read back to tell a dead farmctl of this workstation (whose lock
//! the next run may break) from a live one or another workstation's. One
//! `Display` and one `FromStr`, in the words earlier versions wrote:
//! `user@host pid=N plan=ID since=TIME`.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockOwner {
    pub user: String,
    /// The workstation's hostname.
    pub host: String,
    pub pid: u32,
    pub plan: String,
    /// RFC 3339, when the run started.
    pub since: String,
}

impl LockOwner {
    /// This process, running `plan`, now.
    pub fn this_process(plan: &str) -> LockOwner {
        LockOwner { user: this_user(), host: this_host(), pid: std::process::id(), plan: plan.to_string(), since: jiff::Timestamp::now().to_string() }
    }

    /// Whether this names a farmctl of this workstation that is gone: its
    /// lock can be broken. Another workstation's lock never is.
    pub fn is_gone_from_here(&self) -> bool {
        if self.host != this_host() {
            return false;
        }
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        comm.trim() != "farmctl"
    }
}

/// The login name: `$USER` or `$LOGNAME`, else this process's uid looked up
/// in `/etc/passwd` (cron and systemd set neither), else `uid-N`.
fn this_user() -> String {
    if let Some(u) = ["USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty())) {
        return u;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(uid) = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next()).map(str::to_string) else { return "unknown".into() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 2 && f[2] == uid).map_or_else(|| format!("uid-{uid}"), |f| f[0].to_string())
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

impl fmt::Display for LockOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{} pid={} plan={} since={}", self.user, self.host, self.pid, self.plan, self.since)
    }
}

/// Why an owner line is not one farmctl wrote.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a lock owner (user@host pid=N plan=ID since=TIME)")]
pub struct NotAnOwner(pub String);

impl FromStr for LockOwner {
    type Err = NotAnOwner;

    fn from_str(s: &str) -> Result<LockOwner, NotAnOwner> {
        let bad = || NotAnOwner(s.to_string());
        let mut words = s.split_whitespace();
        let (user, host) = words.next().and_then(|w| w.rsplit_once('@')).ok_or_else(bad)?;
        let (mut pid, mut plan, mut since) = (None, None, None);
        for w in words {
            match w.split_once('=') {
                Some(("pid", v)) => pid = v.parse::<u32>().ok(),
                Some(("plan", v)) => plan = Some(v.to_string()),
                Some(("since", v)) => since = Some(v.to_string()),
                _ => {}
            }
        }
        Ok(LockOwner { user: user.to_string(), host: host.to_string(), pid: pid.ok_or_else(bad)?, plan: plan.unwrap_or_default(), since: since.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_reads_back_as_itself_and_a_foreign_line_is_not_one() {
        let o = LockOwner { user: "ops".into(), host: "ws-1".into(), pid: 4242, plan: "ce8a1cdda88d98c0".into(), since: "2026-11-30T21:00:00Z".into() };
        let text = o.to_string();
        assert_eq!(text, "ops@ws-1 pid=4242 plan=ce8a1cdda88d98c0 since=2026-11-30T21:00:00Z");
        assert_eq!(text.parse::<LockOwner>(), Ok(o));
        assert!("".parse::<LockOwner>().is_err() && "ops@ws-1 plan=x".parse::<LockOwner>().is_err() && "unknown holder".parse::<LockOwner>().is_err());
    }

    #[test]
    fn only_a_gone_farmctl_of_this_workstation_is_gone() {
        let me = LockOwner::this_process("p");
        // This test binary is not named farmctl: as a lock holder it counts as gone.
        assert!(me.is_gone_from_here());
        assert!(!LockOwner { host: "another-workstation".into(), ..me.clone() }.is_gone_from_here(), "another workstation's lock is never broken");
    }
}
