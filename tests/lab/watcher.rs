//! A `farmctl watch` run by a lab test, with its log as it comes: shared by
//! the watcher's lab tests (members, network, etcd).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Watcher {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Watcher {
    /// `farmctl watch farm.toml` from the lab's directory.
    pub fn start(lab: &super::Lab) -> Watcher {
        Watcher::start_with(lab, &[])
    }

    pub fn start_with(lab: &super::Lab, args: &[&str]) -> Watcher {
        Watcher::from(lab.farmctl(), args)
    }

    /// `command watch farm.toml ARGS`, `command` a farmctl to run (from a
    /// host's network namespace, for example); in its own process group, so
    /// that the test's signals reach it alone.
    pub fn from(mut c: Command, args: &[&str]) -> Watcher {
        use std::os::unix::process::CommandExt;
        c.args(["watch", "farm.toml"]).args(args);
        let mut child = c.stderr(Stdio::piped()).process_group(0).spawn().unwrap();
        let mut err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                l.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watcher { child, log }
    }

    pub fn text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (at most `secs`) for a log line containing `what`.
    pub fn wait_for(&self, what: &str, secs: u64) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if self.text().contains(what) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// How many log lines contain `what`.
    pub fn count(&self, what: &str) -> usize {
        self.text().lines().filter(|l| l.contains(what)).count()
    }

    /// Sends a signal (`-STOP`, `-CONT`, `-KILL`) to the watcher.
    pub fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// Stops the watcher as an operator would (SIGINT), and returns its exit code and log.
    pub fn stop(&mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let code = self.child.wait().unwrap().code();
        std::thread::sleep(Duration::from_millis(100));
        (code, self.text())
    }
}

impl Drop for Watcher {
    /// A test that fails part-way must not leave its watcher running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
