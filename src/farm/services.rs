//! Pure: the meaning of `[services.<name>]`: a stable name, members in
//! priority order, how they are checked, and when a member counts as dead.

use super::raw::{RawService, S};
use super::{names, Checker, Host};
use std::collections::BTreeMap;
use std::time::Duration;

/// How a member is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// An SSH session that runs `true`.
    Ssh,
    /// A TCP connection to this port.
    Tcp(u16),
    /// A command run on the member over SSH; exit 0 means alive.
    Command(String),
}

impl Check {
    /// The TCP port a client probes to confirm the member is down.
    pub fn port(&self, ssh_port: u16) -> u16 {
        match self {
            Check::Tcp(p) => *p,
            _ => ssh_port,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub virtual_name: String,
    pub members: Vec<String>,
    pub check: Check,
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub sync: Vec<String>,
    pub max_lag: Duration,
    pub preempt: bool,
    /// Run on the workstation against the dead member; `{host}` and `{address}` are filled in, quoted.
    pub fence: Option<String>,
    pub fence_required: bool,
    /// How many clients must also fail to reach a member before it is dead.
    pub confirm: Option<usize>,
    /// How long a watcher's lease outlives its last renewal.
    pub lease: Duration,
}

pub(super) fn check(c: &mut Checker, raw: BTreeMap<S<String>, S<RawService>>, hosts: &BTreeMap<String, Host>) -> BTreeMap<String, Service> {
    let mut out = BTreeMap::new();
    for (name, s) in raw {
        let s = s.into_inner();
        if let Some(p) = names::host_name_problem(s.r#virtual.get_ref()) {
            c.span(&s.r#virtual, p.replace("host name", "virtual name"));
        }
        let mut members = Vec::new();
        for m in s.members.get_ref() {
            if !hosts.contains_key(m.get_ref()) {
                c.span(m, format!("unknown host `{}`; a service's members are hosts of [hosts]", m.get_ref()));
            } else if members.contains(m.get_ref()) {
                c.span(m, format!("`{}` is listed twice", m.get_ref()));
            } else {
                members.push(m.get_ref().clone());
            }
        }
        if s.members.get_ref().len() < 2 {
            c.span(&s.members, "expected at least two members: a service fails over from one to the next");
        }
        let check = match s.check.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("ssh") => Check::Ssh,
            Some(t) if t.starts_with("tcp:") => match t[4..].parse::<u16>() {
                Ok(p) if p > 0 => Check::Tcp(p),
                _ => {
                    c.span(s.check.as_ref().unwrap(), format!("expected `tcp:PORT` with a port from 1 to 65535, found `{t}`"));
                    Check::Ssh
                }
            },
            Some(cmd) => {
                if let Some(ch) = names::control_char(cmd, true) {
                    c.span(s.check.as_ref().unwrap(), format!("expected a check command without {}", names::describe(ch)));
                }
                Check::Command(cmd.to_string())
            }
        };
        let heartbeat = super::check::duration(c, &s.heartbeat, Duration::from_secs(1));
        let dead_after = super::check::duration(c, &s.dead_after, Duration::from_secs(3));
        if dead_after < heartbeat {
            if let Some(d) = &s.dead_after {
                c.span(d, "expected `dead_after` to be at least one `heartbeat`");
            }
        }
        match s.strategy.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("rewrite") => {}
            Some("hosts") => c.span(s.strategy.as_ref().unwrap(), "strategy \"hosts\" is not supported yet; use \"rewrite\" (the clients' files name the active member)"),
            Some(other) => c.span(s.strategy.as_ref().unwrap(), format!("expected strategy \"rewrite\", found \"{other}\"")),
        }
        let mut sync = Vec::new();
        for p in &s.sync {
            match names::normalize_path(p.get_ref()) {
                Ok(n) => sync.push(n),
                Err(e) => c.span(p, e),
            }
        }
        let max_lag = super::check::duration(c, &s.max_lag, Duration::from_secs(60));
        let confirm = s.confirm.as_ref().map(|v| match usize::try_from(*v.get_ref()) {
            Ok(n) => n,
            Err(_) => {
                c.span(v, "expected a number of clients, 0 or more");
                2
            }
        });
        let lease = super::check::duration(c, &s.lease, (heartbeat * 5).clamp(Duration::from_secs(5), Duration::from_secs(30)));
        if lease > Duration::from_secs(30) {
            c.span(s.lease.as_ref().unwrap(), "expected a lease of at most 30s: a dead watcher must not hold the service longer");
        }
        let fence = s.fence.as_ref().map(|f| f.get_ref().clone());
        out.insert(
            name.get_ref().clone(),
            Service {
                name: name.into_inner(),
                virtual_name: s.r#virtual.into_inner(),
                members,
                check,
                heartbeat,
                dead_after,
                sync,
                max_lag,
                preempt: s.preempt.unwrap_or(false),
                fence,
                fence_required: s.fence_required.unwrap_or(false),
                confirm,
                lease,
            },
        );
    }
    out
}
