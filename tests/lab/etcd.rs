//! A real etcd for the lab (Debian's `etcd-server` and `etcd-client`): a
//! cluster of members on loopback ports, each a process the test can kill
//! and start again with its data; or one member that speaks TLS and asks
//! for a client certificate, with certificates made by `openssl`.

#![allow(dead_code)]
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// An etcd cluster started for one test; stopped when dropped.
pub struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
    tls: Option<Certs>,
}

/// The certificates of a TLS etcd: a CA, the server's (for 127.0.0.1), a
/// client's, and a second CA that signed none of them.
#[derive(Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
    pub other_ca: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Certs {
    /// Makes the certificates in `dir` with openssl.
    pub fn make(dir: &Path) -> Certs {
        for ca in ["ca", "other-ca"] {
            openssl(dir, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN=farmlab {ca}"), "-keyout", &format!("{ca}-key.pem"), "-out", &format!("{ca}.pem")]);
        }
        std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n").unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN=farmlab {who}"), "-keyout", &format!("{who}-key.pem"), "-out", &format!("{who}.csr")]);
            openssl(dir, &["x509", "-req", "-in", &format!("{who}.csr"), "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile", &format!("{who}.ext"), "-out", &format!("{who}.pem")]);
        }
        let p = |f: &str| dir.join(f);
        Certs { ca: p("ca.pem"), server: (p("server.pem"), p("server-key.pem")), client: (p("client.pem"), p("client-key.pem")), other_ca: p("other-ca.pem") }
    }
}

impl Etcd {
    /// Starts `n` members as one cluster and waits until it answers.
    pub fn start(n: usize) -> Etcd {
        Etcd::start_with(n, None)
    }

    /// One member on https, which asks every client for a certificate signed by `certs.ca`.
    pub fn start_tls(certs: &Certs) -> Etcd {
        Etcd::start_with(1, Some(certs.clone()))
    }

    fn start_with(n: usize, tls: Option<Certs>) -> Etcd {
        assert!(Command::new("etcd").arg("--version").output().is_ok(), "the lab needs Debian's etcd-server: run the README's test command, which installs it");
        let dir = tempfile::Builder::new().prefix("farmlab-etcd").tempdir().unwrap();
        let members: Vec<Member> = (0..n).map(|i| Member { name: format!("e{i}"), client: free_port(), peer: free_port(), child: None }).collect();
        let mut etcd = Etcd { members, dir, tls };
        for i in 0..n {
            etcd.run(i);
        }
        etcd.wait_until_it_answers(Duration::from_secs(60));
        etcd
    }

    fn scheme(&self) -> &str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn run(&mut self, i: usize) {
        let cluster = self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let scheme = self.scheme().to_string();
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let mut c = Command::new("etcd");
        c.arg("--name").arg(&m.name)
            .arg("--data-dir").arg(self.dir.path().join(&m.name))
            .arg("--listen-client-urls").arg(format!("{scheme}://127.0.0.1:{}", m.client))
            .arg("--advertise-client-urls").arg(format!("{scheme}://127.0.0.1:{}", m.client))
            .arg("--listen-peer-urls").arg(format!("http://127.0.0.1:{}", m.peer))
            .arg("--initial-advertise-peer-urls").arg(format!("http://127.0.0.1:{}", m.peer))
            .arg("--initial-cluster").arg(&cluster)
            .arg("--initial-cluster-state").arg("new")
            .arg("--initial-cluster-token").arg(self.dir.path().file_name().unwrap())
            // As LAB-NOTES: a healthy cluster within about a second.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(t) = &self.tls {
            c.arg("--cert-file").arg(&t.server.0).arg("--key-file").arg(&t.server.1).arg("--client-cert-auth").arg("--trusted-ca-file").arg(&t.ca);
        }
        self.members[i].child = Some(c.spawn().unwrap());
    }

    /// The client URLs of every member, for `[watch] etcd`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client)).collect()
    }

    /// `etcd = [...]` as TOML.
    pub fn toml_endpoints(&self) -> String {
        format!("[{}]", self.endpoints().iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", "))
    }

    /// Kills member `i` (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again, with the data it had.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.run(i);
    }

    fn etcdctl(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").arg(format!("--endpoints={}", self.endpoints().join(","))).args(["--command-timeout", "2s", "--dial-timeout", "1s"]);
        if let Some(t) = &self.tls {
            c.arg(format!("--cacert={}", t.ca.display())).arg(format!("--cert={}", t.client.0.display())).arg(format!("--key={}", t.client.1.display()));
        }
        c
    }

    /// The value and creation revision of `key`, read with etcdctl; `None`
    /// when the key does not exist. Panics when etcd does not answer.
    pub fn get(&self, key: &str) -> Option<(String, u64)> {
        use base64::Engine;
        let out = self.etcdctl().args(["get", key, "-w", "json"]).output().unwrap();
        assert!(out.status.success(), "etcdctl get {key}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let kv = v["kvs"].get(0)?;
        let value = base64::engine::general_purpose::STANDARD.decode(kv["value"].as_str().unwrap()).unwrap();
        Some((String::from_utf8(value).unwrap(), kv["create_revision"].as_u64().unwrap()))
    }

    /// Which member leads the cluster now, as the members say.
    pub fn leader(&self) -> usize {
        let out = self.etcdctl().args(["endpoint", "status", "-w", "json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("etcdctl endpoint status: {}", String::from_utf8_lossy(&out.stderr)));
        let statuses = v.as_array().unwrap();
        let leader = statuses[0]["Status"]["leader"].as_u64().unwrap();
        let endpoint = statuses.iter().find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader)).expect("the leader answers")["Endpoint"].as_str().unwrap().to_string();
        self.endpoints().iter().position(|e| *e == endpoint).unwrap()
    }

    /// Waits until a quorum answers a write.
    pub fn wait_until_it_answers(&self, within: Duration) {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.etcdctl().args(["put", "/farmlab/ready", "yes"]).output().is_ok_and(|o| o.status.success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let logs: String = self.members.iter().map(|m| std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name))).unwrap_or_default()).collect();
        panic!("etcd did not answer within {within:?}: {}", &logs[logs.len().saturating_sub(3000)..]);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
