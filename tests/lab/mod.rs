//! The lab farm: real OpenSSH servers on loopback, one per host, each in its
//! own mount and UTS namespace (`unshare -mu`) with its own hostname and its
//! own config directories bind-mounted from a temp dir. Needs root and
//! Debian's openssh-server; `.ci/run` installs it. A lab that cannot start
//! fails the test loudly: it never skips.
#![allow(dead_code)]

pub mod net;
pub mod voice;
pub mod watcher;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directories each lab host gets to itself, bind-mounted over the real ones.
/// `/root` too: the workstation's own shell start-up files (which may start
/// dozens of processes per SSH session) are not part of a lab host.
pub const MOUNTS: &[&str] = &["/etc/ivr", "/etc/ivr-web", "/var/lib/farmctl", "/var/log/farmlab", "/root"];

pub struct LabHost {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// The host's private directory; `dir/etc/ivr` is its `/etc/ivr`.
    pub dir: PathBuf,
    sshd: Option<Child>,
    /// tmpfs mounted over some of `dir`'s directories, unmounted on drop.
    tmpfs: Vec<PathBuf>,
    /// The host's userland is BusyBox alone (see [`Options::busybox`]).
    pub busybox: bool,
    /// The host's `/bin/sh` is bash (see [`Options::bash_sh`]).
    pub bash_sh: bool,
    /// On a network lab: the host's network namespace.
    pub netns: Option<String>,
}

/// The sshd `ForceCommand` of every lab host: runs the client's command, unless
/// a one-shot rule in `<host dir>/inject` ("PHASE ACTION") says to fail when a
/// farmctl script of that phase arrives. Phases: read, stage, switch.
/// Actions: die (the host goes down before the script runs), die-midway (it
/// goes down 0.1 s after a staged copy starts to be written, so that a
/// partial copy exists), die-armed (it goes down right after the script
/// staged and said `ARMED`), hang (sshd stops answering).
const INJECT: &str = r#"#!/bin/sh
H=__DIR__
cmd=$SSH_ORIGINAL_COMMAND
rule=$(cat "$H/inject" 2>/dev/null)
phase=${rule%% *}; action=${rule#* }
case "$phase" in
  read) marker='kernel/hostname' ;;
  stage) marker='STAGED' ;;
  switch) marker='echo ARMED' ;;
  *) marker='' ;;
esac
if [ -n "$marker" ] && printf '%s' "$cmd" | grep -qF -- "$marker"; then
  rm -f "$H/inject"
  echo "$phase $action $(date +%s%N)" >> "$H/injected"
  case "$action" in
    die) kill -9 "$(cat "$H/sshd.pid")" "$PPID"; exit 255 ;;
    # In both: the script's processes (their own process group) are killed
    # first, in one signal: killed after the session, the script would read
    # the end of its input and clean up before it died.
    die-midway) exec 3<&0; setsid /bin/sh -c "$cmd" <&3 & spid=$!
      # Dies once a staged copy (not the replaceability probe) is being written, or after 10 s.
      i=0; while [ $i -lt 200 ] && ! ls -a /etc/ivr /etc/ivr-web 2>/dev/null | grep '\.farmctl-' | grep -qv -- '-probe$'; do sleep 0.05; i=$((i+1)); done
      sleep 0.1; kill -9 "-$spid"; kill -9 "$(cat "$H/sshd.pid")" "$PPID" 0; exit 255 ;;
    hang) kill -STOP "$(cat "$H/sshd.pid")"; kill -STOP "$PPID"; sleep 100000 ;;
    # The switch phase alone: the script runs, staging its copies, and dies
    # with its host right after it says ARMED (its copies and lock are left).
    die-armed) exec 3<&0
      { setsid /bin/sh -c "$cmd" <&3 & echo $! > "$H/script.pid"; wait $!; } | while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in ARMED) read -r spid < "$H/script.pid"; kill -9 "-$spid"; echo "armed $(date +%s%N)" >> "$H/injected"
          kill -9 "$(cat "$H/sshd.pid")" "$PPID" 0; exit 255 ;; esac
      done; exit 255 ;;
  esac
fi
# A host whose clock is off (see LabHost::skew_clock): its own `date` first.
[ -d "$H/fakebin" ] && PATH="$H/fakebin:$PATH" && export PATH
exec /bin/sh -c "$cmd"
"#;

impl LabHost {
    /// A path on this host, seen from the workstation.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.dir.join(host_path.trim_start_matches('/'))
    }

    /// A path under this host's own farmctl state directory (`/var/lib/farmctl/hosts/NAME`).
    pub fn state(&self, rel: &str) -> PathBuf {
        self.path(&format!("/var/lib/farmctl/hosts/{}/{rel}", self.name))
    }

    /// Sets this host's clock, as its commands see it, `ms` off the real one:
    /// a `date` that adds `ms` to `date +%s%N` comes first in its sessions' PATH.
    pub fn skew_clock(&self, ms: i64) {
        let bin = self.dir.join("fakebin");
        std::fs::create_dir_all(&bin).unwrap();
        let date = bin.join("date");
        std::fs::write(&date, format!("#!/bin/sh\nif [ \"$1\" = +%s%N ]; then echo $(( $(/bin/date +%s%N) + {ms}000000 )); else exec /bin/date \"$@\"; fi\n")).unwrap();
        std::fs::set_permissions(&date, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let perl = bin.join("perl");
        std::fs::write(&perl, "#!/bin/sh\nexit 127\n").unwrap();
        std::fs::set_permissions(&perl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    pub fn read(&self, host_path: &str) -> Vec<u8> {
        std::fs::read(self.path(host_path)).unwrap_or_else(|e| panic!("{}:{host_path}: {e}", self.name))
    }

    pub fn write(&self, host_path: &str, bytes: &[u8]) {
        let p = self.path(host_path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// Kills this host's sshd: the host is down.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host dies: its sshd and every session and command under it, at
    /// once. On a network lab, every process of the host, and its link goes
    /// down with the addresses it held still on it, as on a crashed machine.
    pub fn crash(&mut self) {
        if let Some(pid) = self.pid() {
            signal_tree(pid, "KILL");
        }
        let pids = self.all_pids();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        }
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["-n", ns, "link", "set", "eth0", "down"]).status();
        }
        self.kill();
    }

    /// The host hangs: its sshd and sessions stop (SIGSTOP) until [`LabHost::resume`].
    pub fn hang(&self) {
        if let Some(pid) = self.pid() {
            signal_tree(pid, "STOP");
        }
        let pids = self.all_pids();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-STOP").args(&pids).status();
        }
    }

    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal_tree(pid, "CONT");
        }
        let pids = self.all_pids();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-CONT").args(&pids).status();
        }
    }

    /// Arms a one-shot fault for the next farmctl script of `phase` (see INJECT).
    pub fn inject(&self, phase: &str, action: &str) {
        std::fs::write(self.dir.join("inject"), format!("{phase} {action}")).unwrap();
    }

    /// Whether an injected fault has fired.
    pub fn injected(&self) -> bool {
        self.dir.join("injected").exists()
    }

    /// Starts (or restarts) this host's sshd in its own namespaces.
    fn spawn(&mut self) {
        let cfg = self.dir.join("sshd_config");
        let mut mounts: String = MOUNTS
            .iter()
            .map(|m| format!("mount --bind '{}' '{m}' && ", self.dir.join(m.trim_start_matches('/')).display()))
            .collect();
        if self.bash_sh {
            // /bin/sh is a link to dash: bash stands over dash, as RHEL's /bin/sh is bash.
            mounts.push_str("mount --bind \"$(command -v bash)\" \"$(readlink -f /bin/sh)\" && ");
        }
        if self.busybox {
            // Last: once BusyBox's applets stand over /usr/bin, `mount` is BusyBox's too.
            let d = self.dir.display();
            mounts.push_str(&format!("mount --bind '{d}/passwd' /etc/passwd && mount --bind '{d}/empty' /usr/local/bin && mount --bind '{d}/bb' /usr/bin && "));
        }
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        let child = command
            .args(["-mu", "--propagation", "private", "sh", "-c"])
            .arg(format!("hostname '{}' && {mounts} exec /usr/sbin/sshd -D -e -f '{}'", self.name, cfg.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("unshare");
        // sshd -D writes no pid file; the injection wrapper needs the listener's pid.
        std::fs::write(self.dir.join("sshd.pid"), child.id().to_string()).unwrap();
        self.sshd = Some(child);
        let a: SocketAddr = format!("{}:{}", self.address, self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "lab host {} never listened: {}", self.name, std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Brings a crashed host back, with its files as the crash left them
    /// (on a network lab, its link too, with the addresses it held).
    pub fn restart(&mut self) {
        self.kill();
        if let Some(ns) = &self.netns {
            run(Command::new("ip").args(["-n", ns, "link", "set", "eth0", "up"]));
        }
        self.spawn();
    }

    /// Every process of this host: on a network lab, all of its namespace's.
    fn all_pids(&self) -> Vec<String> {
        match &self.netns {
            Some(ns) => String::from_utf8(Command::new("ip").args(["netns", "pids", ns]).output().unwrap().stdout).unwrap().split_whitespace().map(str::to_string).collect(),
            None => Vec::new(),
        }
    }

    /// Runs `sh -c script` inside this host's network namespace (a network lab's host).
    pub fn net_exec(&self, script: &str) -> Output {
        let ns = self.netns.as_ref().expect("a network lab host");
        Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).output().unwrap()
    }

    pub fn pid(&self) -> Option<u32> {
        self.sshd.as_ref().map(|c| c.id())
    }
}

/// How a lab is set up beyond the defaults.
#[derive(Default)]
pub struct Options {
    /// (host, directory, size): a small tmpfs over that host directory, for a full disk.
    pub tmpfs: Vec<(&'static str, &'static str, &'static str)>,
    /// Hosts whose userland is BusyBox alone, as an appliance or Alpine has
    /// it: in the host's mount namespace, a directory of BusyBox applet links
    /// (and a copy of `sudo`, as a package would add) stands over `/usr/bin`
    /// (so `/bin/sh` is BusyBox's `ash`: no perl, no GNU `stat`/`date`, no
    /// `flock`, no `nohup`), an empty one over `/usr/local/bin`, and a copy of
    /// `/etc/passwd` whose login shells are `/bin/sh`.
    pub busybox: Vec<&'static str>,
    /// Hosts whose `/bin/sh` is bash (in POSIX mode, as invoked as `sh`), as on RHEL.
    pub bash_sh: Vec<&'static str>,
    /// Every host in its own network namespace on one bridge (see `net.rs`).
    pub network: bool,
}

/// Makes `user` if it is missing: an unlocked account (OpenSSH without PAM
/// refuses a locked one, `!`, even for a key) with `/bin/sh`. Changes
/// `/etc/passwd` only when something is missing: renaming a new
/// `/etc/passwd` into place detaches the copy a BusyBox lab host has bind
/// mounted over it, so a test binary that starts BusyBox hosts makes its
/// users first (before any lab starts).
pub fn ensure_user(user: &str) {
    if !Command::new("id").arg(user).output().unwrap().status.success() {
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", user]));
    }
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let unlocked = shadow.lines().any(|l| l.split(':').take(2).eq([user, "*"]));
    if !unlocked {
        run(Command::new("usermod").args(["-p", "*", user]));
    }
}

/// Makes `dir/bb` (BusyBox and its applet links, and sudo), `dir/empty` and `dir/passwd`.
fn busybox_userland(dir: &Path) {
    let bb = ["/bin/busybox", "/usr/bin/busybox"].iter().map(PathBuf::from).find(|p| p.exists()).expect("busybox is installed (the README's test command installs it)");
    let bin = dir.join("bb");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::copy(&bb, bin.join("busybox")).unwrap();
    let list = run(Command::new(&bb).arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    if let Some(sudo) = ["/usr/bin/sudo", "/bin/sudo"].iter().map(Path::new).find(|p| p.exists()) {
        std::fs::copy(sudo, bin.join("sudo")).unwrap();
        std::fs::set_permissions(bin.join("sudo"), std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    }
    write_passwd(dir);
}

/// A BusyBox host's `/etc/passwd`: the machine's, with `/bin/sh` for login
/// shells. Written in place, so that a bind mount of it sees a user added later.
fn write_passwd(dir: &Path) {
    let passwd: String = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(':').collect();
            if f.len() == 7 && !f[6].ends_with("nologin") && !f[6].ends_with("false") {
                f[6] = "/bin/sh";
            }
            f.join(":") + "\n"
        })
        .collect();
    std::fs::write(dir.join("passwd"), passwd).unwrap();
}

/// Sends a signal to a process and all its descendants.
pub fn signal_tree(root: u32, signal: &str) {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        if let Some(ppid) = after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        all.extend(children.get(&all[i]).cloned().unwrap_or_default());
        i += 1;
    }
    // And every process in the host's own mount namespace: a session whose
    // parent already exited (reparented to init) is still part of the host.
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    if let (Some(host_ns), Some(our_ns)) = (ns(&root.to_string()), ns("self")) {
        if host_ns != our_ns {
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(pid) = name.parse::<u32>() {
                    if !all.contains(&pid) && ns(&name).as_ref() == Some(&host_ns) {
                        all.push(pid);
                    }
                }
            }
        }
    }
    let _ = Command::new("kill").arg(format!("-{signal}")).args(all.iter().map(|p| p.to_string())).status();
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    /// 22, unless a system sshd already holds port 22 on every address.
    pub port: u16,
    pub hosts: BTreeMap<String, LabHost>,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub ssh_config: PathBuf,
    pub control_dir: PathBuf,
    pub journal: PathBuf,
    /// On a network lab: the segment (dropped after the hosts).
    pub net: Option<net::Net>,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A /24 of loopback no other lab is using (tests run in parallel processes).
fn free_subnet(hosts: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..50 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let r = h.finish();
        let net = format!("127.{}.{}", 20 + r % 200, 1 + (r >> 8) % 250);
        let busy = (1..=hosts).any(|i| {
            let a: SocketAddr = format!("{net}.{i}:22").parse().unwrap();
            TcpStream::connect_timeout(&a, Duration::from_millis(50)).is_ok()
        });
        if !busy {
            return net;
        }
    }
    panic!("no free loopback subnet for a lab");
}

fn require_prerequisites() {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    assert!(root, "the lab farm needs root (it starts sshd in namespaces); run the README's test command");
    assert!(
        Path::new("/usr/sbin/sshd").exists(),
        "the lab farm needs /usr/sbin/sshd: run the README's test command, which installs openssh-server"
    );
    for m in MOUNTS {
        std::fs::create_dir_all(m).unwrap();
    }
    std::fs::create_dir_all("/run/sshd").unwrap();
}

impl Lab {
    /// Starts one sshd per name.
    pub fn start(names: &[&str]) -> Lab {
        Lab::start_with(names, Options::default())
    }

    /// Starts one sshd per name, with the given options.
    pub fn start_with(names: &[&str], opts: Options) -> Lab {
        require_prerequisites();
        let dir = tempfile::Builder::new().prefix("farmlab").tempdir().unwrap();
        let d = dir.path();
        let key = d.join("id_ed25519");
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "farmlab", "-f"]).arg(&key));
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let ssh_config = d.join("ssh_config");
        std::fs::write(&ssh_config, "# empty: the lab ignores the operator's ~/.ssh/config\n").unwrap();
        let segment = opts.network.then(net::Net::new);
        let net = if segment.is_some() { String::new() } else { free_subnet(names.len()) };
        let port = if segment.is_some() || std::net::TcpListener::bind(format!("{net}.1:22")).is_ok() { 22 } else { 2222 };
        let mut known = String::new();
        let mut hosts = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let address = match &segment {
                Some(s) => s.add_host(i),
                None => format!("{net}.{}", i + 1),
            };
            let hdir = d.join(name);
            for m in MOUNTS {
                std::fs::create_dir_all(hdir.join(m.trim_start_matches('/'))).unwrap();
            }
            let hostkey = hdir.join("ssh_host_ed25519_key");
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&hostkey));
            let pubkey = std::fs::read_to_string(hdir.join("ssh_host_ed25519_key.pub")).unwrap();
            let mut parts = pubkey.split_whitespace();
            let pattern = if port == 22 { address.clone() } else { format!("[{address}]:{port}") };
            known.push_str(&format!("{pattern} {} {}\n", parts.next().unwrap(), parts.next().unwrap()));
            let cfg = hdir.join("sshd_config");
            // On a network lab the host has its own stack: sshd listens on
            // every address it holds, a service's virtual address among them.
            let listen = if segment.is_some() { "0.0.0.0" } else { address.as_str() };
            std::fs::write(
                &cfg,
                format!(
                    "ListenAddress {listen}\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                     StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     MaxStartups 200:30:400\nMaxSessions 50\nLogLevel ERROR\nSubsystem sftp internal-sftp\n\
                     ForceCommand {}\n",
                    hostkey.display(),
                    d.join("authorized_keys").display(),
                    hdir.join("sshd-own.pid").display(),
                    hdir.join("inject.sh").display()
                ),
            )
            .unwrap();
            let inject = hdir.join("inject.sh");
            std::fs::write(&inject, INJECT.replace("__DIR__", &format!("'{}'", hdir.display()))).unwrap();
            std::fs::set_permissions(&inject, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            let mut tmpfs = Vec::new();
            for (h, path, size) in &opts.tmpfs {
                if *h == *name {
                    let target = hdir.join(path.trim_start_matches('/'));
                    run(Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}")]).arg("tmpfs").arg(&target));
                    tmpfs.push(target);
                }
            }
            let busybox = opts.busybox.contains(name);
            if busybox {
                busybox_userland(&hdir);
            }
            let bash_sh = opts.bash_sh.contains(name);
            let netns = segment.as_ref().map(|s| s.host_ns(i));
            let mut host = LabHost { name: name.to_string(), address, port, dir: hdir, sshd: None, tmpfs, busybox, bash_sh, netns };
            host.spawn();
            hosts.insert(name.to_string(), host);
        }
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, known).unwrap();
        let control_dir = PathBuf::from(format!("/tmp/fl{}", &d.file_name().unwrap().to_string_lossy()[7..]));
        std::fs::create_dir_all(&control_dir).unwrap();
        Lab { journal: d.join("journal.jsonl"), dir, port, hosts, key, known_hosts, ssh_config, control_dir, net: segment }
    }

    pub fn host(&self, name: &str) -> &LabHost {
        &self.hosts[name]
    }

    pub fn host_mut(&mut self, name: &str) -> &mut LabHost {
        self.hosts.get_mut(name).unwrap()
    }

    /// The `[ssh]` section that points farmctl at this lab.
    pub fn ssh_section(&self) -> String {
        format!(
            "[ssh]\nuser = \"root\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts_file = \"{}\"\nconfig_file = \"{}\"\nconnect_timeout = \"3s\"\ncommand_timeout = \"20s\"\n",
            self.port,
            self.key.display(),
            self.known_hosts.display(),
            self.ssh_config.display()
        )
    }

    /// Lets `user` (made if missing: an unlocked account with `/bin/sh`) log in
    /// to every lab host with the lab's key, and gives it `sudo` as `rule`
    /// says (`ALL=(ALL) NOPASSWD: ALL`, or `ALL=(ALL) ALL` for one that asks
    /// for a password). Returns the `[ssh]` section for it, with `sudo = true`.
    pub fn login_user(&self, user: &str, rule: &str) -> String {
        ensure_user(user);
        for h in self.hosts.values().filter(|h| h.busybox) {
            write_passwd(&h.dir);
        }
        // sshd reads the keys as the user: every directory above them must let it in.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(self.dir.path().join("authorized_keys"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let sudoers = format!("/etc/sudoers.d/farmctl-lab-{user}");
        std::fs::write(&sudoers, format!("{user} {rule}\n")).unwrap();
        std::fs::set_permissions(&sudoers, std::fs::Permissions::from_mode(0o440)).unwrap();
        self.ssh_section().replace("user = \"root\"", &format!("user = \"{user}\"\nsudo = true"))
    }

    /// Runs `script` on a lab host over SSH as root, as farmctl would reach
    /// it (in the host's own mount namespace: a BusyBox host's userland);
    /// its stdout and stderr.
    pub fn over_ssh(&self, name: &str, script: &str) -> String {
        let host = self.host(name);
        let out = Command::new("ssh")
            .args(["-F", &self.ssh_config.display().to_string(), "-i", &self.key.display().to_string(), "-o", &format!("UserKnownHostsFile={}", self.known_hosts.display()), "-o", "BatchMode=yes", "-p", &host.port.to_string()])
            .arg(format!("root@{}", host.address))
            .arg(script)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// An ssh_config that reaches each named host through the lab's delaying
    /// relay (tests/lab/delay.py as ProxyCommand), `ms` each way, and every
    /// other host directly.
    pub fn delayed_ssh_config(&self, name: &str, delays: &[(&str, u64)]) -> PathBuf {
        let relay = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/delay.py");
        let mut text = String::new();
        for (host, ms) in delays {
            text.push_str(&format!(
                "Host {}\n  ProxyCommand python3 {} {ms} %h %p\n",
                self.host(host).address,
                relay.display()
            ));
        }
        text.push_str(&std::fs::read_to_string(&self.ssh_config).unwrap());
        let config = self.dir.path().join(name);
        std::fs::write(&config, text).unwrap();
        config
    }

    /// `[hosts.NAME]` entries for every lab host with the given role function.
    pub fn hosts_section(&self, role: impl Fn(&str) -> &'static str) -> String {
        self.hosts
            .values()
            .map(|h| format!("[hosts.{}]\naddress = \"{}\"\nrole = \"{}\"\n", h.name, h.address, role(&h.name)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An Ansible INI inventory of `hosts` as group `group`, with this lab's keys and options.
    pub fn ansible_inventory(&self, group: &str, hosts: &[String]) -> String {
        let mut inv = format!("[{group}]\n");
        for h in hosts {
            inv.push_str(&format!("{h} ansible_host={}\n", self.host(h).address));
        }
        inv.push_str(&format!(
            "\n[all:vars]\nansible_user=root\nansible_port={}\nansible_ssh_private_key_file={}\nansible_ssh_common_args='-F {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes'\nansible_python_interpreter=/usr/bin/python3\n",
            self.port,
            self.key.display(),
            self.ssh_config.display(),
            self.known_hosts.display()
        ));
        inv
    }

    pub fn write_farm(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// farmctl, with this lab's journal and control directory.
    pub fn farmctl(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_farmctl"));
        c.env("FARMCTL_JOURNAL", &self.journal)
            .env("FARMCTL_CACHE_DIR", self.dir.path().join("cache"))
            .env("FARMCTL_CONTROL_DIR", &self.control_dir)
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// farmctl run inside a network lab host's namespace, as from another
    /// machine on the segment (its own SSH control sockets).
    pub fn farmctl_in(&self, host: &str) -> Command {
        let ns = self.host(host).netns.clone().expect("a network lab host");
        let control = self.control_dir.join(host);
        std::fs::create_dir_all(&control).unwrap();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_farmctl")])
            .env("FARMCTL_JOURNAL", &self.journal)
            .env("FARMCTL_CACHE_DIR", self.dir.path().join(format!("cache-{host}")))
            .env("FARMCTL_CONTROL_DIR", control)
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// Every file under every host's mounted directories: (host, path) -> bytes.
    pub fn snapshot(&self) -> BTreeMap<(String, String), Vec<u8>> {
        let mut out = BTreeMap::new();
        for h in self.hosts.values() {
            for m in ["/etc/ivr", "/etc/ivr-web"] {
                let base = h.path(m);
                let mut stack = vec![base.clone()];
                while let Some(d) = stack.pop() {
                    for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            let rel = format!("{m}/{}", p.strip_prefix(&base).unwrap().display());
                            out.insert((h.name.clone(), rel), std::fs::read(&p).unwrap_or_default());
                        }
                    }
                }
            }
        }
        out
    }
}

/// The (host, path) keys on which two snapshots differ: for short failure messages.
pub fn differences(a: &BTreeMap<(String, String), Vec<u8>>, b: &BTreeMap<(String, String), Vec<u8>>) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|(h, p)| format!("{h}:{p}"))
        .collect()
}

/// Asserts two snapshots are equal, naming only the files that differ.
#[track_caller]
pub fn assert_same(a: &BTreeMap<(String, String), Vec<u8>>, b: &BTreeMap<(String, String), Vec<u8>>, why: &str) {
    let d = differences(a, b);
    assert!(d.is_empty(), "{why}; these differ: {d:?}");
}

impl Lab {
    /// Like [`Lab::snapshot`], without farmctl's staged dotfiles.
    pub fn targets(&self) -> BTreeMap<(String, String), Vec<u8>> {
        let mut s = self.snapshot();
        s.retain(|(_, p), _| !p.rsplit('/').next().unwrap_or("").starts_with('.'));
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in self.hosts.values_mut() {
            h.resume();
            h.crash();
            for t in &h.tmpfs {
                let _ = Command::new("umount").arg("-l").arg(t).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
