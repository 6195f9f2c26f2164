//! Progress reporting. The only module that touches indicatif: bars on a
//! terminal, plain lines otherwise.

use super::{Event, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;

/// Plain lines on stderr: for CI logs and pipes.
pub struct Lines;

impl Reporter for Lines {
    fn event(&self, e: Event) {
        crate::say!("{}", e.line());
    }
}

/// One spinner line per host on a terminal.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

impl Bars {
    fn bar(&self, host: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap();
        bars.entry(host.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new_spinner());
                b.set_style(ProgressStyle::with_template("{spinner} {prefix:<16} {wide_msg}").expect("valid template"));
                b.set_prefix(host.to_string());
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            })
            .clone()
    }
}

impl Reporter for Bars {
    fn event(&self, e: Event) {
        match &e {
            Event::Host { host, state, .. } => {
                let bar = self.bar(host);
                bar.set_message(state.to_string());
                if state.is_final() {
                    bar.finish();
                }
            }
            _ => {
                let _ = self.multi.println(e.line());
            }
        }
    }

    fn finish(&self) {
        for b in self.bars.lock().unwrap().values() {
            b.finish();
        }
    }
}

/// Bars when stderr is a terminal, plain lines otherwise.
pub fn reporter() -> Box<dyn Reporter> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::new(BTreeMap::new()) })
    } else {
        Box::new(Lines)
    }
}
