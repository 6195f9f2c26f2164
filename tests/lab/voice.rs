//! The voice-response lab farm of the issues: 3 web and 6 IVR hosts.
#![allow(dead_code)]

use super::Lab;

pub const NAMES: &[&str] = &["web-a", "web-b", "web-c", "ivr-1", "ivr-2", "ivr-3", "ivr-4", "ivr-5", "ivr-6"];

pub const IVR_TOML: &str = "# IVR node {H}. Main web server was web-a; see the runbook.\n\
[node]\nname = \"{H}\"\n\n\
[web]\nprimary = \"{W}\"          # serves call flows\nbackup = \"{W0}b\"\n\
urls = [\"http://{W}:8080/flows/\", \"http://x{W0}/\", 'http://{WA}/']\n\
not_ours = \"{WA0}0\"\nalso_not = \"ivr.{W0}\"\n";

pub const PEERS: &str = "# peers of {H}: {W} serves call flows\r\n\
web {W} {WA}:8080\n\
web-backup {W0}b {WA0}0:8080\n\
# x{W0} is a legacy name; so is ivr.{W0}\n\
\tweb\t{W}\t\t{WA}\n";

pub fn render(t: &str, host: &str, web: &str, addr: &str, web0: &str, addr0: &str) -> String {
    t.replace("{H}", host).replace("{W0}", web0).replace("{WA0}", addr0).replace("{WA}", addr).replace("{W}", web)
}

pub fn web_of(ivr: &str) -> &'static str {
    if ["ivr-1", "ivr-2", "ivr-3"].contains(&ivr) {
        "web-a"
    } else {
        "web-b"
    }
}

/// The lab of the issues: 3 web and 6 IVR hosts, ivr-1..3 using web-a, ivr-4..6 web-b.
pub fn lab() -> Lab {
    let lab = Lab::start(NAMES);
    fill(&lab);
    lab
}

/// Writes every host's config files.
pub fn fill(lab: &Lab) {
    for h in lab.hosts.values() {
        if h.name.starts_with("ivr") {
            let w = web_of(&h.name);
            let a = &lab.host(w).address;
            h.write("/etc/ivr/ivr.toml", render(IVR_TOML, &h.name, w, a, w, a).as_bytes());
            h.write("/etc/ivr/peers.conf", render(PEERS, &h.name, w, a, w, a).as_bytes());
        } else {
            h.write("/etc/ivr-web/web.toml", format!("[server]\nname = \"{}\"\n", h.name).as_bytes());
        }
    }
}

pub fn farm(lab: &Lab, replace: &str) -> std::path::PathBuf {
    farm_custom(lab, "echo reload $(hostname) >> /var/log/farmlab/reloads", "", replace)
}

/// The lab farm file with another IVR reload command and more `[ssh]` settings.
pub fn farm_custom(lab: &Lab, ivr_reload: &str, ssh_extra: &str, replace: &str) -> std::path::PathBuf {
    // Settings in `ssh_extra` replace the lab's own.
    let overridden: Vec<&str> = ssh_extra.lines().filter_map(|l| l.split(" =").next()).collect();
    let ssh: String = lab.ssh_section().lines().filter(|l| !overridden.iter().any(|k| l.starts_with(&format!("{k} =")))).map(|l| format!("{l}\n")).collect();
    let text = format!(
        "[farm]\nname = \"lab\"\n\n{}{ssh_extra}\n\
         [roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\
         health = \"test ! -e /etc/ivr-web/down\"\n\
         retire = \"echo retired $(hostname) >> /var/log/farmlab/retired\"\n\n\
         [roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/peers.conf\"]\n\
         reload = {ivr_reload:?}\n\n{}\n{replace}",
        ssh,
        lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" })
    );
    lab.write_farm("farm.toml", &text)
}

/// What an IVR host's two files hold after `web-a -> web-c` (ivr-1..3) or before it.
pub fn ivr_files(lab: &Lab, host: &str, switched: bool) -> (String, String) {
    let w0 = web_of(host);
    let a0 = &lab.host(w0).address;
    let (w, a) = if switched && w0 == "web-a" { ("web-c", &lab.host("web-c").address) } else { (w0, a0) };
    (render(IVR_TOML, host, w, a, w0, a0), render(PEERS, host, w, a, w0, a0))
}

pub const WEB_A_TO_C: &str = "[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n";


/// The files of a watched `web` service: web-c and web-d each name
/// themselves, and every IVR host in `ivrs` names web-c, its active member.
pub fn web_service(lab: &Lab, ivrs: &[&str]) {
    let c = lab.host("web-c").address.clone();
    for w in ["web-c", "web-d"] {
        lab.host(w).write("/etc/ivr-web/web.toml", format!("[server]\nname = \"{w}\"\n").as_bytes());
    }
    for i in ivrs {
        lab.host(i).write("/etc/ivr/ivr.toml", render(IVR_TOML, i, "web-c", &c, "web-c", &c).as_bytes());
        lab.host(i).write("/etc/ivr/peers.conf", render(PEERS, i, "web-c", &c, "web-c", &c).as_bytes());
    }
}
