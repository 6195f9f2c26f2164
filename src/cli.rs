//! Command-line types (clap). They stop at the command layer: each command in
//! `cmd` takes one typed args value, and nothing below `cmd` sees clap.

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

/// `farmctl plan`
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The farm file
    pub farm: PathBuf,
    /// Save the plan as JSON (for review, and for `apply PLAN.json`)
    #[arg(short = 'o', long = "out", value_name = "PLAN.json")]
    pub out: Option<PathBuf>,
    /// How to show the plan
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit 2 when changes are pending, 0 when there are none
    #[arg(long)]
    pub detailed_exitcode: bool,
    #[command(flatten)]
    pub reach: Reach,
}

/// `farmctl apply`
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// A farm file, or a plan saved with `plan -o`
    pub target: PathBuf,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// Stop (and, while staging, undo everything) after more than N hosts fail
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_fail: usize,
    /// Arm a timer on each host for the scheduled switch, and exit
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub reach: Reach,
}

/// `farmctl show`
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// A plan saved with `plan -o`
    pub plan: PathBuf,
    /// How to show the plan
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `farmctl rollback`
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// A plan saved with `plan -o` that was applied
    pub plan: PathBuf,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// How many hosts to work on at once
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: u32,
}

/// A command that takes a farm file and a selection of its hosts.
#[derive(clap::Args, Debug)]
pub struct FarmArgs {
    /// The farm file
    pub farm: PathBuf,
    #[command(flatten)]
    pub reach: Reach,
}

/// `farmctl unlock`
#[derive(clap::Args, Debug)]
pub struct UnlockArgs {
    /// The farm file
    pub farm: PathBuf,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub reach: Reach,
}

/// `farmctl validate`
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The farm file
    pub farm: PathBuf,
}

/// `farmctl journal`
#[derive(clap::Args, Debug)]
pub struct JournalArgs {
    /// Only this host
    #[arg(long)]
    pub host: Option<String>,
    /// List the applied plans (one line each, with how to roll them back) instead of file writes
    #[arg(long)]
    pub plans: bool,
}

/// `farmctl watch`
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The farm file
    pub farm: PathBuf,
    /// Log JSON lines instead of text
    #[arg(long)]
    pub json: bool,
}

/// `farmctl completions`
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    pub shell: clap_complete::Shell,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read the live hosts, and show what would change
    Plan(PlanArgs),
    /// Apply a farm file (plan, confirm, apply) or exactly a saved plan
    Apply(ApplyArgs),
    /// Render a saved plan, and check that it still matches its farm file
    Show(ShowArgs),
    /// Restore every file of an applied plan that still has its planned content
    Rollback(RollbackArgs),
    /// Show what `apply --detach` armed on each host, and what has fired
    Status(FarmArgs),
    /// Disarm every detached switch that has not fired
    Cancel(FarmArgs),
    /// Break the host locks of an apply that died, removing its staged copies
    Unlock(UnlockArgs),
    /// Print the plan's dependency graph as Graphviz DOT
    Graph(FarmArgs),
    /// Keep every [services] member list up: heartbeats, confirmed failover, sync (until stopped)
    Watch(WatchArgs),
    /// Check a farm file without contacting any host
    Validate(ValidateArgs),
    /// Print the JSON Schema of the farm file
    Schema,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff)
    Man,
    /// Show the local journal of applies
    Journal(JournalArgs),
}
