//! farmctl against the OpenSSH floor and Ansible, on a lab farm of real sshd
//! hosts (see tests/lab). Prints a markdown table of medians.
//!
//!     cargo bench --bench farm -- --hosts 10,50,100 --runs 5 --ansible bench/.venv/bin/ansible-playbook --pyinfra bench/.venv/bin/pyinfra
//!     cargo bench --bench farm -- --hosts 50 --runs 3 --delays 150   # and the switch with one-way delays 0-150 ms
//!     cargo bench --bench farm -- --hosts 50 --runs 3 --delays 150 --only-switch
//!
//! `bench/run.sh` installs Ansible in a virtualenv and runs this with it.

#[path = "../tests/lab/mod.rs"]
#[allow(dead_code)]
mod lab;

use lab::Lab;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IVR_FILES: [&str; 3] = ["/etc/ivr/ivr.toml", "/etc/ivr/peers.conf", "/etc/ivr/routes.conf"];

fn padding(lines: usize) -> String {
    (0..lines).map(|i| format!("# {i:02}: a comment line of realistic length in a voice-response config\n")).collect()
}

/// Three files of about 2.5 KiB each that refer to web-a by name and address.
fn ivr_files(host: &str, web: &str, addr: &str) -> [String; 3] {
    [
        format!("# IVR node {host}\n[node]\nname = \"{host}\"\nmax_calls = 240\n\n[web]\nprimary = \"{web}\"\nurl = \"http://{web}:8080/flows/\"\nfallback = \"http://{addr}:8080/\"\n\n[asr]\npool = [\"asr-1\", \"asr-2\"]\n{}", padding(30)),
        format!("# peers of {host}\nweb {web} {addr} 8080\nweb-backup {web}b 10.0.0.99 8080\nasr asr-1 10.1.2.1 9000\n{}", padding(32)),
        format!("# call routes of {host}\nroute default via {web}\nroute /flows via {addr}\n{}", padding(33)),
    ]
}

struct Bench {
    lab: Lab,
    ivr: Vec<String>,
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

impl Bench {
    fn start(n: usize, runs: usize) -> Bench {
        let ivr: Vec<String> = (1..=n).map(|i| format!("h{i:03}")).collect();
        let mut names: Vec<&str> = vec!["web-a", "web-c"];
        names.extend(ivr.iter().map(String::as_str));
        let lab = Lab::start(&names);
        let b = Bench { lab, ivr, runs };
        b.reset();
        b.lab.host("web-a").write("/etc/ivr-web/web.toml", b"[server]\nname = \"web-a\"\n");
        b.lab.host("web-c").write("/etc/ivr-web/web.toml", b"[server]\nname = \"web-c\"\n");
        b.farm("farm-cold.toml", "control_persist = \"0s\"\n", "");
        b.farm("farm.toml", "", "");
        b
    }

    /// Puts every IVR host's files back as they were before the replacement.
    fn reset(&self) {
        let addr = &self.lab.host("web-a").address;
        for h in &self.ivr {
            for (path, content) in IVR_FILES.iter().zip(ivr_files(h, "web-a", addr)) {
                self.lab.host(h).write(path, content.as_bytes());
            }
        }
        for h in self.lab.hosts.values() {
            let _ = std::fs::remove_dir_all(h.path("/var/lib/farmctl/backups"));
        }
    }

    fn farm(&self, name: &str, ssh_extra: &str, replace_extra: &str) -> PathBuf {
        let hosts = self.lab.hosts_section(|n| if n.starts_with("web") { "web" } else { "ivr" });
        let text = format!(
            "[farm]\nname = \"bench\"\n\n{}{ssh_extra}\n[roles.web]\nfiles = [\"/etc/ivr-web/web.toml\"]\n\n[roles.ivr]\nfiles = {:?}\n\n{hosts}\n[[replace]]\nold = \"web-a\"\nnew = \"web-c\"\n{replace_extra}",
            self.lab.ssh_section(),
            IVR_FILES
        );
        self.lab.write_farm(name, &text)
    }

    fn farmctl(&self, control: &Path) -> Command {
        let mut c = self.lab.farmctl();
        c.env("FARMCTL_CONTROL_DIR", control).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn fresh_control(&self, tag: &str) -> PathBuf {
        let d = PathBuf::from(format!("/tmp/fb{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn timed(c: &mut Command) -> (f64, String) {
        let t = Instant::now();
        let out = c.output().unwrap();
        let secs = t.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success() || out.status.code() == Some(2), "{c:?} failed: {err}");
        (secs, err)
    }

    /// One fresh `ssh host cat FILES` per host, all in parallel, with the lab's keys and options.
    fn floor(&self) -> f64 {
        let t = Instant::now();
        let children: Vec<_> = self
            .lab
            .hosts
            .values()
            .map(|h| {
                let files: &[&str] = if h.name.starts_with("web") { &["/etc/ivr-web/web.toml"] } else { &IVR_FILES };
                Command::new("ssh")
                    .arg("-F").arg(&self.lab.ssh_config)
                    .arg("-i").arg(&self.lab.key)
                    .arg("-o").arg(format!("UserKnownHostsFile={}", self.lab.known_hosts.display()))
                    .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none"])
                    .args(["-p", &self.lab.port.to_string()])
                    .arg(format!("root@{}", h.address))
                    .arg("cat").args(files)
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        t.elapsed().as_secs_f64()
    }

    fn repeat(&self, mut f: impl FnMut(usize) -> f64) -> f64 {
        median((0..self.runs).map(&mut f).collect())
    }

    fn skew(&self) -> f64 {
        self.repeat(|i| self.switch(None, "host", &format!("skew{i}")).skew)
    }

    /// One scheduled switch of every host, switched by `by` (host or
    /// workstation), through `config` (an ssh_config, for delays) when given.
    /// What the hosts recorded, as farmctl reports it from their rename times.
    fn switch(&self, config: Option<&Path>, by: &str, tag: &str) -> Switch {
        self.reset();
        // Time to connect (through the relays too), read and stage every host before T.
        let per_host = if config.is_some() { 0.3 } else { 0.15 };
        let lead = 5.0 + self.ivr.len() as f64 * per_host;
        let at = jiff::Timestamp::from_millisecond((jiff::Timestamp::now().as_millisecond() as f64 + lead * 1000.0) as i64).unwrap();
        let path = self.farm("farm-at.toml", "control_persist = \"0s\"\n", &format!("at = \"{at}\"\n"));
        if let Some(c) = config {
            // Fifty relays (python) starting at once on two cores: the handshakes take seconds.
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace(&self.lab.ssh_config.display().to_string(), &c.display().to_string())
                .replace("connect_timeout = \"3s\"", "connect_timeout = \"30s\"");
            std::fs::write(&path, text).unwrap();
        }
        let (_, err) = Bench::timed(self.farmctl(&self.fresh_control(tag)).args(["apply", "farm-at.toml", "--yes", "--switch-by", by]));
        let line = err.lines().find(|l| l.contains(": skew ")).unwrap_or_else(|| panic!("no skew in {err}"));
        let num = |after: &str| line.split(after).nth(1).unwrap().split(' ').next().unwrap().trim_start_matches('+').parse::<f64>().unwrap();
        // Every host's file, checked on the host: the switch happened everywhere.
        let c = &self.lab.host("web-c").address;
        for h in &self.ivr {
            assert!(String::from_utf8(self.lab.host(h).read(IVR_FILES[0])).unwrap().contains(c.as_str()), "{h} switched");
        }
        Switch { skew: num(": skew "), first: num("renames from "), last: num(" ms to ") }
    }
}

/// What the hosts recorded of one switch: ms, the last two after T.
struct Switch {
    skew: f64,
    first: f64,
    last: f64,
}

/// The switch at one farm size with and without one-way delays spread from 0
/// to `max_delay` ms across the hosts, by the hosts' clocks and by the
/// workstation's word. One markdown row per case, medians of the runs; the
/// earliest rename of all runs, to show that none came before T.
fn switch_rows(b: &Bench, max_delay: u64) -> Vec<String> {
    let n = b.ivr.len();
    let delays: Vec<(&str, u64)> = b.ivr.iter().enumerate().map(|(i, h)| (h.as_str(), i as u64 * max_delay / (n.max(2) - 1) as u64)).collect();
    let config = b.lab.delayed_ssh_config("ssh_config_delays", &delays);
    let mut rows = Vec::new();
    for (label, cfg, by) in [("none", None, "host"), (&*format!("0-{max_delay} ms"), Some(config.as_path()), "host"), (&*format!("0-{max_delay} ms"), Some(config.as_path()), "workstation")] {
        let runs: Vec<Switch> = (0..b.runs).map(|i| b.switch(cfg, by, &format!("sw{by}{i}{}", cfg.is_some()))).collect();
        let earliest = runs.iter().map(|r| r.first).fold(f64::INFINITY, f64::min);
        let m = |f: fn(&Switch) -> f64| median(runs.iter().map(f).collect());
        rows.push(format!("| {n} | {label} | {by} | {:.1} | {:+.1} | {:+.1} | {earliest:+.1} |", m(|r| r.skew), m(|r| r.first), m(|r| r.last)));
    }
    rows
}

struct Ansible {
    playbook: PathBuf,
    dir: PathBuf,
}

impl Ansible {
    fn prepare(bench: &Bench, playbook: PathBuf) -> Ansible {
        let dir = bench.lab.dir.path().join("ansible");
        std::fs::create_dir_all(&dir).unwrap();
        let lab = &bench.lab;
        std::fs::write(dir.join("inventory.ini"), lab.ansible_inventory("ivr", &bench.ivr)).unwrap();
        let (a, c) = (lab.host("web-a").address.replace('.', "\\\\."), &lab.host("web-c").address);
        std::fs::write(
            dir.join("replace.yml"),
            format!(
                "- hosts: ivr\n  gather_facts: false\n  tasks:\n\
                 \x20   - name: web-a -> web-c\n      ansible.builtin.replace:\n        path: \"{{{{ item }}}}\"\n        regexp: '(?<![A-Za-z0-9_.-])web-a(?![A-Za-z0-9_-])'\n        replace: 'web-c'\n      loop: {IVR_FILES:?}\n\
                 \x20   - name: web-a's address -> web-c's\n      ansible.builtin.replace:\n        path: \"{{{{ item }}}}\"\n        regexp: \"(?<![A-Za-z0-9_.-]){a}(?![A-Za-z0-9_-]|\\\\.[0-9])\"\n        replace: '{c}'\n      loop: {IVR_FILES:?}\n"
            ),
        )
        .unwrap();
        Ansible { playbook, dir }
    }

    /// One run with a fresh ControlPath directory (cold), forks = hosts.
    fn run(&self, bench: &Bench, check: bool, tag: &str) -> f64 {
        let cp = PathBuf::from(format!("/tmp/fa{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cp);
        std::fs::write(
            self.dir.join("ansible.cfg"),
            format!("[defaults]\nforks = {}\nhost_key_checking = True\ngathering = explicit\nlocal_tmp = {}/tmp\n\n[ssh_connection]\npipelining = True\ncontrol_path_dir = {}\n", bench.ivr.len(), self.dir.display(), cp.display()),
        )
        .unwrap();
        let mut c = Command::new(&self.playbook);
        c.current_dir(&self.dir).env("ANSIBLE_CONFIG", self.dir.join("ansible.cfg")).args(["-i", "inventory.ini", "replace.yml"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        if check {
            c.args(["--check", "--diff"]);
        }
        let t = Instant::now();
        let out = c.output().unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "ansible failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Let its ControlPersist masters go, so the next run is cold too.
        let _ = Command::new("pkill").arg("-f").arg(cp.display().to_string()).status();
        secs
    }
}

/// pyinfra beside Ansible: the same edit, by `files.replace` (sed on the host),
/// over its own SSH (paramiko), host keys checked.
struct Pyinfra {
    bin: PathBuf,
    dir: PathBuf,
}

impl Pyinfra {
    fn prepare(bench: &Bench, bin: PathBuf) -> Pyinfra {
        let dir = bench.lab.dir.path().join("pyinfra");
        std::fs::create_dir_all(&dir).unwrap();
        let lab = &bench.lab;
        let hosts: Vec<String> = bench
            .ivr
            .iter()
            .map(|h| {
                format!(
                    "    ({h:?}, {{\"ssh_hostname\": {:?}, \"ssh_port\": {}, \"ssh_user\": \"root\", \"ssh_key\": {:?}, \"ssh_known_hosts_file\": {:?}, \"ssh_strict_host_key_checking\": \"yes\"}}),\n",
                    lab.host(h).address,
                    lab.port,
                    lab.key.display().to_string(),
                    lab.known_hosts.display().to_string()
                )
            })
            .collect();
        std::fs::write(dir.join("inventory.py"), format!("ivr = [\n{}]\n", hosts.concat())).unwrap();
        // sed's basic regular expressions: web-a (and its address) as a whole name.
        let a = lab.host("web-a").address.replace('.', "\\.");
        let c = &lab.host("web-c").address;
        let ops: String = IVR_FILES
            .iter()
            .map(|p| {
                format!(
                    "files.replace(name=\"web-a -> web-c in {p}\", path={p:?}, text=r\"\\(^\\|[^A-Za-z0-9_.-]\\)web-a\\([^A-Za-z0-9_-]\\|$\\)\", replace=r\"\\1web-c\\2\")\n\
                     files.replace(name=\"web-a's address in {p}\", path={p:?}, text=r\"\\(^\\|[^0-9.]\\){a}\\([^0-9]\\|$\\)\", replace=r\"\\1{c}\\2\")\n"
                )
            })
            .collect();
        std::fs::write(dir.join("deploy.py"), format!("from pyinfra.operations import files\n\n{ops}")).unwrap();
        Pyinfra { bin, dir }
    }

    /// One run: `--dry` (what it would change) or the real one; parallel = hosts.
    fn run(&self, bench: &Bench, dry: bool) -> f64 {
        let mut c = Command::new(&self.bin);
        c.current_dir(&self.dir).args(["-y", "--parallel", &bench.ivr.len().to_string(), "inventory.py", "deploy.py"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        if dry {
            c.arg("--dry");
        }
        let t = Instant::now();
        let out = c.output().unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert!(out.status.success(), "pyinfra failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        secs
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<usize> = get("--hosts").unwrap_or_else(|| "10,50".into()).split(',').map(|s| s.parse().unwrap()).collect();
    let runs: usize = get("--runs").map_or(5, |r| r.parse().unwrap());
    let ansible = get("--ansible").map(|p| std::path::absolute(PathBuf::from(p)).expect("a path"));
    let pyinfra = get("--pyinfra").map(|p| std::path::absolute(PathBuf::from(p)).expect("a path"));
    let only_switch = args.iter().any(|a| a == "--only-switch");
    if !only_switch {
        println!("| hosts | OpenSSH floor (s) | plan cold (s) | apply FARM cold (s) | warm apply PLAN (s) | switch skew (ms) | ansible --check --diff (s) | ansible run (s) | pyinfra --dry (s) | pyinfra run (s) | plan / floor | apply / floor | warm / floor | ansible check / plan | ansible run / apply | pyinfra dry / plan | pyinfra run / apply |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let mut switch_table = Vec::new();
    for n in sizes {
        let b = Bench::start(n, runs);
        if let Some(secs) = get("--keep") {
            // For profiling by hand: keep the lab up and say where it is.
            println!("lab at {} (farm.toml, farm-cold.toml); up for {secs} s", b.lab.dir.path().display());
            std::thread::sleep(Duration::from_secs(secs.parse().unwrap()));
            return;
        }
        // --only-switch: just the switch table (with --delays).
        if !only_switch {
            let floor = b.repeat(|_| b.floor());
            let plan = b.repeat(|i| Bench::timed(b.farmctl(&b.fresh_control(&format!("p{i}"))).args(["plan", "farm-cold.toml", "-o", "plans/cold.json"])).0);
            let apply = b.repeat(|i| {
                b.reset();
                Bench::timed(b.farmctl(&b.fresh_control(&format!("a{i}"))).args(["apply", "farm-cold.toml", "--yes"])).0
            });
            let warm = b.repeat(|i| {
                b.reset();
                let control = b.fresh_control(&format!("w{i}"));
                Bench::timed(b.farmctl(&control).args(["plan", "farm.toml", "-o", "plans/warm.json"]));
                let secs = Bench::timed(b.farmctl(&control).args(["apply", "plans/warm.json"])).0;
                let _ = Command::new("pkill").arg("-f").arg(control.display().to_string()).status();
                secs
            });
            let skew = b.skew();
            let (check, real) = match &ansible {
                Some(pb) => {
                    let a = Ansible::prepare(&b, pb.clone());
                    let ar = b.runs.min(3);
                    let check = median((0..ar).map(|i| { b.reset(); a.run(&b, true, &format!("c{i}")) }).collect());
                    let real = median((0..ar).map(|i| { b.reset(); a.run(&b, false, &format!("r{i}")) }).collect());
                    // The real run must have done the same edit farmctl does.
                    let (toml, _, _) = { let f = ivr_files(&b.ivr[0], "web-c", &b.lab.host("web-c").address); (f[0].clone(), f[1].clone(), f[2].clone()) };
                    assert_eq!(String::from_utf8(b.lab.host(&b.ivr[0]).read(IVR_FILES[0])).unwrap(), toml, "ansible made the same edit");
                    (check, real)
                }
                None => (f64::NAN, f64::NAN),
            };
            let (dry, py) = match &pyinfra {
                Some(bin) => {
                    let p = Pyinfra::prepare(&b, bin.clone());
                    let pr = b.runs.min(3);
                    let dry = median((0..pr).map(|_| { b.reset(); p.run(&b, true) }).collect());
                    let py = median((0..pr).map(|_| { b.reset(); p.run(&b, false) }).collect());
                    // As for Ansible: the real run made the same edit farmctl does.
                    let want = ivr_files(&b.ivr[0], "web-c", &b.lab.host("web-c").address);
                    assert_eq!(String::from_utf8(b.lab.host(&b.ivr[0]).read(IVR_FILES[0])).unwrap(), want[0], "pyinfra made the same edit");
                    (dry, py)
                }
                None => (f64::NAN, f64::NAN),
            };
            println!(
                "| {n} | {floor:.2} | {plan:.2} | {apply:.2} | {warm:.2} | {skew:.1} | {check:.1} | {real:.1} | {dry:.1} | {py:.1} | {:.2}x | {:.2}x | {:.2}x | {:.1}x | {:.1}x | {:.1}x | {:.1}x |",
                plan / floor,
                apply / floor,
                warm / floor,
                check / plan,
                real / apply,
                dry / plan,
                py / apply
            );
        }
        if let Some(max) = get("--delays") {
            switch_table.extend(switch_rows(&b, max.parse().expect("--delays MS")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !switch_table.is_empty() {
        if !only_switch {
            println!();
        }
        println!("| hosts | one-way delays | switch by | skew (ms) | first rename after T (ms) | last rename after T (ms) | earliest of all runs (ms) |");
        println!("|---|---|---|---|---|---|---|");
        for row in switch_table {
            println!("{row}");
        }
    }
}
