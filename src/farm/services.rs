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
    /// A TCP conversation with this port.
    Tcp(Talk),
    /// A command run on the member over SSH; exit 0 means alive.
    Command(String),
}

/// What a check says to a member's port and must hear back, within the
/// check's deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Talk {
    pub port: u16,
    /// Sent once connected; may be empty.
    pub send: String,
    /// Text that the first line of the answer must contain. Empty: an open
    /// connection is enough, which a member whose processes hang while its
    /// kernel still accepts connections passes too.
    pub expect: String,
}

impl Check {
    /// What a client does to confirm that a member answers: the check's own
    /// conversation, or, for the SSH checks, the SSH server's greeting (which
    /// a frozen sshd never sends, though its socket accepts).
    pub fn talk(&self, ssh_port: u16) -> Talk {
        match self {
            Check::Tcp(t) => t.clone(),
            _ => Talk { port: ssh_port, send: String::new(), expect: "SSH-".into() },
        }
    }
}

/// How the clients find the active member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The clients' managed files name the active member; a failover is a replacement.
    Rewrite,
    /// One line in each client's hosts file maps the virtual name to the active member's address.
    Hosts,
    /// The active member holds a virtual address; clients keep talking to it
    /// and never learn that the machine behind it changed.
    Address,
}

/// A service's virtual address, held by its active member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualAddress {
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
    /// The interface to put it on; `None`: the one holding the member's own address.
    pub interface: Option<String>,
}

impl VirtualAddress {
    /// `A.B.C.D/N`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
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
    pub strategy: Strategy,
    /// With [`Strategy::Hosts`]: the hosts whose hosts file carries the virtual name.
    pub clients: Vec<String>,
    /// Where the clients keep their hosts file (`/etc/hosts`).
    pub hosts_file: String,
    /// The old name of an adopted standalone server; it is `members[0]` now.
    pub adopt: Option<String>,
    /// Where the adopted machine keeps its host name (`/etc/hostname`).
    pub hostname_file: String,
    /// Set by the watcher during a failover: the member the clients must name.
    pub pin: Option<String>,
    /// With [`Strategy::Address`]: the address the active member holds.
    pub address: Option<VirtualAddress>,
}

impl Service {
    /// Every check's deadline, the watcher's and the clients': the
    /// heartbeat, at least 200 ms. A check that has not answered by then failed.
    pub fn deadline(&self) -> Duration {
        self.heartbeat.max(Duration::from_millis(200))
    }

    /// How long the watcher waits for a member's answer about the lease: the
    /// heartbeat, at least 500 ms (the lease's lock on a member waits less).
    pub fn lease_limit(&self) -> Duration {
        self.heartbeat.max(Duration::from_millis(500))
    }

    /// Whether `host` is one of this service's clients. With `rewrite`, every
    /// host that is not a member may be (its files say); with `hosts`, the listed ones.
    pub fn serves(&self, host: &str) -> bool {
        !self.members.iter().any(|m| m == host) && (self.strategy == Strategy::Rewrite || self.clients.iter().any(|c| c == host))
    }

}

pub(super) fn check(c: &mut Checker, raw: BTreeMap<S<String>, S<RawService>>, hosts: &BTreeMap<String, Host>) -> BTreeMap<String, Service> {
    let mut out = BTreeMap::new();
    for (name, s) in raw {
        if let Some(p) = names::host_name_problem(name.get_ref()) {
            c.span(&name, p.replace("host name", "service name"));
        }
        let s = s.into_inner();
        if let Some(p) = names::host_name_problem(s.r#virtual.get_ref()) {
            c.span(&s.r#virtual, p.replace("host name", "virtual name"));
        }
        let mut members = Vec::new();
        for m in s.members.get_ref() {
            if !hosts.contains_key(m.get_ref()) {
                c.span(m, format!("unknown host `{}`{}; a service's members are hosts of [hosts]", m.get_ref(), names::did_you_mean(m.get_ref(), hosts.keys().map(String::as_str))));
            } else if members.contains(m.get_ref()) {
                c.span(m, format!("`{}` is listed twice", m.get_ref()));
            } else {
                members.push(m.get_ref().clone());
            }
        }
        if s.members.get_ref().len() < 2 {
            c.span(&s.members, "expected at least two members: a service fails over from one to the next");
        }
        let check = member_check(c, &s);
        let heartbeat = c.duration(&s.heartbeat, Duration::from_secs(1));
        let dead_after = c.duration(&s.dead_after, Duration::from_secs(3));
        if dead_after < heartbeat {
            if let Some(d) = &s.dead_after {
                c.span(d, "expected `dead_after` to be at least one `heartbeat`");
            }
        }
        let strategy = strategy(c, &s);
        if hosts.contains_key(s.r#virtual.get_ref()) {
            let hint = if s.adopt.is_some() { "" } else { "; to keep a server's name for its clients, rename the host and set `adopt`" };
            c.span(&s.r#virtual, format!("`{}` is a host of [hosts]; a virtual name must not be a host's name{hint}", s.r#virtual.get_ref()));
        }
        let adopt = s.adopt.as_ref().map(|a| {
            if a.get_ref() != s.r#virtual.get_ref() {
                c.span(a, format!("expected `adopt` to be the virtual name `{}`: the adopted server's old name is what its clients keep using", s.r#virtual.get_ref()));
            }
            a.get_ref().clone()
        });
        let clients = clients(c, &s, strategy, hosts, &members);
        if strategy == Strategy::Hosts {
            for m in &members {
                if hosts[m].address.as_deref().is_none_or(|a| a.parse::<std::net::IpAddr>().is_err()) {
                    c.span(&s.members, format!("strategy \"hosts\" writes the active member's IP address into the clients' hosts file; give `{m}` an `address` that is an IP address"));
                }
            }
        }
        let mut path_of = |v: &Option<S<String>>, default: &str| match v {
            None => default.to_string(),
            Some(p) => names::normalize_path(p.get_ref()).unwrap_or_else(|e| {
                c.span(p, e);
                default.to_string()
            }),
        };
        let hosts_file = path_of(&s.hosts_file, "/etc/hosts");
        let hostname_file = path_of(&s.hostname_file, "/etc/hostname");
        let mut sync = Vec::new();
        for p in &s.sync {
            match names::normalize_path(p.get_ref()) {
                Ok(n) => sync.push(n),
                Err(e) => c.span(p, e),
            }
        }
        let max_lag = c.duration(&s.max_lag, Duration::from_secs(60));
        let confirm = s.confirm.as_ref().map(|v| match usize::try_from(*v.get_ref()) {
            Ok(n) => n,
            Err(_) => {
                c.span(v, "expected a number of clients, 0 or more");
                2
            }
        });
        let lease = c.duration(&s.lease, (heartbeat * 5).clamp(Duration::from_secs(5), Duration::from_secs(30)));
        if lease > Duration::from_secs(30) {
            c.span(s.lease.as_ref().unwrap(), "expected a lease of at most 30s: a dead watcher must not hold the service longer");
        }
        let address = virtual_address(c, &s, strategy);
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
                strategy,
                clients,
                hosts_file,
                adopt,
                hostname_file,
                pin: None,
                address,
            },
        );
    }
    out
}

/// `check`, with `send` and `expect` for a TCP conversation.
fn member_check(c: &mut Checker, s: &RawService) -> Check {
    let check = match s.check.as_ref().map(|v| v.get_ref().as_str()) {
        None | Some("ssh") => Check::Ssh,
        Some(t) if t.starts_with("tcp:") => match t[4..].parse::<u16>() {
            Ok(port) if port > 0 => {
                // `send` may hold line ends (`\r\n`), never a NUL; `expect` is
                // matched against one line, so it holds no control character.
                let text = |v: &Option<S<String>>, c: &mut Checker, one_line: bool| {
                    let t = v.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default();
                    let bad = if one_line { names::control_char(&t, false) } else { t.chars().find(|ch| *ch == '\0') };
                    if let (Some(v), Some(ch)) = (v, bad) {
                        let why = if one_line { "; `expect` is looked for in the first line of the answer" } else { "" };
                        c.span(v, format!("expected text without {}{why}", names::describe(ch)));
                    }
                    t
                };
                Check::Tcp(Talk { port, send: text(&s.send, c, false), expect: text(&s.expect, c, true) })
            }
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
    if !matches!(check, Check::Tcp(_)) {
        for v in [&s.send, &s.expect].into_iter().flatten() {
            c.span(v, "`send` and `expect` are for `check = \"tcp:PORT\"`; an SSH check's clients read the SSH server's greeting");
        }
    }
    check
}

/// `strategy`: how the clients are repointed (an adopted server's clients keep its name).
fn strategy(c: &mut Checker, s: &RawService) -> Strategy {
    match (s.strategy.as_ref().map(|v| v.get_ref().as_str()), &s.adopt) {
        (Some("hosts"), _) | (None, Some(_)) => Strategy::Hosts,
        (Some("address"), None) => Strategy::Address,
        (Some("rewrite"), Some(a)) => {
            c.span(a, "an adopted server keeps its clients' files as they are, so it needs strategy \"hosts\" (leave `strategy` out or set it to \"hosts\")");
            Strategy::Rewrite
        }
        (None | Some("rewrite"), None) => Strategy::Rewrite,
        (Some(other), _) => {
            c.span(s.strategy.as_ref().unwrap(), format!("expected strategy \"rewrite\", \"hosts\" or \"address\", found \"{other}\""));
            Strategy::Rewrite
        }
    }
}

/// `clients`: named hosts and roles for the strategies that need them; every
/// host not a member by default; none for "rewrite" (its clients name a member).
fn clients(c: &mut Checker, s: &RawService, strategy: Strategy, hosts: &BTreeMap<String, Host>, members: &[String]) -> Vec<String> {
    let mut clients = Vec::new();
    match &s.clients {
        Some(list) if strategy == Strategy::Rewrite => c.span(list, "`clients` is for strategy \"hosts\"; with \"rewrite\" the clients are the hosts whose files name a member"),
        Some(list) => {
            for x in list.get_ref() {
                let found: Vec<&String> = hosts.iter().filter(|(n, h)| *n == x.get_ref() || h.role == *x.get_ref()).map(|(n, _)| n).collect();
                if found.is_empty() {
                    c.span(x, format!("unknown host or role `{}` in `clients`", x.get_ref()));
                }
                clients.extend(found.into_iter().filter(|n| !members.contains(n)).cloned());
            }
        }
        None if strategy != Strategy::Rewrite => clients = hosts.keys().filter(|n| !members.contains(n)).cloned().collect(),
        None => {}
    }
    clients.sort();
    clients.dedup();
    clients
}

/// `address` and `interface`: required and checked with `strategy = "address"`, refused without.
fn virtual_address(c: &mut Checker, s: &RawService, strategy: Strategy) -> Option<VirtualAddress> {
    if strategy != Strategy::Address {
        for v in [&s.address, &s.interface].into_iter().flatten() {
            c.span(v, "`address` and `interface` are for strategy \"address\", where the active member holds a virtual address");
        }
        return None;
    }
    let Some(raw) = &s.address else {
        c.span(&s.members, "strategy \"address\" needs `address = \"A.B.C.D/N\"`: the virtual address the active member holds");
        return None;
    };
    let text = raw.get_ref().trim();
    let parsed = text.split_once('/').and_then(|(ip, n)| Some((ip.parse::<std::net::Ipv4Addr>().ok()?, n.parse::<u8>().ok().filter(|n| (1..=32).contains(n))?)));
    let Some((ip, prefix)) = parsed else {
        c.span(raw, format!("expected an IPv4 address with its prefix length, such as \"198.18.0.100/24\", found \"{text}\""));
        return None;
    };
    let interface = s.interface.as_ref().and_then(|i| {
        let name = i.get_ref();
        if name.is_empty() || name.len() > 15 || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '@')) {
            c.span(i, format!("expected a network interface name such as \"eth0\", found \"{name}\""));
            return None;
        }
        Some(name.clone())
    });
    Some(VirtualAddress { ip, prefix, interface })
}
