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

/// The lab of the issue: 3 web and 6 IVR hosts, ivr-1..3 using web-a, ivr-4..6 web-b.
pub fn lab() -> Lab {
    let lab = Lab::start(NAMES);
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
    lab
}

pub fn farm(lab: &Lab, replace: &str) -> std::path::PathBuf {
    let text = format!(
        "[farm]\nname = \"lab\"\n\n{}\n\
         [roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\
         health = \"test ! -e /etc/ivr-web/down\"\n\
         retire = \"echo retired $(hostname) >> /var/log/farmlab/retired\"\n\n\
         [roles.ivr]\nfiles = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/peers.conf\"]\n\
         reload = \"echo reload $(hostname) >> /var/log/farmlab/reloads\"\n\n{}\n{replace}",
        lab.ssh_section(),
        lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" })
    );
    lab.write_farm("farm.toml", &text)
}

pub const WEB_A_TO_C: &str = "[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n";

