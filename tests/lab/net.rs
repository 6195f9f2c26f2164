//! A lab on a real network: each host in its own network namespace, its
//! `eth0` a veth into one bridge (in a namespace of its own), with an
//! address in `198.18.N.0/24` (the range set aside for network benchmarks;
//! the bridge has no uplink, so nothing routes out). The workstation (the
//! test and farmctl) joins the bridge by one more veth, at `198.18.N.254`.
//! Links can be cut and healed: a host's link to the bridge, or the path
//! between two hosts only (a blackhole route on each side).

use std::process::Command;

/// One lab's segment.
pub struct Net {
    /// `fl` and 4 hex digits: the prefix of every name this lab makes.
    pub id: String,
    /// `198.18.N`.
    pub prefix: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

impl Net {
    /// Makes the bridge and the workstation's link to it, on a /24 of
    /// 198.18.0.0/15 no other lab of this machine uses.
    pub fn new() -> Net {
        let used = String::from_utf8(Command::new("ip").args(["-o", "-4", "addr"]).output().expect("ip").stdout).unwrap();
        let seed = std::process::id() as usize ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as usize);
        let n = (0..250).map(|k| 1 + (seed + k * 7) % 250).find(|n| !used.contains(&format!(" 198.18.{n}."))).expect("a free 198.18.N.0/24");
        let id = format!("fl{:04x}", seed % 0xffff);
        let net = Net { id, prefix: format!("198.18.{n}") };
        let br = net.bridge_ns();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        // The workstation's end stays here, in the machine's own namespace.
        let (ws, peer) = (format!("{}ws", net.id), format!("{}wb", net.id));
        ip(&["link", "add", &ws, "type", "veth", "peer", "name", &peer, "netns", &br]);
        ip(&["-n", &br, "link", "set", &peer, "master", "br0", "up"]);
        ip(&["addr", "add", &format!("{}.254/24", net.prefix), "dev", &ws]);
        ip(&["link", "set", &ws, "up"]);
        net
    }

    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.id)
    }

    /// The namespace of the host at index `i`.
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.id)
    }

    /// Puts host `i` on the segment at `198.18.N.(i+1)`; returns its address.
    pub fn add_host(&self, i: usize) -> String {
        let (ns, br) = (self.host_ns(i), self.bridge_ns());
        let (a, b) = (format!("{}h{i}a", self.id), format!("{}h{i}b", self.id));
        let address = format!("{}.{}", self.prefix, i + 1);
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &br]);
        ip(&["link", "set", &a, "netns", &ns]);
        ip(&["-n", &ns, "link", "set", &a, "name", "eth0"]);
        ip(&["-n", &ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "set", &b, "master", "br0", "up"]);
        address
    }

    /// Every process in host `i`'s network namespace.
    pub fn pids(&self, i: usize) -> Vec<String> {
        String::from_utf8(Command::new("ip").args(["netns", "pids", &self.host_ns(i)]).output().expect("ip").stdout).unwrap().split_whitespace().map(str::to_string).collect()
    }

    /// The index of a host by its namespace (`ID-hN`).
    fn index(ns: &str) -> usize {
        ns.rsplit_once("-h").and_then(|(_, i)| i.parse().ok()).expect("a lab host's namespace")
    }

    /// A host's link to the bridge goes down (its own `eth0` stays up, with
    /// every address it holds, and it keeps running), or comes back.
    pub fn link(&self, ns: &str, up: bool) {
        ip(&["-n", &self.bridge_ns(), "link", "set", &format!("{}h{}b", self.id, Self::index(ns)), if up { "up" } else { "down" }]);
    }

    /// Cuts (or heals) the path between the workstation and one host only,
    /// both ways: a blackhole route on each side.
    pub fn cut_workstation(&self, ns: &str, address: &str, cut: bool) {
        let op = if cut { "add" } else { "del" };
        ip(&["route", op, "blackhole", &format!("{address}/32")]);
        ip(&["-n", ns, "route", op, "blackhole", &format!("{}.254/32", self.prefix)]);
    }

    /// Which MAC addresses answer for `address` on the segment, asked from the
    /// bridge's own namespace by duplicate address detection (`arping -D`).
    pub fn macs_answering(&self, address: &str) -> Vec<String> {
        let br = self.bridge_ns();
        // A probe address on the bridge for arping to send from.
        ip_quiet(&["-n", &br, "addr", "add", &format!("{}.253/24", self.prefix), "dev", "br0"]);
        let out = Command::new("ip").args(["netns", "exec", &br, "busybox", "arping", "-D", "-c", "2", "-w", "2", "-I", "br0", address]).output().expect("arping");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut macs: Vec<String> = text.lines().filter_map(|l| l.split('[').nth(1)?.split(']').next().map(|m| m.to_lowercase())).collect();
        macs.sort();
        macs.dedup();
        macs
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let names = String::from_utf8(Command::new("ip").args(["netns", "list"]).output().expect("ip").stdout).unwrap();
        for ns in names.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(&self.id)) {
            for pid in String::from_utf8(Command::new("ip").args(["netns", "pids", ns]).output().expect("ip").stdout).unwrap().split_whitespace() {
                let _ = Command::new("kill").args(["-CONT", pid]).status();
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            ip_quiet(&["netns", "del", ns]);
        }
        ip_quiet(&["link", "del", &format!("{}ws", self.id)]);
    }
}
