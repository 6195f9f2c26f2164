//! Pure: what services ask of the plan. Which member is active (as the
//! clients' files say), the line a `strategy = "hosts"` client keeps for the
//! virtual name, and the new host name of an adopted server.

use super::refers_to;
use crate::edit::hosts;
use crate::farm::{Farm, Service, Strategy};
use crate::live::{FileState, LiveFarm};
use std::collections::BTreeMap;

/// The member the clients name (the most-named; ties go to the higher
/// priority), and the clients that name it. With `rewrite` a client names a
/// member in its managed files; with `hosts`, its hosts file maps the virtual
/// name to the member's address.
pub fn active(farm: &Farm, live: &LiveFarm, svc: &Service) -> (Option<String>, Vec<String>) {
    if svc.strategy == Strategy::Address {
        // The member that holds the virtual address serves every client.
        let holders = address_holders(live, svc);
        let clients = live.iter().filter(|(n, r)| r.is_ok() && svc.serves(n)).map(|(n, _)| n.clone()).collect();
        return (holders.into_iter().next(), clients);
    }
    let mut count: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, state) in live {
        let Ok(state) = state else { continue };
        if !svc.serves(name) {
            continue;
        }
        for m in &svc.members {
            let named = match svc.strategy {
                Strategy::Rewrite => state.files.iter().any(|(path, f)| matches!(f, FileState::Present(i) if refers_to(farm, path, &i.content, m))),
                Strategy::Hosts => matches!(state.files.get(&svc.hosts_file), Some(FileState::Present(i)) if hosts::address_of(&i.content, &svc.virtual_name).as_deref() == farm.hosts[m].address.as_deref()),
                Strategy::Address => false,
            };
            if named {
                count.entry(m.as_str()).or_default().push(name.clone());
            }
        }
    }
    let best = svc.members.iter().max_by_key(|m| (count.get(m.as_str()).map_or(0, Vec::len), std::cmp::Reverse(svc.members.iter().position(|x| x == *m))));
    match best.filter(|m| count.contains_key(m.as_str())) {
        Some(m) => (Some(m.clone()), count.remove(m.as_str()).unwrap_or_default()),
        None => (None, Vec::new()),
    }
}

/// The members that hold the service's virtual address, by this reading, in
/// priority order (more than one is a fault to report).
pub fn address_holders(live: &LiveFarm, svc: &Service) -> Vec<String> {
    let Some(a) = &svc.address else { return Vec::new() };
    let ip = a.ip.to_string();
    svc.members.iter().filter(|m| matches!(live.get(*m), Some(Ok(h)) if h.addresses.contains(&ip))).cloned().collect()
}

/// One note per service: its active member and standbys.
pub(super) fn notes(farm: &Farm, live: &LiveFarm) -> Vec<String> {
    farm.services
        .values()
        .map(|svc| {
            let (active, clients) = active(farm, live, svc);
            let standbys: Vec<&str> = svc.members.iter().filter(|m| Some(*m) != active.as_ref()).map(String::as_str).collect();
            let holders = address_holders(live, svc);
            match (active, &svc.address) {
                (Some(a), Some(v)) if holders.len() > 1 => format!("service {}: {a} holds {} (active), and so does {}: TWO MEMBERS ANSWER AT THE ADDRESS; standbys: {}", svc.name, v.cidr(), holders[1..].join(", "), standbys.join(", ")),
                (Some(a), Some(v)) => format!("service {}: {a} holds {} (active, for {} client(s)); standbys: {}", svc.name, v.cidr(), clients.len(), standbys.join(", ")),
                (None, Some(v)) => format!("service {}: no member holds {}; the watcher gives it to {}", svc.name, v.cidr(), svc.members[0]),
                (Some(a), None) => format!("service {}: {a} is active (named by {} client(s)); standbys: {}", svc.name, clients.len(), standbys.join(", ")),
                (None, None) => format!("service {}: no client read names any member ({})", svc.name, svc.members.join(", ")),
            }
        })
        .collect()
}

/// The member each `hosts` service's clients must point at: the pinned one
/// during a failover, else the one they point at now, else the first.
pub(super) fn targets(farm: &Farm, live: &LiveFarm) -> BTreeMap<String, String> {
    farm.services
        .values()
        .filter(|s| s.strategy == Strategy::Hosts)
        .map(|s| {
            let member = s.pin.clone().or_else(|| active(farm, live, s).0).unwrap_or_else(|| s.members[0].clone());
            (s.name.clone(), member)
        })
        .collect()
}

/// Whether any service edits files outside the replacements: the plan then
/// has an immediate stage.
pub(super) fn edits_any(farm: &Farm) -> bool {
    farm.services.values().any(|s| s.strategy == Strategy::Hosts || s.adopt.is_some())
}

/// The content a service wants for `host`'s file `path`, with why.
pub(super) fn edit(farm: &Farm, targets: &BTreeMap<String, String>, host: &str, path: &str, content: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let mut bytes = content.to_vec();
    let mut why = Vec::new();
    for svc in farm.services.values() {
        if svc.strategy == Strategy::Hosts && svc.hosts_file == path && svc.serves(host) {
            let member = &targets[&svc.name];
            let address = farm.hosts[member].address.as_deref().unwrap_or(member);
            let Some(next) = hosts::point(&bytes, &svc.virtual_name, address, &format!("farmctl service {}", svc.name)) else { continue };
            if next != bytes {
                why.push(format!("service {}: {} -> {member} ({address})", svc.name, svc.virtual_name));
                bytes = next;
            }
        }
        if let Some(old) = svc.adopt.as_ref().filter(|_| svc.members[0] == host && svc.hostname_file == path) {
            let want = format!("{host}\n");
            if String::from_utf8_lossy(&bytes).trim() != host {
                why.push(format!("adopt: the machine {old} is now {host}; `{old}` becomes service {}'s virtual name", svc.name));
                bytes = want.into_bytes();
            }
        }
    }
    (!why.is_empty()).then_some((bytes, why))
}

/// The command that makes an adopted server's new host name current, when
/// its host-name file is among `paths` edited.
pub(super) fn rename_command(farm: &Farm, host: &str, paths: &[&str]) -> Option<String> {
    farm.services
        .values()
        .find(|s| s.adopt.is_some() && s.members[0] == host && paths.contains(&s.hostname_file.as_str()))
        .map(|_| format!("hostname '{}'", host.replace('\'', "'\\''")))
}
