//! Progress reporting. The only module that touches indicatif: bars on a
//! terminal, plain lines otherwise.

use super::{Event, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

/// Plain lines on stderr: for CI logs and pipes.
pub struct Lines;

impl Reporter for Lines {
    fn event(&self, e: Event) {
        crate::say!("{}", e.line());
    }
}

/// On a terminal: one overall bar for the stage (hosts done of all), and
/// under it the few latest events. A host that ends badly is printed above
/// the bar, where it stays; the screen never fills with one line per host.
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    recent: Vec<ProgressBar>,
    latest: Mutex<std::collections::VecDeque<String>>,
    /// Hosts of this stage that reached an end: each counts once, however
    /// many ends it passes through (upgraded, then rolled back).
    done: Mutex<std::collections::BTreeSet<String>>,
}

/// How many of the latest events stay under the bar.
const RECENT: usize = 4;

impl Bars {
    fn new() -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} hosts  {elapsed}  {wide_msg}").expect("valid template").progress_chars("=> "));
        overall.enable_steady_tick(std::time::Duration::from_millis(120));
        let recent = (0..RECENT)
            .map(|_| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(ProgressStyle::with_template("  {wide_msg}").expect("valid template"));
                b
            })
            .collect();
        Bars { multi, overall, recent, latest: Mutex::new(Default::default()), done: Mutex::new(Default::default()) }
    }
}

impl Reporter for Bars {
    fn event(&self, e: Event) {
        match &e {
            Event::Host { host, state } => {
                let mut latest = self.latest.lock().unwrap();
                latest.push_back(e.line());
                while latest.len() > RECENT {
                    latest.pop_front();
                }
                for (bar, line) in self.recent.iter().zip(latest.iter()) {
                    bar.set_message(line.clone());
                }
                if state.is_final() {
                    let mut done = self.done.lock().unwrap();
                    if done.insert(host.clone()) {
                        // A run without stages (a rollback) learns its hosts as they end.
                        if self.overall.length().is_some_and(|l| l < done.len() as u64) {
                            self.overall.set_length(done.len() as u64);
                        }
                        self.overall.set_position(done.len() as u64);
                    }
                    if !state.is_ok() {
                        let _ = self.multi.println(e.line());
                    }
                }
            }
            Event::Stage { hosts, .. } => {
                self.done.lock().unwrap().clear();
                self.overall.set_position(0);
                self.overall.set_length(*hosts as u64);
                self.overall.set_message(e.line());
                let _ = self.multi.println(e.line());
            }
            _ => {
                let _ = self.multi.println(e.line());
            }
        }
    }

    fn finish(&self) {
        self.overall.finish();
        for b in &self.recent {
            b.finish_and_clear();
        }
    }
}

/// With `-q`: only hosts that end badly, and notes.
pub struct Problems;

impl Reporter for Problems {
    fn event(&self, e: Event) {
        match &e {
            Event::Host { state, .. } if state.is_final() && !state.is_ok() => crate::say!("{}", e.line()),
            Event::Note(_) => crate::say!("{}", e.line()),
            _ => {}
        }
    }
}

/// Bars when stderr is a terminal, plain lines otherwise; only problems when `quiet`.
pub fn reporter(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Problems)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines)
    }
}
