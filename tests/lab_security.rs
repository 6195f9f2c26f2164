//! Security on the lab farm: shell metacharacters in names, paths and values
//! stay inert; host keys are checked; modes survive into backups.

mod lab;

use lab::voice::{farm, ivr_files, lab, WEB_A_TO_C};
use lab::{stderr, stdout};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// Marker files any injected command would create; none may ever exist.
fn markers(tag: &str) -> Vec<std::path::PathBuf> {
    (1..=6).map(|i| std::path::PathBuf::from(format!("/tmp/farmctl-pwned-{tag}-{i}"))).collect()
}

#[test]
fn shell_metacharacters_in_names_paths_and_values_are_inert() {
    let lab = lab();
    let tag = std::process::id().to_string();
    let m = markers(&tag);
    for p in &m {
        let _ = std::fs::remove_file(p);
    }
    // An injection through the path would run `touch MARKER` exactly (see issue 10: the marker once had another name).
    let evil_file = format!("/etc/ivr/peers;touch {};x.conf", m[0].display());
    let set_value = format!("'; touch {} #\n$(touch {})", m[3].display(), m[4].display());
    // The payload is live: taken unquoted by a shell, it makes its marker (which
    // is then removed again). So a marker found below means something ran.
    let _ = std::process::Command::new("sh").arg("-c").arg(format!("true {evil_file}")).output().unwrap();
    assert!(m[0].exists(), "the path's payload, run unquoted, makes its marker");
    std::fs::remove_file(&m[0]).unwrap();
    // The odd file exists on ivr-1 and names web-a.
    lab.host("ivr-1").write(&evil_file, b"upstream web-a\n");
    let text = std::fs::read_to_string(farm(&lab, WEB_A_TO_C)).unwrap()
        .replace("files = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/peers.conf\"]", &format!("files = [\"/etc/ivr/ivr.toml\", \"/etc/ivr/peers.conf\", {evil_file:?}]"))
        + &format!("\n[roles.ivr.set.\"/etc/ivr/ivr.toml\"]\n\"node.note\" = {set_value:?}\n");
    lab.write_farm("farm.toml", &text);

    // Host names and aliases with shell metacharacters never get that far: they are refused, located.
    for (what, bad) in [("alias", format!("[hosts.web-a]\naliases = [\"web-a$(touch {})\"]\n", m[1].display())), ("host", format!("[hosts.\"ivr-x;touch {}\"]\n", m[5].display()))] {
        let odd = text.replace("[hosts.web-a]\n", &bad);
        lab.write_farm("odd.toml", &odd);
        let out = lab.farmctl().args(["plan", "odd.toml"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("odd.toml:") && stderr(&out).contains("letters, digits"), "{what}: {}", stderr(&out));
    }

    let out = lab.farmctl().args(["plan", "farm.toml", "-o", "plans/p.json"]).env("USER", format!("$(touch {})", m[0].display())).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.farmctl().args(["apply", "plans/p.json"]).env("USER", format!("`touch {}`", m[1].display())).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.farmctl().args(["rollback", "plans/p.json", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    for p in &m {
        assert!(!p.exists(), "{} was created: something ran", p.display());
    }
    // (The lab hosts share the workstation's /tmp: a payload run on a host would leave its marker there too.)
    // The values arrived as data.
    let edited = String::from_utf8(lab.host("ivr-1").read(&evil_file)).unwrap();
    assert_eq!(edited, "upstream web-c\n");
    let toml = String::from_utf8(lab.host("ivr-1").read("/etc/ivr/ivr.toml")).unwrap();
    let doc: toml_edit::DocumentMut = toml.parse().unwrap();
    assert_eq!(doc["node"]["note"].as_str(), Some(set_value.as_str()));
}

#[test]
fn a_changed_host_key_is_refused_and_never_replaced() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let known = std::fs::read_to_string(&lab.known_hosts).unwrap();
    let other = std::fs::read_to_string(lab.host("web-b").dir.join("ssh_host_ed25519_key.pub")).unwrap();
    let ivr1 = &lab.host("ivr-1").address;
    let forged: String = known
        .lines()
        .map(|l| if l.starts_with(&format!("{ivr1} ")) || l.starts_with(&format!("[{ivr1}]")) { format!("{} {}", l.split(' ').next().unwrap(), other.split_whitespace().take(2).collect::<Vec<_>>().join(" ")) } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&lab.known_hosts, &forged).unwrap();
    let before = lab.snapshot();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ivr-1: cannot connect to ivr-1") && err.contains("Host key verification failed"), "{err}");
    assert!(err.contains("never accepts a key by itself"), "{err}");
    assert_eq!(std::fs::read_to_string(&lab.known_hosts).unwrap(), forged, "known_hosts is never rewritten");
    lab::assert_same(&lab.snapshot(), &before, "nothing is written anywhere");
}

#[test]
fn edited_files_and_their_backups_keep_mode_and_owner() {
    let lab = lab();
    farm(&lab, WEB_A_TO_C);
    let ivr2 = lab.host("ivr-2");
    let secret = ivr2.path("/etc/ivr/ivr.toml");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Not uid 0: farmctl runs as root here, so root's own uid would match by default (see issue 10).
    std::os::unix::fs::chown(&secret, Some(4243), Some(4244)).unwrap();
    let out = lab.farmctl().args(["apply", "farm.toml", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m = std::fs::metadata(&secret).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 4243, 4244));
    assert_eq!(String::from_utf8(ivr2.read("/etc/ivr/ivr.toml")).unwrap(), ivr_files(&lab, "ivr-2", true).0);
    let backups = ivr2.state("backups");
    assert_eq!(std::fs::metadata(ivr2.state("")).unwrap().mode() & 0o077, 0, "the host's state directory is private");
    let dir = std::fs::read_dir(&backups).unwrap().next().unwrap().unwrap().path();
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    let b = std::fs::metadata(dir.join("0")).unwrap();
    assert_eq!((b.mode() & 0o777, b.uid(), b.gid()), (0o600, 4243, 4244), "the backup of a 0600 file is 0600 too, with its owner");
    assert_eq!(String::from_utf8(std::fs::read(dir.join("0")).unwrap()).unwrap(), ivr_files(&lab, "ivr-2", false).0);
}
