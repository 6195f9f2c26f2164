//! farmctl: declarative plan/apply for server farms over SSH.

/// Writes a line to stderr, ignoring a closed pipe: a reader that went away
/// (`farmctl apply | head`) must never stop an apply half-way.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub mod edit;
pub mod farm;
pub mod live;
pub mod transport;
pub mod plan;
pub mod render;
pub mod snapshot;
pub mod apply;
pub mod app;
pub mod cli;
