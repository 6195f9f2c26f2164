//! A real Prometheus for the lab (Debian's `prometheus`), scraping every
//! second, and small exporters whose values live in the lab hosts' own files.

#![allow(dead_code)]
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A Prometheus server started for one test; stopped when dropped.
pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`job`, `address:port`) every second,
    /// and waits until it is ready and has scraped every target once.
    pub fn start(targets: &[(&str, String)]) -> Prometheus {
        assert!(Command::new("prometheus").arg("--version").output().is_ok(), "the lab needs Debian's prometheus: run the README's test command, which installs it");
        let dir = tempfile::Builder::new().prefix("farmlab-prom").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut jobs: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (job, t) in targets {
            jobs.entry(job).or_default().push(format!("'{t}'"));
        }
        let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 800ms\n  evaluation_interval: 1s\nscrape_configs:\n");
        for (job, ts) in &jobs {
            config.push_str(&format!("  - job_name: '{job}'\n    static_configs:\n      - targets: [{}]\n", ts.join(", ")));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus { child: Some(child), port, _dir: dir };
        let started = Instant::now();
        // Ready, and every target scraped: within a few seconds here; 60 s for a loaded machine.
        let want = targets.len();
        while started.elapsed() < Duration::from_secs(60) {
            if p.query("count(up == 1)").is_some_and(|n| n as usize >= want) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Prometheus did not scrape all {want} targets within 60 s: {}", std::fs::read_to_string(p._dir.path().join("prometheus.log")).unwrap_or_default());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value of an instant query with one series, asked with curl-free HTTP.
    pub fn query(&self, q: &str) -> Option<f64> {
        let body = http_get("127.0.0.1", self.port, &format!("/api/v1/query?query={}", encode(q)))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Stops Prometheus now (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

fn encode(q: &str) -> String {
    q.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A plain HTTP/1.0 GET; the body of a 200, or `None`.
pub fn http_get(host: &str, port: u16, path: &str) -> Option<String> {
    http_status(host, port, path).filter(|(code, _)| *code == 200).map(|(_, body)| body)
}

/// A plain HTTP/1.0 GET; the status and the body, or `None` when there is no answer.
pub fn http_status(host: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// An exporter at `address:port` that serves, on every scrape, what `render`
/// makes of the host's files (read afresh each time). Runs until the process ends.
pub fn exporter(address: &str, port: u16, root: PathBuf, render: fn(&std::path::Path) -> String) {
    let listener = TcpListener::bind((address, port)).unwrap_or_else(|e| panic!("exporter on {address}:{port}: {e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(&conn);
            let mut line = String::new();
            // The request line and headers, up to the blank line.
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" && line != "\n" {
                line.clear();
            }
            let body = render(&root);
            let _ = write!(&conn, "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
}
