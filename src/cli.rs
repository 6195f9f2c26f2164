//! Command-line types (clap). They stop at the command layer: each command in
//! `cmd` takes one typed args value, and nothing below `cmd` sees clap.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

const ENVIRONMENT: &str = "\
Environment:
  NO_COLOR             no colour in any output (as --color never)
  FARMCTL_JOURNAL      the journal file (default $XDG_STATE_HOME/farmctl/journal.jsonl)
  FARMCTL_CACHE_DIR    where plans and snapshots are kept (default $XDG_CACHE_HOME/farmctl)
  FARMCTL_CONTROL_DIR  where SSH control sockets live (default $TMPDIR/farmctl-UID)
  USER, LOGNAME        written into host locks, to say who holds them

Exit codes: 0 done, 1 error, 2 changes pending (plan --detailed-exitcode).";

#[derive(Parser, Debug)]
#[command(name = "farmctl", version, about = "Declarative plan/apply for server farms over SSH", long_about = None, after_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// When to colour the output: auto (a terminal, and NO_COLOR unset), always or never
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Say less: no progress, only problems and results
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more: the watcher's debug events too
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
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
    /// Who fires a scheduled switch: each host at T by its own clock, or this
    /// workstation's word at T (each host then switches one network delay late)
    #[arg(long, value_enum, default_value_t = SwitchBy::Host, value_name = "WHO")]
    pub switch_by: SwitchBy,
    /// Refuse a switch by the hosts' clocks when a host's clock is further
    /// off this workstation's than this
    #[arg(long, default_value = "50ms", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_clock_offset: std::time::Duration,
    #[command(flatten)]
    pub reach: Reach,
}

/// Who fires a scheduled switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SwitchBy {
    Host,
    Workstation,
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

/// `farmctl graph`
#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// A farm file (read the hosts and plan), or a plan saved with `plan -o`
    pub target: PathBuf,
    /// dot (Graphviz source) or svg (drawn by Graphviz's `dot`)
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    #[command(flatten)]
    pub reach: Reach,
}

/// `graph --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Svg,
}

/// `farmctl import`
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// What to read: `ansible` (an INI or YAML inventory) or `ssh-config` (an OpenSSH client config)
    #[arg(value_enum)]
    pub from: ImportFrom,
    /// The inventory or ssh_config file
    pub file: PathBuf,
    /// Write the farm file here (refused if it exists) instead of to stdout
    #[arg(short = 'o', long = "out", value_name = "FARM.toml")]
    pub out: Option<PathBuf>,
    /// The files farmctl manages on every host (default /etc/hostname, a placeholder to edit)
    #[arg(long, value_delimiter = ',', value_name = "PATHS")]
    pub files: Vec<String>,
    /// The farm's name (default: the file's name)
    #[arg(long)]
    pub name: Option<String>,
}

/// `import` sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFrom {
    Ansible,
    SshConfig,
}

/// `farmctl man`
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write one page per command into this directory (farmctl.1, farmctl-plan.1, ...)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `farmctl schema`
#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// The JSON Schema of a saved plan (`plan -o`) instead of the farm file
    #[arg(long)]
    pub plan: bool,
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
    /// Only this plan (its id)
    #[arg(long, value_name = "ID")]
    pub plan: Option<String>,
    /// Only entries since a time (RFC 3339) or for a while back (`2h`, `3days`)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// JSON lines, every field (hashes included), for tools
    #[arg(long)]
    pub json: bool,
}

/// `farmctl watch`
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// The farm file
    pub farm: PathBuf,
    /// Log JSON lines (time, level, service, event, message) instead of text
    #[arg(long)]
    pub json: bool,
    /// Exit at once (status 1) when another watcher holds a service's lease,
    /// instead of standing by to take over when that lease ends
    #[arg(long, alias = "once")]
    pub no_wait: bool,
    /// Serve the watcher's metrics (Prometheus text, at /metrics) and its
    /// health (/healthz: 200 while it holds or stands by for every service)
    /// at this address, such as 127.0.0.1:9799
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
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
    #[command(after_help = "Examples:
  farmctl plan farm.toml
  farmctl plan farm.toml -o plans/next.json          # save it for review and apply
  farmctl plan farm.toml --format markdown > plan.md # for a pull request comment
  farmctl plan farm.toml --limit 'ivr-*,!ivr-3' --detailed-exitcode")]
    Plan(PlanArgs),
    /// Apply a farm file (plan, confirm, apply) or exactly a saved plan
    #[command(after_help = "Examples:
  farmctl apply farm.toml                  # plan, show, ask, apply
  farmctl apply plans/next.json --yes      # exactly the reviewed plan, or nothing
  farmctl apply plans/next.json --detach   # arm the scheduled switch on each host, and exit")]
    Apply(ApplyArgs),
    /// Render a saved plan, and check that it still matches its farm file
    #[command(after_help = "Examples:
  farmctl show plans/next.json
  farmctl show plans/next.json --format markdown")]
    Show(ShowArgs),
    /// Undo an applied plan: its files that still hold the planned content, and its upgrades
    #[command(after_help = "Examples:
  farmctl rollback plans/next.json
  farmctl rollback 3f2a9c0d1e4b5a67 --yes   # a plan id from `farmctl journal --plans`")]
    Rollback(RollbackArgs),
    /// Show what `apply --detach` armed on each host, what has fired, and each service
    #[command(after_help = "Examples:
  farmctl status farm.toml
  farmctl status farm.toml --limit ivr")]
    Status(FarmArgs),
    /// Disarm every detached switch that has not fired
    #[command(after_help = "Examples:
  farmctl cancel farm.toml")]
    Cancel(FarmArgs),
    /// Break the host locks of an apply that died, removing its staged copies
    #[command(after_help = "Examples:
  farmctl unlock farm.toml --limit ivr-3")]
    Unlock(UnlockArgs),
    /// Print the plan's dependency graph (Graphviz DOT, or SVG)
    #[command(after_help = "Examples:
  farmctl graph farm.toml | dot -Tpng > plan.png
  farmctl graph plans/next.json --format svg > plan.svg")]
    Graph(GraphArgs),
    /// Keep every [services] member list up: heartbeats, confirmed failover, sync (until stopped)
    #[command(after_help = "Examples:
  farmctl watch farm.toml
  farmctl watch farm.toml --json >> /var/log/farmctl-watch.jsonl")]
    Watch(WatchArgs),
    /// Check a farm file without contacting any host
    #[command(after_help = "Examples:
  farmctl validate farm.toml")]
    Validate(ValidateArgs),
    /// Print the JSON Schema of the farm file, or of a saved plan
    #[command(after_help = "Examples:
  farmctl schema > farm.schema.json
  farmctl schema --plan > plan.schema.json")]
    Schema(SchemaArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(after_help = "Examples:
  farmctl completions bash > /etc/bash_completion.d/farmctl")]
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one per command with --dir
    #[command(after_help = "Examples:
  farmctl man | man -l -
  farmctl man --dir /usr/local/share/man/man1")]
    Man(ManArgs),
    /// Write a farm file from an Ansible inventory or an ssh_config
    #[command(after_help = "Examples:
  farmctl import ansible inventory.ini -o farm.toml --files /etc/ivr/ivr.toml
  farmctl import ssh-config ~/.ssh/config > farm.toml")]
    Import(ImportArgs),
    /// Show the local journal of applies
    #[command(after_help = "Examples:
  farmctl journal --host ivr-1 --since 2h
  farmctl journal --plans
  farmctl journal --plan 3f2a9c0d1e4b5a67 --json")]
    Journal(JournalArgs),
}
