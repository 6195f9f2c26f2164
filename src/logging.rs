//! Event logs through `tracing`: one line per event on stderr, as text
//! (`TIME SCOPE: EVENT: MESSAGE`) or as JSON lines. The watcher logs this way.

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Where the fields of one event are gathered.
#[derive(Default)]
struct Fields {
    message: String,
    scope: String,
    event: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "scope" => self.scope = value.to_string(),
            "event" => self.event = value.to_string(),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Writes each event at `max` or more severe as one line.
struct Lines {
    json: bool,
    max: Level,
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() > self.max {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let time = jiff::Timestamp::now();
        if self.json {
            let level = event.metadata().level().as_str().to_ascii_lowercase();
            let line = serde_json::json!({ "time": time.to_string(), "level": level, "service": f.scope, "event": f.event, "message": f.message });
            crate::say!("{line}");
        } else {
            crate::say!("{time} {}: {}: {}", f.scope, f.event, f.message);
        }
    }
}

/// Sends this process's events to stderr from now on: JSON lines or text,
/// at `max` (INFO, or DEBUG with `-v`) and above.
pub fn init(json: bool, max: Level) {
    let subscriber = tracing_subscriber::registry().with(Lines { json, max });
    let _ = tracing::subscriber::set_global_default(subscriber);
}
