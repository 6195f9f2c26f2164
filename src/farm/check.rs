//! Pure: the meaning of a farm file. Turns the raw serde tables into a
//! [`Farm`], reporting every problem at its place in the file.

use super::raw::{RawFarm, RawHost, RawReplace, RawRole, RawSetValue, RawSsh, S};
use super::{names, sha256_hex, Checker, Farm, Host, Replacement, Role, SetValue, SshSettings, Transport, DEFAULT_STATE_DIR};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;


fn flatten_set(prefix: &str, value: &RawSetValue, out: &mut Vec<(String, SetValue)>) -> Result<(), String> {
    fn plain(v: &RawSetValue) -> Result<SetValue, String> {
        Ok(match v {
            RawSetValue::Bool(b) => SetValue::Bool(*b),
            RawSetValue::Integer(i) => SetValue::Integer(*i),
            RawSetValue::Float(f) => SetValue::Float(*f),
            RawSetValue::String(s) => SetValue::String(s.clone()),
            RawSetValue::Array(a) => SetValue::Array(a.iter().map(plain).collect::<Result<_, _>>()?),
            RawSetValue::Table(_) => return Err("tables inside arrays cannot be set; set their keys one by one".into()),
        })
    }
    match value {
        RawSetValue::Table(t) => {
            for (k, v) in t {
                flatten_set(&format!("{prefix}.{}", quote_key(k)), v, out)?;
            }
        }
        v => out.push((prefix.to_string(), plain(v)?)),
    }
    Ok(())
}

/// A key as it would be written in a dotted path.
fn quote_key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// Where a host's words are in the farm file, for messages about them.
struct HostSpans {
    address: usize,
    aliases: Vec<usize>,
}

/// Every name, alias and address must pick out one host: two hosts at one
/// address and port, or an alias that is another host's name or address,
/// would make replacements and locks ambiguous.
fn unambiguous(c: &mut Checker, hosts: &BTreeMap<String, Host>, warnings: &mut Vec<String>, spans: &BTreeMap<String, HostSpans>) {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, h) in hosts {
        owner.insert(name.as_str(), name.as_str());
        if let Some(a) = &h.address {
            owner.entry(a.as_str()).or_insert(name.as_str());
        }
    }
    let mut at: BTreeMap<(String, Option<u16>), &str> = BTreeMap::new();
    for (name, h) in hosts {
        let sp = &spans[name];
        // Over SSH, one address on two ports is two hosts; on the local transport the
        // address is only a replacement token, so two hosts may never share it.
        let port = match &h.transport {
            Transport::Ssh { port, .. } => *port,
            Transport::Local { .. } => None,
        };
        if let Some(addr) = &h.address {
            if let Some(first) = at.insert((addr.clone(), port), name) {
                let other = &hosts[first];
                if h.allow_shared_address || other.allow_shared_address {
                    warnings.push(format!("hosts `{first}` and `{name}` share the address {addr}; they are two names for one machine (allow_shared_address)"));
                } else if port.is_none() && matches!(h.transport, Transport::Local { .. }) {
                    c.at(sp.address, format!("host `{name}` has the same address as host `{first}` ({addr}); a replacement rewrites an address to its host's counterpart, so each address must name one host"));
                } else {
                    c.at(sp.address, format!("host `{name}` has the same address and port as host `{first}` ({addr}); if they are two names for one machine, set allow_shared_address = true on one of them"));
                }
            }
        }
        for (alias, off) in h.aliases.iter().zip(&sp.aliases) {
            match owner.get(alias.as_str()) {
                Some(o) if *o != name.as_str() => c.at(*off, format!("alias `{alias}` of host `{name}` is already host `{o}`'s name or address")),
                _ => {
                    owner.insert(alias.as_str(), name.as_str());
                }
            }
        }
    }
}

/// The meaning of a farm file read by serde: every problem is recorded in
/// `c` at its place; the farm returned is used only when there are none.
pub(super) fn check(c: &mut Checker, raw: RawFarm, base: &Path, path: &Path, text: &str) -> Farm {
    let meta = raw.farm.into_inner();
    let name = meta.name.get_ref().trim().to_string();
    if name.is_empty() {
        c.span(&meta.name, "expected a non-empty farm name");
    } else if let Some(ch) = names::control_char(&name, false) {
        c.span(&meta.name, format!("expected a farm name without {}", names::describe(ch)));
    }
    let state_dir = match &meta.state_dir {
        Some(d) => match names::normalize_path(d.get_ref()) {
            Ok(p) if p != "/" => p,
            Ok(_) => {
                c.span(d, "expected a directory of its own for state_dir, not `/`");
                DEFAULT_STATE_DIR.to_string()
            }
            Err(e) => {
                c.span(d, format!("state_dir: {e}"));
                DEFAULT_STATE_DIR.to_string()
            }
        },
        None => DEFAULT_STATE_DIR.to_string(),
    };

    let clock_tolerance = c.duration(&meta.clock_tolerance, Duration::from_millis(500));
    let ssh = ssh_settings(c, raw.ssh.unwrap_or_default(), base);

    let roles = roles(c, raw.roles);

    let (hosts, host_spans) = hosts(c, raw.hosts, &roles, base);
    let mut warnings = Vec::new();
    unambiguous(c, &hosts, &mut warnings, &host_spans);

    let rollouts = super::rollout::check(c, raw.rollout, &roles);
    let services = super::services::check(c, raw.services, &hosts);
    let lease_store = super::lease::check(c, raw.watch, &name, base);
    let replacements = replacements(c, raw.replace, &hosts, &roles);

    Farm {
        path: path.to_path_buf(),
        sha256: sha256_hex(text.as_bytes()),
        name,
        state_dir,
        clock_tolerance,
        ssh,
        roles,
        hosts,
        replacements,
        rollouts,
        services,
        lease_store,
        warnings,
    }
}

/// `[ssh]`: how every host is reached.
fn ssh_settings(c: &mut Checker, rs: RawSsh, base: &Path) -> SshSettings {
    for (key, v) in [("user", &rs.user), ("jump", &rs.jump)] {
        if let Some(v) = v.as_ref().filter(|v| names::address_problem(v.get_ref()).is_some()) {
            c.span(v, format!("expected a plain `{key}`, found `{}`", v.get_ref().escape_debug()));
        }
    }
    SshSettings {
        user: rs.user.map(|u| u.into_inner()),
        port: rs.port.map(|p| p.into_inner()),
        identity_file: rs.identity_file.map(|p| names::resolve(base, &p)),
        config_file: rs.config_file.map(|p| names::resolve(base, &p)),
        known_hosts_file: rs.known_hosts_file.map(|p| names::resolve(base, &p)),
        connect_timeout: c.duration(&rs.connect_timeout, Duration::from_secs(10)),
        command_timeout: c.duration(&rs.command_timeout, Duration::from_secs(300)),
        jump: rs.jump.map(|j| j.into_inner()),
        sudo: rs.sudo.unwrap_or(false),
        control_persist: match &rs.control_persist {
            None => Duration::from_secs(60),
            Some(v) => humantime::parse_duration(v.get_ref()).unwrap_or_else(|e| {
                c.span(v, format!("expected a duration such as \"60s\" (or \"0s\" to close connections on exit): {e}"));
                Duration::from_secs(60)
            }),
        },
    }
}

/// `[roles.NAME]`: the files each role's hosts hold, and what runs after a change.
fn roles(c: &mut Checker, raw: BTreeMap<S<String>, RawRole>) -> BTreeMap<String, Role> {
    let mut roles = BTreeMap::new();
    for (rname, role) in raw {
        let mut files = Vec::new();
        if role.files.get_ref().is_empty() {
            c.span(&role.files, format!("expected at least one file for role `{}`", rname.get_ref()));
        }
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for f in role.files.get_ref() {
            match names::normalize_path(f.get_ref()) {
                Err(e) => c.span(f, e),
                Ok(p) => match seen.get(&p) {
                    Some(first) if first == f.get_ref() => c.span(f, format!("`{}` is listed twice", f.get_ref())),
                    Some(first) => c.span(f, format!("`{}` is listed twice: it is the same file as `{first}`", f.get_ref())),
                    None => {
                        seen.insert(p.clone(), f.get_ref().clone());
                        files.push(p);
                    }
                },
            }
        }
        if let Some(ch) = names::control_char(rname.get_ref(), false) {
            c.span(&rname, format!("expected a role name without {}", names::describe(ch)));
        }
        let mut set = BTreeMap::new();
        for (file, keys) in role.set {
            let file = match names::normalize_path(file.get_ref()) {
                Ok(p) => serde_spanned::Spanned::new(file.span(), p),
                Err(_) => file,
            };
            if !files.contains(file.get_ref()) {
                c.span(&file, format!("expected one of role `{}`'s files, found `{}`", rname.get_ref(), file.get_ref()));
                continue;
            }
            if !file.get_ref().ends_with(".toml") {
                c.span(&file, "`set` works on TOML files only (the path must end in .toml)");
                continue;
            }
            let mut pairs = Vec::new();
            for (key, value) in keys {
                if let Err(e) = toml_edit::Key::parse(key.get_ref()) {
                    c.span(&key, format!("expected a TOML key path such as \"asr.pool\": {}", e.message().trim()));
                    continue;
                }
                if let Err(e) = flatten_set(key.get_ref(), value.get_ref(), &mut pairs) {
                    c.span(&value, e);
                }
            }
            set.insert(file.get_ref().clone(), pairs);
        }
        for (key, cmd) in [("reload", &role.reload), ("health", &role.health), ("retire", &role.retire)] {
            if let Some(r) = cmd {
                if r.get_ref().trim().is_empty() {
                    c.span(r, format!("expected a command; leave `{key}` out if the role needs none"));
                } else if let Some(ch) = names::control_char(r.get_ref(), true) {
                    c.span(r, format!("expected a `{key}` command without {} (a newline is fine)", names::describe(ch)));
                }
            }
        }
        let rn = rname.into_inner();
        let take = |c: Option<S<String>>| c.map(|r| r.into_inner());
        roles.insert(
            rn.clone(),
            Role { name: rn, files, reload: take(role.reload), health: take(role.health), retire: take(role.retire), set },
        );
    }
    roles
}

/// `[hosts.NAME]`: each host, its role and how it is reached; and where each
/// name and address was written, for the checks across hosts.
fn hosts(c: &mut Checker, raw: BTreeMap<S<String>, S<RawHost>>, roles: &BTreeMap<String, Role>, base: &Path) -> (BTreeMap<String, Host>, BTreeMap<String, HostSpans>) {
    let mut hosts = BTreeMap::new();
    let mut host_spans: BTreeMap<String, HostSpans> = BTreeMap::new();
    for (hname, host) in raw {
        let h = host.get_ref();
        host_spans.insert(
            hname.get_ref().clone(),
            HostSpans {
                address: h.address.as_ref().map_or(hname.span().start, |a| a.span().start),
                aliases: h.aliases.iter().map(|a| a.span().start).collect(),
            },
        );
        if let Some(problem) = names::host_name_problem(hname.get_ref()) {
            c.span(&hname, problem);
        }
        for a in &h.aliases {
            if let Some(problem) = names::host_name_problem(a.get_ref()) {
                c.span(a, problem.replace("host name", "alias"));
            }
        }
        for (key, v) in [("user", &h.user)] {
            if let Some(v) = v.as_ref().filter(|v| names::address_problem(v.get_ref()).is_some()) {
                c.span(v, format!("expected a plain `{key}`, found `{}`", v.get_ref().escape_debug()));
            }
        }
        if !roles.contains_key(h.role.get_ref()) {
            let known: Vec<_> = roles.keys().map(String::as_str).collect();
            c.span(&h.role, format!("unknown role `{}`{}; expected one of: {}", h.role.get_ref(), names::did_you_mean(h.role.get_ref(), known.iter().copied()), known.join(", ")));
        }
        let transport = match h.transport.as_ref().map(|t| t.get_ref().as_str()) {
            None | Some("ssh") => {
                if let Some(root) = &h.root {
                    c.span(root, "`root` is only for hosts with transport = \"local\"");
                }
                if h.address.is_none() {
                    c.span(&host, format!("host `{}` needs an `address` (or transport = \"local\" with a `root`)", hname.get_ref()));
                }
                Transport::Ssh { user: h.user.as_ref().map(|u| u.get_ref().clone()), port: h.port.as_ref().map(|p| *p.get_ref()) }
            }
            Some("local") => match &h.root {
                Some(root) if names::control_char(root.get_ref(), false).is_some() => {
                    c.span(root, "expected a `root` directory without control characters");
                    Transport::Local { root: PathBuf::new() }
                }
                Some(root) => Transport::Local { root: names::resolve(base, root.get_ref()) },
                None => {
                    c.span(&host, format!("host `{}` has transport = \"local\" and needs a `root` directory", hname.get_ref()));
                    Transport::Local { root: PathBuf::new() }
                }
            },
            Some(other) => {
                c.span(h.transport.as_ref().unwrap(), format!("expected transport \"ssh\" or \"local\", found \"{other}\""));
                Transport::Local { root: PathBuf::new() }
            }
        };
        if let Some(a) = &h.address {
            if let Some(problem) = names::address_problem(a.get_ref()) {
                c.span(a, problem);
            }
        }
        let host = host.into_inner();
        let name = hname.into_inner();
        hosts.insert(
            name.clone(),
            Host {
                name,
                address: host.address.map(|a| a.into_inner()),
                role: host.role.into_inner(),
                aliases: host.aliases.into_iter().map(|a| a.into_inner()).collect(),
                transport,
                allow_shared_address: host.allow_shared_address.unwrap_or(false),
            },
        );
    }
    (hosts, host_spans)
}

/// `[[replace]]`: each replacement of one host's name by another's, when and where.
fn replacements(c: &mut Checker, raw: Vec<S<RawReplace>>, hosts: &BTreeMap<String, Host>, roles: &BTreeMap<String, Role>) -> Vec<Replacement> {
    let mut replacements = Vec::new();
    let mut by_time: BTreeMap<(Option<jiff::Timestamp>, String), usize> = BTreeMap::new();
    for (index, r) in raw.into_iter().enumerate() {
        let r = r.into_inner();
        for side in [&r.old, &r.new] {
            if !hosts.contains_key(side.get_ref()) {
                c.span(side, format!("unknown host `{}`{}; a replacement names hosts of this farm's [hosts]", side.get_ref(), names::did_you_mean(side.get_ref(), hosts.keys().map(String::as_str))));
            }
        }
        if r.old.get_ref() == r.new.get_ref() {
            c.span(&r.new, "expected `new` to differ from `old`");
        }
        let at = r.at.as_ref().and_then(|at| match at.get_ref().text().parse::<jiff::Timestamp>() {
            // RFC 3339 offsets run to 23:59; a wider one (jiff takes up to 25:59) is a typo.
            Ok(_) if offset_hours(&at.get_ref().text()).is_some_and(|h| h > 23) => {
                c.span(at, format!("expected an offset between -23:59 and +23:59 in `{}`", at.get_ref().text()));
                None
            }
            Ok(t) => Some(t),
            Err(_) => {
                c.span(at, format!("expected an RFC 3339 time with an offset, such as \"2026-12-01T02:00:00Z\", found `{}`", at.get_ref().text()));
                None
            }
        });
        let mut on = Vec::new();
        for o in r.on.iter().flat_map(|l| l.get_ref()) {
            if !hosts.contains_key(o.get_ref()) && !roles.contains_key(o.get_ref()) {
                c.span(o, format!("unknown role or host `{}` in `on`{}", o.get_ref(), names::did_you_mean(o.get_ref(), hosts.keys().chain(roles.keys()).map(String::as_str))));
            }
            on.push(o.get_ref().clone());
        }
        if let Some(list) = &r.on {
            if list.get_ref().is_empty() {
                c.span(list, "`on` is empty, so this replacement would apply nowhere; leave `on` out to mean everywhere");
            }
        }
        if let Some(prev) = by_time.insert((at, r.old.get_ref().clone()), index) {
            c.span(&r.old, format!("`{}` is already replaced at the same time by replacement #{}", r.old.get_ref(), prev + 1));
        }
        let (mut skip_paths, mut skip_lines) = (Vec::new(), Vec::new());
        if let Some(skip) = &r.skip {
            let skip = skip.get_ref();
            for p in &skip.paths {
                if !p.get_ref().starts_with('/') && !p.get_ref().starts_with('*') {
                    c.span(p, format!("expected an absolute path or a `*` glob in `skip.paths`, found `{}`", p.get_ref()));
                }
                skip_paths.push(p.get_ref().clone());
            }
            for l in &skip.lines {
                if l.get_ref().is_empty() || names::control_char(l.get_ref(), false).is_some() {
                    c.span(l, "expected a one-line `*` glob in `skip.lines`");
                }
                skip_lines.push(l.get_ref().clone());
            }
        }
        replacements.push(Replacement { index, old: r.old.into_inner(), new: r.new.into_inner(), at, on, skip_paths, skip_lines });
    }
    replacements
}


/// The hours of an RFC 3339 time's numeric offset (`+25:00` gives 25), if it has one.
fn offset_hours(text: &str) -> Option<u32> {
    let tail = text.get(text.len().checked_sub(6)?..)?;
    let b = tail.as_bytes();
    if (b[0] == b'+' || b[0] == b'-') && b[3] == b':' {
        tail[1..3].parse().ok()
    } else {
        None
    }
}
