//! Pure: a farm file from what operators already have. An Ansible inventory,
//! INI or YAML (groups become roles; `ansible.rs` reads it), or an OpenSSH
//! client config (`Host` blocks become hosts). The output is TOML text that
//! `validate` accepts, and the list of what was left out, each with why; the
//! managed files are the operator's to fill in.

mod ansible;

use ansible as inventory;
use std::collections::BTreeMap;

/// A farm file made from another tool's inventory, and what it left out, each with why.
#[derive(Debug)]
pub struct Imported {
    pub text: String,
    pub left_out: Vec<String>,
}

/// One host as found.
#[derive(Default, Debug, Clone, PartialEq)]
struct Found {
    address: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    role: String,
}

/// Farm-wide SSH settings as found.
#[derive(Default, Debug)]
struct Ssh {
    user: Option<String>,
    port: Option<u16>,
    identity_file: Option<String>,
    config_file: Option<String>,
    known_hosts_file: Option<String>,
    sudo: bool,
}

/// A TOML basic string.
fn quoted(s: &str) -> String {
    toml_edit::Value::from(s).to_string().trim().to_string()
}

/// A farm name, host name or role name as farmctl accepts it.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }).collect::<String>().trim_start_matches('-').to_string()
}

fn render(name: &str, source: &str, ssh: &Ssh, hosts: &BTreeMap<String, Found>, files: &[String], skipped: &[String]) -> String {
    let mut s = format!("# Imported from {source} by `farmctl import`. Fill in each role's `files`:\n# the config files farmctl manages on its hosts.\n");
    for why in skipped {
        s.push_str(&format!("# left out: {why}\n"));
    }
    s.push_str(&format!("\n[farm]\nname = {}\n", quoted(&clean(name))));
    let mut section = String::new();
    let fields: [(&str, Option<String>); 5] = [
        ("user", ssh.user.as_deref().map(quoted)),
        ("port", ssh.port.map(|p| p.to_string())),
        ("identity_file", ssh.identity_file.as_deref().map(quoted)),
        ("config_file", ssh.config_file.as_deref().map(quoted)),
        ("known_hosts_file", ssh.known_hosts_file.as_deref().map(quoted)),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            section.push_str(&format!("{k} = {v}\n"));
        }
    }
    if ssh.sudo {
        section.push_str("sudo = true\n");
    }
    if !section.is_empty() {
        s.push_str(&format!("\n[ssh]\n{section}"));
    }
    let files = if files.is_empty() { vec!["/etc/hostname".to_string()] } else { files.to_vec() };
    let list = files.iter().map(|f| quoted(f)).collect::<Vec<_>>().join(", ");
    let roles: std::collections::BTreeSet<&str> = hosts.values().map(|h| h.role.as_str()).collect();
    for r in roles {
        s.push_str(&format!("\n[roles.{}]\nfiles = [{list}]\n", quoted(r)));
    }
    let mut machines: BTreeMap<(String, Option<u16>), &str> = BTreeMap::new();
    for (name, h) in hosts {
        s.push_str(&format!("\n[hosts.{}]\nrole = {}\n", quoted(name), quoted(&h.role)));
        if let Some(first) = h.address.as_ref().and_then(|a| machines.get(&(a.clone(), h.port))) {
            s.push_str(&format!("allow_shared_address = true  # the same machine as {first}\n"));
        } else if let Some(a) = &h.address {
            machines.insert((a.clone(), h.port), name);
        }
        if let Some(a) = &h.address {
            s.push_str(&format!("address = {}\n", quoted(a)));
        }
        if let Some(u) = &h.user {
            s.push_str(&format!("user = {}\n", quoted(u)));
        }
        if let Some(p) = h.port {
            s.push_str(&format!("port = {p}\n"));
        }
    }
    s
}

/// `-F FILE` and `-o UserKnownHostsFile=FILE` from `ansible_ssh_common_args`.
fn common_args(args: &str, ssh: &mut Ssh) {
    let words = shlex::split(args).unwrap_or_default();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-F" => ssh.config_file = it.next().cloned(),
            "-o" => {
                if let Some((k, v)) = it.next().and_then(|o| o.split_once('=')) {
                    if k.eq_ignore_ascii_case("UserKnownHostsFile") {
                        ssh.known_hosts_file = Some(v.to_string());
                    }
                }
            }
            _ => {}
        }
    }
}

/// An Ansible inventory (INI or YAML) as a farm file. Each host's first
/// group is its role (hosts in no group get `ungrouped`); children groups
/// pass their variables down; ranges are expanded. `ansible_host`,
/// `ansible_user` and `ansible_port` become each host's address, user and
/// port; the same settings of `all`, with the key file, `-F` and
/// `UserKnownHostsFile` from `ansible_ssh_common_args`, and `ansible_become`,
/// give the `[ssh]` section. Everything else is left out, and named.
pub fn ansible(name: &str, source: &str, text: &str, files: &[String]) -> Result<Imported, String> {
    let inv = if inventory::looks_like_yaml(source, text) { inventory::parse_yaml(text)? } else { inventory::parse_ini(text) };
    let mut left_out = inv.left_out.clone();
    let mut ssh = Ssh::default();
    let all = inv.groups.get("all").map(|g| g.vars.clone()).unwrap_or_default();
    let pick = |vars: &BTreeMap<String, String>, keys: &[&str]| keys.iter().find_map(|k| vars.get(*k).cloned());
    ssh.user = pick(&all, &["ansible_user", "ansible_ssh_user"]);
    ssh.identity_file = pick(&all, &["ansible_ssh_private_key_file", "ansible_private_key_file"]);
    if let Some(args) = pick(&all, &["ansible_ssh_common_args"]) {
        common_args(&args, &mut ssh);
    }
    ssh.sudo = pick(&all, &["ansible_become"]).is_some_and(|b| ["true", "yes", "1", "True", "TRUE"].contains(&b.as_str()));
    if let Some(p) = pick(&all, &["ansible_port", "ansible_ssh_port"]) {
        match p.parse() {
            Ok(p) => ssh.port = Some(p),
            Err(_) => left_out.push(format!("ansible_port={p} of group all (not a port number)")),
        }
    }
    let used = ["ansible_host", "ansible_ssh_host", "ansible_user", "ansible_ssh_user", "ansible_port", "ansible_ssh_port", "ansible_ssh_private_key_file", "ansible_private_key_file", "ansible_ssh_common_args", "ansible_become"];
    // Variables farmctl has no place for, named once per group or host that sets them.
    for (g, group) in &inv.groups {
        for k in group.vars.keys().filter(|k| !used.contains(&k.as_str())) {
            left_out.push(format!("variable `{k}` of group {g} (farmctl has no place for it)"));
        }
        if g != "all" {
            for k in ["ansible_ssh_private_key_file", "ansible_ssh_common_args", "ansible_become"].iter().filter(|k| group.vars.contains_key(**k)) {
                left_out.push(format!("variable `{k}` of group {g} (farmctl takes it for the whole farm only, from group all)"));
            }
        }
    }
    for (h, vars) in &inv.host_vars {
        for k in vars.keys().filter(|k| !["ansible_host", "ansible_ssh_host", "ansible_user", "ansible_ssh_user", "ansible_port", "ansible_ssh_port"].contains(&k.as_str())) {
            left_out.push(format!("variable `{k}` of host {h} (farmctl has no place for it)"));
        }
    }
    let mut hosts = BTreeMap::new();
    for h in inv.hosts() {
        let vars = inv.vars_of(&h);
        let port = match pick(&vars, &["ansible_port", "ansible_ssh_port"]) {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) => Some(p),
                Err(_) => {
                    left_out.push(format!("ansible_port={p} of host {h} (not a port number; the host keeps the farm's port)"));
                    None
                }
            },
        };
        let found = Found {
            // As Ansible does: without `ansible_host`, the name is the address.
            address: pick(&vars, &["ansible_host", "ansible_ssh_host"]).or_else(|| Some(h.clone())),
            user: pick(&vars, &["ansible_user", "ansible_ssh_user"]).filter(|u| Some(u) != ssh.user.as_ref()),
            port: port.filter(|p| Some(*p) != ssh.port),
            role: clean(&inv.role_of(&h)),
        };
        hosts.insert(h, found);
    }
    left_out.sort();
    left_out.dedup();
    Ok(Imported { text: render(name, source, &ssh, &hosts, files, &left_out), left_out })
}

/// An OpenSSH client config as a farm file: each `Host` pattern without
/// wildcards is a host of role `hosts`, with its `HostName`, `User` and
/// `Port`; an `IdentityFile` shared by all of them goes to `[ssh]`.
pub fn ssh_config(name: &str, source: &str, text: &str, files: &[String]) -> Imported {
    let mut hosts: BTreeMap<String, Found> = BTreeMap::new();
    let mut current: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(|c: char| c.is_whitespace() || c == '=').map(|(k, v)| (k.to_ascii_lowercase(), v.trim_start_matches([' ', '\t', '=']).trim().to_string())).unwrap_or_default();
        match k.as_str() {
            "host" => {
                current.clear();
                for p in v.split_whitespace() {
                    if p.contains(['*', '?', '!']) {
                        skipped.push(format!("`Host {p}` (a pattern)"));
                    } else {
                        let n = clean(p);
                        hosts.entry(n.clone()).or_insert_with(|| Found { role: "hosts".into(), ..Found::default() });
                        current.push(n);
                    }
                }
            }
            "match" => current.clear(),
            "hostname" | "user" | "port" | "identityfile" => {
                for n in &current {
                    let h = hosts.get_mut(n).expect("entered above");
                    match k.as_str() {
                        "hostname" => h.address = Some(v.clone()),
                        "user" => h.user = Some(v.clone()),
                        "port" => h.port = v.parse().ok(),
                        _ => keys.entry(v.clone()).or_default().push(n.clone()),
                    }
                }
            }
            _ => {}
        }
    }
    let mut ssh = Ssh::default();
    if keys.len() == 1 {
        ssh.identity_file = keys.into_keys().next();
    } else if !keys.is_empty() {
        skipped.push("IdentityFile (hosts use different keys; farmctl's ssh_config handling picks each host's own)".into());
        ssh.config_file = Some(source.to_string());
    }
    Imported { text: render(name, source, &ssh, &hosts, files, &skipped), left_out: skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = "\
[web]
web-a ansible_host=10.0.0.11
web-b ansible_host=10.0.0.12 ansible_port=2222 # the new one

[ivr]
ivr-1 ansible_host=10.0.1.1 ansible_user=deploy
ivr-[2:3]

[ivr:vars]
x=1

[all:vars]
ansible_user=root
ansible_ssh_common_args='-F /etc/lab/ssh_config -o UserKnownHostsFile=/etc/lab/known_hosts'
";

    #[test]
    fn an_ansible_inventory_gives_roles_hosts_and_ssh_settings_that_parse() {
        let imported = ansible("lab farm", "inventory.ini", INI, &[]).unwrap();
        let text = &imported.text;
        let farm = crate::farm::parse(std::path::Path::new("farm.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(farm.name, "lab-farm");
        assert_eq!(farm.hosts.keys().collect::<Vec<_>>(), ["ivr-1", "ivr-2", "ivr-3", "web-a", "web-b"], "the range is expanded");
        assert_eq!(farm.hosts["web-b"].address.as_deref(), Some("10.0.0.12"));
        assert_eq!((farm.hosts["ivr-1"].role.as_str(), farm.hosts["ivr-3"].role.as_str(), farm.hosts["web-a"].role.as_str()), ("ivr", "ivr", "web"));
        assert_eq!(farm.ssh.user.as_deref(), Some("root"));
        assert_eq!(farm.ssh.config_file.as_deref(), Some(std::path::Path::new("/etc/lab/ssh_config")));
        assert!(text.contains("port = 2222") && text.contains("user = \"deploy\""), "{text}");
        assert_eq!(imported.left_out, ["variable `x` of group ivr (farmctl has no place for it)"]);
    }

    // See issue 25: a YAML inventory was parsed as INI (hosts named `all-`,
    // `children-`); children groups and group vars vanished; a bad port and a
    // bad host name disappeared without a word.
    #[test]
    fn a_yaml_inventory_with_children_and_vars_brings_everything_or_names_it() {
        let yaml = "all:\n  vars:\n    ansible_user: deploy\n    ansible_become: true\n  children:\n    east:\n      vars:\n        ansible_port: 2200\n        ntp: pool.example\n      children:\n        web:\n          hosts:\n            web-a: { ansible_host: 10.0.0.11 }\n            web-[b:c]:\n        ivr:\n          hosts:\n            ivr-1: { ansible_port: notaport }\n            \"bad;name\":\n";
        let imported = ansible("east", "hosts.yml", yaml, &[]).unwrap();
        let text = &imported.text;
        let farm = crate::farm::parse(std::path::Path::new("farm.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(farm.hosts.keys().collect::<Vec<_>>(), ["ivr-1", "web-a", "web-b", "web-c"]);
        assert_eq!(farm.hosts["web-a"].role, "web");
        assert_eq!(farm.hosts["web-a"].address.as_deref(), Some("10.0.0.11"));
        assert_eq!(farm.ssh.user.as_deref(), Some("deploy"));
        assert!(farm.ssh.sudo, "ansible_become on all");
        assert!(text.contains("port = 2200"), "east's port reaches its children's hosts: {text}");
        for gone in ["`bad;name`", "ansible_port=notaport of host ivr-1", "variable `ntp` of group east"] {
            assert!(imported.left_out.iter().any(|l| l.contains(gone)), "{gone} is named: {:?}", imported.left_out);
        }
    }

    #[test]
    fn an_ini_inventory_with_children_and_group_vars_resolves_them() {
        let ini = "[web]\nweb-[1:2]\n[db]\ndb-1:2222\n[prod:children]\nweb\ndb\n[prod:vars]\nansible_user=ops\n[web:vars]\nansible_port=2201\n";
        let imported = ansible("p", "inventory", ini, &[]).unwrap();
        let farm = crate::farm::parse(std::path::Path::new("farm.toml"), &imported.text).unwrap_or_else(|e| panic!("{e}\n{}", imported.text));
        assert_eq!(farm.hosts.keys().collect::<Vec<_>>(), ["db-1", "web-1", "web-2"]);
        assert!(imported.text.contains("port = 2201") && imported.text.contains("port = 2222") && imported.text.contains("user = \"ops\""), "{}", imported.text);
        assert!(imported.left_out.is_empty(), "{:?}", imported.left_out);
    }

    #[test]
    fn an_ssh_config_gives_its_named_hosts() {
        let cfg = "Host *\n  ServerAliveInterval 5\nHost db-1 db-2\n  HostName 10.0.2.1\n  User admin\n  IdentityFile ~/.ssh/farm\nHost edge\n  HostName=10.0.3.1\n  Port 2200\n  IdentityFile ~/.ssh/farm\n";
        let text = ssh_config("ops", "config", cfg, &["/etc/app.conf".into()]).text;
        let farm = crate::farm::parse(std::path::Path::new("farm.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(farm.hosts.keys().collect::<Vec<_>>(), ["db-1", "db-2", "edge"]);
        assert_eq!(farm.roles["hosts"].files, ["/etc/app.conf"]);
        assert!(text.contains("port = 2200") && text.contains("identity_file = \"~/.ssh/farm\""), "{text}");
        assert!(text.contains("# left out: `Host *` (a pattern)"), "{text}");
    }
}
