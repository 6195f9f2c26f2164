//! Pure: an Ansible inventory, INI or YAML (Ansible's own two formats), as
//! groups, children, host and group variables, with host ranges expanded.
//! What farmctl has no place for is kept in `left_out`, each named, never
//! dropped in silence.

use std::collections::{BTreeMap, BTreeSet};

/// One group as the inventory gives it.
#[derive(Default, Debug)]
pub struct Group {
    /// Hosts listed in this group itself, in the inventory's order.
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: BTreeMap<String, String>,
}

/// An inventory: groups in the order they first appear, each host's own
/// variables, and what was left out with why.
#[derive(Default, Debug)]
pub struct Inventory {
    pub order: Vec<String>,
    pub groups: BTreeMap<String, Group>,
    pub host_vars: BTreeMap<String, BTreeMap<String, String>>,
    pub left_out: Vec<String>,
}

/// Whether a host name is one farmctl takes as it is.
fn acceptable(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('-') && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl Inventory {
    fn group(&mut self, name: &str) -> &mut Group {
        if !self.groups.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.groups.entry(name.to_string()).or_default()
    }

    /// Adds `pattern` (a host, maybe a range, maybe `host:port`) to `group`, with its variables.
    fn add_hosts(&mut self, group: &str, pattern: &str, vars: BTreeMap<String, String>) {
        let names = match expand(pattern) {
            Ok(n) => n,
            Err(why) => {
                self.left_out.push(format!("host `{pattern}` of group {group} ({why})"));
                return;
            }
        };
        for name in names {
            // `host:port`, as INI inventories allow.
            let (name, port) = match name.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => (h.to_string(), Some(p.to_string())),
                _ => (name, None),
            };
            if !acceptable(&name) {
                self.left_out.push(format!("host `{name}` of group {group} (a farm host name has only letters, digits, `_`, `.` and `-`)"));
                continue;
            }
            let g = self.group(group);
            if !g.hosts.contains(&name) {
                g.hosts.push(name.clone());
            }
            let hv = self.host_vars.entry(name).or_default();
            if let Some(p) = port {
                hv.insert("ansible_port".into(), p);
            }
            hv.extend(vars.clone());
        }
    }

    /// Every group `host` belongs to, directly or through children, `all`
    /// first, then by depth from the top (as Ansible orders variables), then name.
    fn groups_of(&self, host: &str) -> Vec<&str> {
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        let mut queue: Vec<(&str, usize)> = vec![("all", 0)];
        let children_of: BTreeSet<&str> = self.groups.values().flat_map(|g| g.children.iter().map(String::as_str)).collect();
        queue.extend(self.order.iter().map(String::as_str).filter(|g| *g != "all" && !children_of.contains(g)).map(|g| (g, 1)));
        while let Some((g, d)) = queue.pop() {
            if depth.get(g).is_some_and(|old| *old >= d) || d > self.groups.len() + 1 {
                continue;
            }
            depth.insert(g, d);
            for c in self.groups.get(g).map(|g| g.children.as_slice()).unwrap_or_default() {
                queue.push((c, d + 1));
            }
        }
        let mut member: BTreeSet<&str> = self.groups.iter().filter(|(_, g)| g.hosts.iter().any(|h| h == host)).map(|(n, _)| n.as_str()).collect();
        // Parents of a member group are member groups too.
        loop {
            let more: Vec<&str> = self.groups.iter().filter(|(n, g)| !member.contains(n.as_str()) && g.children.iter().any(|c| member.contains(c.as_str()))).map(|(n, _)| n.as_str()).collect();
            if more.is_empty() {
                break;
            }
            member.extend(more);
        }
        member.insert("all");
        let mut v: Vec<&str> = member.into_iter().collect();
        v.sort_by_key(|g| (depth.get(g).copied().unwrap_or(1), *g));
        v
    }

    /// A host's variables: its groups' (outermost first), then its own.
    pub fn vars_of(&self, host: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for g in self.groups_of(host) {
            if let Some(g) = self.groups.get(g) {
                out.extend(g.vars.clone());
            }
        }
        out.extend(self.host_vars.get(host).cloned().unwrap_or_default());
        out
    }

    /// The group that lists `host` first, in the inventory's order (`all` and `ungrouped` last).
    pub fn role_of(&self, host: &str) -> String {
        let direct = |g: &&String| self.groups[*g].hosts.iter().any(|h| h == host);
        self.order
            .iter()
            .filter(|g| g.as_str() != "all" && g.as_str() != "ungrouped")
            .find(direct)
            .cloned()
            .unwrap_or_else(|| "ungrouped".to_string())
    }

    /// Every host, in the order first seen.
    pub fn hosts(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for g in &self.order {
            for h in &self.groups[g].hosts {
                if seen.insert(h.clone()) {
                    out.push(h.clone());
                }
            }
        }
        out
    }
}

/// Expands one Ansible host range: `ivr-[2:4]`, `web[01:10]` (padding kept),
/// `db-[a:c]`, `n[1:9:2]` (a stride); several ranges multiply.
pub fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else { return Ok(vec![pattern.to_string()]) };
    let close = pattern[open..].find(']').map(|c| open + c).ok_or("a `[` without `]`")?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let parts: Vec<&str> = body.split(':').collect();
    let (from, to, step) = match parts.as_slice() {
        [a, b] => (*a, *b, 1usize),
        [a, b, s] => (*a, *b, s.parse::<usize>().ok().filter(|s| *s > 0).ok_or(format!("stride `{s}` is not a positive number"))?),
        _ => return Err(format!("`[{body}]` is not a range such as [1:3]")),
    };
    let items: Vec<String> = match (from.parse::<u64>(), to.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => {
            let width = if from.starts_with('0') && from.len() > 1 { from.len() } else { 0 };
            (a..=b).step_by(step).map(|n| format!("{n:0width$}")).collect()
        }
        _ => match (from.as_bytes(), to.as_bytes()) {
            ([a], [b]) if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() && a <= b => (*a..=*b).step_by(step).map(|c| (c as char).to_string()).collect(),
            _ => return Err(format!("`[{body}]` is not a range such as [1:3] or [a:c]")),
        },
    };
    if items.len() > 10_000 {
        return Err(format!("`[{body}]` gives more than 10,000 hosts"));
    }
    let rest = expand(tail)?;
    Ok(items.iter().flat_map(|i| rest.iter().map(move |r| format!("{head}{i}{r}"))).collect())
}

/// Whether `text` is a YAML inventory: a mapping of groups at the top.
pub fn looks_like_yaml(path: &str, text: &str) -> bool {
    if path.ends_with(".yml") || path.ends_with(".yaml") {
        return true;
    }
    let first = text.lines().map(str::trim_end).find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    first.is_some_and(|l| l == "---" || (l.ends_with(':') && !l.starts_with('[') && !l.contains(' ')))
}

/// Reads an INI inventory: `[group]`, `[group:vars]`, `[group:children]`.
pub fn parse_ini(text: &str) -> Inventory {
    let mut inv = Inventory::default();
    let (mut section, mut kind) = ("ungrouped".to_string(), "hosts".to_string());
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            let (g, k) = h.trim().split_once(':').unwrap_or((h.trim(), "hosts"));
            (section, kind) = (g.to_string(), k.to_string());
            inv.group(&section);
            continue;
        }
        // A comment after the values: ` #` starts one.
        let line = line.split(" #").next().unwrap_or(line).trim();
        let Some(words) = shlex::split(line) else {
            inv.left_out.push(format!("line {} `{line}` (unbalanced quotes)", n + 1));
            continue;
        };
        match kind.as_str() {
            "vars" => match line.split_once('=') {
                Some((k, v)) => {
                    let v = v.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
                    inv.group(&section).vars.insert(k.trim().to_string(), v);
                }
                None => inv.left_out.push(format!("line {} `{line}` in [{section}:vars] (not `name=value`)", n + 1)),
            },
            "children" => {
                let child = words.first().cloned().unwrap_or_default();
                inv.group(&child);
                let g = inv.group(&section);
                if !g.children.contains(&child) {
                    g.children.push(child);
                }
            }
            "hosts" => {
                let mut it = words.into_iter();
                let Some(first) = it.next() else { continue };
                let mut vars = BTreeMap::new();
                for w in it {
                    match w.split_once('=') {
                        Some((k, v)) => {
                            vars.insert(k.to_string(), v.to_string());
                        }
                        None => inv.left_out.push(format!("`{w}` after host `{first}` on line {} (not `name=value`)", n + 1)),
                    }
                }
                inv.add_hosts(&section, &first, vars);
            }
            other => inv.left_out.push(format!("section [{section}:{other}] (Ansible knows :vars and :children)")),
        }
    }
    inv
}

fn scalar(v: &serde_norway::Value) -> Option<String> {
    match v {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn yaml_vars(inv: &mut Inventory, whose: &str, v: Option<&serde_norway::Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(serde_norway::Value::Mapping(m)) = v else { return out };
    for (k, v) in m {
        let Some(k) = scalar(k) else { continue };
        match scalar(v) {
            Some(v) => {
                out.insert(k, v);
            }
            None => inv.left_out.push(format!("variable `{k}` of {whose} (a list or a mapping; farmctl reads plain values)")),
        }
    }
    out
}

fn yaml_group(inv: &mut Inventory, name: &str, v: &serde_norway::Value) {
    inv.group(name);
    let get = |k: &str| match v {
        serde_norway::Value::Mapping(m) => m.get(k),
        _ => None,
    };
    if let serde_norway::Value::Mapping(m) = v {
        for k in m.keys().filter_map(scalar).filter(|k| !["hosts", "vars", "children"].contains(&k.as_str())) {
            inv.left_out.push(format!("key `{k}` of group {name} (a group has hosts, vars and children)"));
        }
    }
    let vars = yaml_vars(inv, &format!("group {name}"), get("vars"));
    inv.group(name).vars.extend(vars);
    if let Some(serde_norway::Value::Mapping(hosts)) = get("hosts") {
        for (h, hv) in hosts {
            let Some(h) = scalar(h) else { continue };
            let vars = yaml_vars(inv, &format!("host {h}"), Some(hv));
            inv.add_hosts(name, &h, vars);
        }
    }
    if let Some(serde_norway::Value::Mapping(children)) = get("children") {
        for (c, cv) in children {
            let Some(c) = scalar(c) else { continue };
            let g = inv.group(name);
            if !g.children.contains(&c) {
                g.children.push(c.clone());
            }
            yaml_group(inv, &c, cv);
        }
    }
}

/// Reads a YAML inventory (`all:` with `hosts`, `vars` and `children`).
pub fn parse_yaml(text: &str) -> Result<Inventory, String> {
    let doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| format!("not a YAML inventory: {e}"))?;
    let serde_norway::Value::Mapping(top) = doc else {
        return Err("not a YAML inventory: expected a mapping of groups at the top".into());
    };
    let mut inv = Inventory::default();
    for (g, v) in &top {
        let Some(g) = scalar(g) else { continue };
        yaml_group(&mut inv, &g, v);
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_with_padding_letters_and_strides() {
        assert_eq!(expand("ivr-[2:4]").unwrap(), ["ivr-2", "ivr-3", "ivr-4"]);
        assert_eq!(expand("web[08:10].x").unwrap(), ["web08.x", "web09.x", "web10.x"]);
        assert_eq!(expand("db-[a:c]").unwrap(), ["db-a", "db-b", "db-c"]);
        assert_eq!(expand("n[1:5:2]").unwrap(), ["n1", "n3", "n5"]);
        assert_eq!(expand("r[1:2]-[a:b]").unwrap(), ["r1-a", "r1-b", "r2-a", "r2-b"]);
        assert!(expand("bad[3:1]").is_err() && expand("bad[1:").is_err());
    }

    #[test]
    fn children_groups_pass_their_variables_down_and_hosts_keep_their_first_group() {
        let inv = parse_ini("[web]\nweb-a\n[ivr]\nivr-1\n[east:children]\nweb\nivr\n[east:vars]\nansible_user=deploy\n[ivr:vars]\nansible_user=ivradmin\n");
        assert_eq!(inv.vars_of("web-a")["ansible_user"], "deploy");
        assert_eq!(inv.vars_of("ivr-1")["ansible_user"], "ivradmin", "the deeper group wins");
        assert_eq!(inv.role_of("ivr-1"), "ivr");
    }
}
