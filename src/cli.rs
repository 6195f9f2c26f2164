//! Command-line types (clap). They stop here: `main` turns them into calls
//! with plain values, and nothing below sees clap.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "farmctl", version, about = "Declarative plan/apply for server farms over SSH", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How a plan is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

impl From<Format> for crate::render::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Text => crate::render::Format::Text,
            Format::Json => crate::render::Format::Json,
            Format::Markdown => crate::render::Format::Markdown,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Reach {
    /// Only these hosts: names, roles or globs, comma-separated; `!name` excludes
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub limit: Vec<String>,
    /// How many hosts to work on at once
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: u32,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read the live hosts, and show what would change
    Plan {
        /// The farm file
        farm: PathBuf,
        /// Save the plan as JSON (for review, and for `apply PLAN.json`)
        #[arg(short = 'o', long = "out", value_name = "PLAN.json")]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Exit 2 when changes are pending, 0 when there are none
        #[arg(long)]
        detailed_exitcode: bool,
        #[command(flatten)]
        reach: Reach,
    },
    /// Apply a farm file (plan, confirm, apply) or exactly a saved plan
    Apply {
        /// A farm file, or a plan saved with `plan -o`
        target: PathBuf,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// Stop (and, while staging, undo everything) after more than N hosts fail
        #[arg(long, default_value_t = 0, value_name = "N")]
        max_fail: usize,
        /// Arm a timer on each host for the scheduled switch, and exit
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        reach: Reach,
    },
    /// Render a saved plan, and check that it still matches its farm file
    Show {
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Restore every file of an applied plan that still has its planned content
    Rollback {
        plan: PathBuf,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        parallel: u32,
    },
    /// Show what `apply --detach` armed on each host, and what has fired
    Status {
        farm: PathBuf,
        #[command(flatten)]
        reach: Reach,
    },
    /// Disarm every detached switch that has not fired
    Cancel {
        farm: PathBuf,
        #[command(flatten)]
        reach: Reach,
    },
    /// Break the host locks of an apply that died, removing its staged copies
    Unlock {
        farm: PathBuf,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        reach: Reach,
    },
    /// Print the plan's dependency graph as Graphviz DOT
    Graph {
        farm: PathBuf,
        #[command(flatten)]
        reach: Reach,
    },
    /// Check a farm file without contacting any host
    Validate { farm: PathBuf },
    /// Print the JSON Schema of the farm file
    Schema,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    Man,
    /// Show the local journal of applies
    Journal {
        /// Only this host
        #[arg(long)]
        host: Option<String>,
    },
}
