//! Pure: a farm file from what operators already have. An Ansible INI
//! inventory (groups become roles) or an OpenSSH client config (`Host`
//! blocks become hosts). The output is TOML text that `validate` accepts;
//! the managed files are the operator's to fill in.

use std::collections::BTreeMap;

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

/// An Ansible INI inventory as a farm file. Each host's first group is its
/// role (hosts in no group get `ungrouped`); `ansible_host`, `ansible_user`
/// and `ansible_port` become its address, user and port; `[all:vars]` gives
/// the `[ssh]` section.
pub fn ansible(name: &str, source: &str, text: &str, files: &[String]) -> String {
    let mut hosts: BTreeMap<String, Found> = BTreeMap::new();
    let mut ssh = Ssh::default();
    let mut skipped = Vec::new();
    let mut section = "ungrouped".to_string();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = h.trim().to_string();
            continue;
        }
        let mut words = shlex::split(line).unwrap_or_default().into_iter();
        let Some(first) = words.next() else { continue };
        let vars: BTreeMap<String, String> = words.filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
        match section.split_once(':') {
            Some(("all", "vars")) => {
                let Some((k, v)) = line.split_once('=') else { continue };
                let v = v.trim().trim_matches(|c| c == '\'' || c == '"').to_string();
                match k.trim() {
                    "ansible_user" => ssh.user = Some(v),
                    "ansible_port" => ssh.port = v.parse().ok(),
                    "ansible_ssh_private_key_file" => ssh.identity_file = Some(v),
                    "ansible_ssh_common_args" => common_args(&v, &mut ssh),
                    _ => {}
                }
            }
            Some(_) => {}
            None if first.contains('[') => skipped.push(format!("`{first}` (host ranges are not expanded)")),
            None => {
                let name = clean(&first);
                let h = hosts.entry(name).or_insert_with(|| Found { role: clean(&section), ..Found::default() });
                h.address = vars.get("ansible_host").cloned().or(h.address.take());
                h.user = vars.get("ansible_user").cloned().or(h.user.take());
                h.port = vars.get("ansible_port").and_then(|p| p.parse().ok()).or(h.port);
            }
        }
    }
    render(name, source, &ssh, &hosts, files, &skipped)
}

/// An OpenSSH client config as a farm file: each `Host` pattern without
/// wildcards is a host of role `hosts`, with its `HostName`, `User` and
/// `Port`; an `IdentityFile` shared by all of them goes to `[ssh]`.
pub fn ssh_config(name: &str, source: &str, text: &str, files: &[String]) -> String {
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
    render(name, source, &ssh, &hosts, files, &skipped)
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
        let text = ansible("lab farm", "inventory.ini", INI, &[]);
        let farm = crate::farm::parse(std::path::Path::new("farm.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(farm.name, "lab-farm");
        assert_eq!(farm.hosts.keys().collect::<Vec<_>>(), ["ivr-1", "web-a", "web-b"]);
        assert_eq!(farm.hosts["web-b"].address.as_deref(), Some("10.0.0.12"));
        assert_eq!((farm.hosts["ivr-1"].role.as_str(), farm.hosts["web-a"].role.as_str()), ("ivr", "web"));
        assert_eq!(farm.ssh.user.as_deref(), Some("root"));
        assert_eq!(farm.ssh.config_file.as_deref(), Some(std::path::Path::new("/etc/lab/ssh_config")));
        assert!(text.contains("port = 2222") && text.contains("user = \"deploy\""), "{text}");
        assert!(text.contains("# left out: `ivr-[2:3]` (host ranges are not expanded)"), "{text}");
    }

    #[test]
    fn an_ssh_config_gives_its_named_hosts() {
        let cfg = "Host *\n  ServerAliveInterval 5\nHost db-1 db-2\n  HostName 10.0.2.1\n  User admin\n  IdentityFile ~/.ssh/farm\nHost edge\n  HostName=10.0.3.1\n  Port 2200\n  IdentityFile ~/.ssh/farm\n";
        let text = ssh_config("ops", "config", cfg, &["/etc/app.conf".into()]);
        let farm = crate::farm::parse(std::path::Path::new("farm.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(farm.hosts.keys().collect::<Vec<_>>(), ["db-1", "db-2", "edge"]);
        assert_eq!(farm.roles["hosts"].files, ["/etc/app.conf"]);
        assert!(text.contains("port = 2200") && text.contains("identity_file = \"~/.ssh/farm\""), "{text}");
        assert!(text.contains("# left out: `Host *` (a pattern)"), "{text}");
    }
}
