//! Pure: the meaning of `[watch]`: where the watchers of `farmctl watch`
//! keep each service's lease. On the members over SSH by default; in etcd
//! when `etcd` names its endpoints.

use super::raw::{RawWatch, S};
use super::Checker;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the watchers keep each service's lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LeaseStore {
    /// In each member's state directory, over SSH: needs nothing else.
    #[default]
    Members,
    /// An etcd lease and a key per service.
    Etcd(EtcdSettings),
}

/// `[watch] etcd = [...]` and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http://HOST:PORT` or `https://HOST:PORT`, one per etcd member.
    pub endpoints: Vec<String>,
    /// Each service's key is this prefix and the service's name.
    pub prefix: String,
    /// How long a holder's etcd lease outlives its last keep-alive: whole
    /// seconds, as etcd grants them.
    pub ttl: Duration,
    pub tls: Option<EtcdTls>,
}

/// The files of a TLS connection to etcd, as etcdctl's `--cacert`, `--cert` and `--key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' certificates.
    pub ca: PathBuf,
    /// The client certificate and its key, for an etcd that asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl LeaseStore {
    /// The name under which hosts keep a service's newest fencing token
    /// (`STATE_DIR/fence/NAME`). Each kind of lease counts its tokens in its
    /// own sequence (the members' are times in ms, etcd's are revisions), so
    /// each has its own name: a farm moved from one to the other is not
    /// refused by the old sequence.
    pub fn fence_key(&self, service: &str) -> String {
        match self {
            LeaseStore::Members => service.to_string(),
            LeaseStore::Etcd(_) => format!("{service}@etcd"),
        }
    }
}

impl EtcdSettings {
    /// The key of a service's leadership.
    pub fn key(&self, service: &str) -> String {
        format!("{}{service}", self.prefix)
    }
}

pub(super) fn check(c: &mut Checker, raw: Option<S<RawWatch>>, farm_name: &str, base: &Path) -> LeaseStore {
    let Some(raw) = raw else { return LeaseStore::Members };
    let w = raw.get_ref();
    let Some(endpoints) = &w.etcd else {
        for (key, value) in [("prefix", &w.prefix), ("ttl", &w.ttl), ("ca", &w.ca), ("cert", &w.cert), ("key", &w.key)] {
            if let Some(v) = value {
                c.span(v, format!("`{key}` is an option of the etcd lease: add `etcd = [\"http://HOST:2379\", ...]`, or remove `{key}`"));
            }
        }
        return LeaseStore::Members;
    };
    if endpoints.get_ref().is_empty() {
        c.span(endpoints, "expected at least one etcd endpoint, such as \"http://127.0.0.1:2379\"");
    }
    let mut schemes = Vec::new();
    for e in endpoints.get_ref() {
        match endpoint_problem(e.get_ref()) {
            Some(p) => c.span(e, p),
            None => schemes.push(e.get_ref().starts_with("https://")),
        }
    }
    if schemes.contains(&true) && schemes.contains(&false) {
        c.span(endpoints, "expected every etcd endpoint to use the same scheme: all http:// or all https://");
    }
    let ttl = c.duration(&w.ttl, Duration::from_secs(5));
    if let Some(t) = &w.ttl {
        if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) {
            c.span(t, "expected a ttl of whole seconds, at least \"2s\" (etcd grants leases in seconds, and raises shorter ones to its own minimum)");
        }
    }
    let prefix = match &w.prefix {
        Some(p) if !p.get_ref().starts_with('/') || p.get_ref().chars().any(char::is_control) => {
            c.span(p, "expected a key prefix that starts with `/`, such as \"/farmctl/east/\"");
            String::new()
        }
        Some(p) => p.get_ref().clone(),
        None => format!("/farmctl/{farm_name}/"),
    };
    let path = |p: &S<String>| super::names::resolve(base, p.get_ref());
    let tls = match (&w.ca, &w.cert, &w.key) {
        (None, None, None) => {
            if schemes.contains(&true) {
                c.span(endpoints, "an https:// endpoint needs `ca`: the file of the CA that signed the etcd members' certificates");
            }
            None
        }
        (None, Some(v), _) | (None, _, Some(v)) => {
            c.span(v, "a client certificate needs `ca` too: the file of the CA that signed the etcd members' certificates");
            None
        }
        (Some(ca), cert, key) => {
            if schemes.contains(&false) {
                c.span(ca, "`ca` is for https:// endpoints; these are http://");
            }
            let identity = match (cert, key) {
                (Some(cert), Some(key)) => Some((path(cert), path(key))),
                (None, None) => None,
                (Some(v), None) => {
                    c.span(v, "`cert` needs its `key`");
                    None
                }
                (None, Some(v)) => {
                    c.span(v, "`key` needs its `cert`");
                    None
                }
            };
            Some(EtcdTls { ca: path(ca), identity })
        }
    };
    LeaseStore::Etcd(EtcdSettings { endpoints: endpoints.get_ref().iter().map(|e| e.get_ref().clone()).collect(), prefix, ttl, tls })
}

/// What is wrong with an etcd endpoint, if anything: it must be
/// `http://HOST:PORT` or `https://HOST:PORT`, with nothing after.
fn endpoint_problem(e: &str) -> Option<String> {
    let Some(rest) = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://")) else {
        return Some(format!("expected an etcd endpoint such as \"http://127.0.0.1:2379\", found `{}`", e.escape_debug()));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(['/', '?', '#', '@']) && !host.chars().any(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0) => None,
        _ => Some(format!("expected `HOST:PORT` after the scheme (etcd's client port is usually 2379), found `{}`", e.escape_debug())),
    }
}

#[cfg(test)]
mod tests {
    use super::{endpoint_problem, EtcdTls, LeaseStore};
    use std::path::Path;
    use std::time::Duration;

    const HOSTS: &str = "[farm]\nname = \"east\"\n\n[roles.web]\nfiles = [\"/etc/web.toml\"]\n\n[hosts.web-a]\naddress = \"10.0.0.1\"\nrole = \"web\"\n";

    #[test]
    fn without_watch_the_lease_is_on_the_members_and_etcd_takes_its_defaults_and_paths() {
        let farm = crate::farm::parse(Path::new("farms/east.toml"), HOSTS).unwrap();
        assert_eq!(farm.lease_store, LeaseStore::Members);
        assert_eq!(farm.lease_store.fence_key("web"), "web");
        let text = format!("{HOSTS}\n[watch]\netcd = [\"https://10.0.0.11:2379\", \"https://10.0.0.12:2379\"]\nca = \"certs/ca.pem\"\ncert = \"certs/me.pem\"\nkey = \"/etc/farmctl/me-key.pem\"\n");
        let farm = crate::farm::parse(Path::new("farms/east.toml"), &text).unwrap();
        let LeaseStore::Etcd(e) = &farm.lease_store else { panic!("{:?}", farm.lease_store) };
        assert_eq!(e.endpoints, ["https://10.0.0.11:2379", "https://10.0.0.12:2379"]);
        assert_eq!((e.prefix.as_str(), e.ttl), ("/farmctl/east/", Duration::from_secs(5)), "the defaults");
        assert_eq!(e.key("web"), "/farmctl/east/web");
        assert_eq!(e.tls, Some(EtcdTls { ca: "farms/certs/ca.pem".into(), identity: Some(("farms/certs/me.pem".into(), "/etc/farmctl/me-key.pem".into())) }), "relative to the farm file");
        assert_eq!(farm.lease_store.fence_key("web"), "web@etcd", "etcd's tokens are a sequence of their own on the hosts");
    }

    #[test]
    fn an_endpoint_is_a_scheme_a_host_and_a_port() {
        for good in ["http://127.0.0.1:2379", "https://etcd-1.example:2379/", "http://[::1]:2379"] {
            assert_eq!(endpoint_problem(good), None, "{good}");
        }
        for bad in ["127.0.0.1:2379", "http://127.0.0.1", "http://:2379", "http://h:0", "http://h:2379/v3", "unix:///run/etcd.sock", "http://u@h:2379"] {
            assert!(endpoint_problem(bad).is_some(), "{bad} taken");
        }
    }
}
