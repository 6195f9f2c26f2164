//! Reading and validating the farm file. Pure apart from reading the file itself.
//!
//! The file is read with serde (keeping spans), then checked for meaning.
//! Every problem is reported as `file:line:col` with what was expected; none
//! is ever replaced by a silent default.

mod check;
mod lease;
mod names;
pub use names::{did_you_mean, glob};
mod raw;
mod rollout;
mod schema;
mod services;

pub use lease::{EtcdSettings, EtcdTls, LeaseStore};
pub use services::{Check, Service, Strategy, Talk, VirtualAddress};

pub use rollout::{parse_version, Count, GateSpec, Rollout, Shadow};

pub use schema::farm_schema;

use raw::{RawFarm, S};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/farmctl";

/// A validated farm file.
#[derive(Clone, Debug)]
pub struct Farm {
    /// The path as the operator gave it.
    pub path: PathBuf,
    pub sha256: String,
    pub name: String,
    /// Where farmctl keeps its lock, backups and staged work on each host.
    pub state_dir: String,
    /// A host clock further off than this is a warning at plan time.
    pub clock_tolerance: Duration,
    pub ssh: SshSettings,
    pub roles: BTreeMap<String, Role>,
    pub hosts: BTreeMap<String, Host>,
    pub replacements: Vec<Replacement>,
    /// `[rollout.<role>]` by role.
    pub rollouts: BTreeMap<String, Rollout>,
    /// `[services.<name>]` by name.
    pub services: BTreeMap<String, Service>,
    /// `[watch]`: where the watchers keep each service's lease.
    pub lease_store: LeaseStore,
    /// Things that are allowed but worth saying (a shared address, by `allow_shared_address`).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct SshSettings {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub jump: Option<String>,
    pub sudo: bool,
    /// How long an idle SSH master outlives farmctl, for the next run to reuse; zero turns reuse off.
    pub control_persist: Duration,
}

/// A value assigned with `set`.
#[derive(Clone, Debug, PartialEq)]
pub enum SetValue {
    Bool(bool),
    Integer(i64),
    Float(f64),
    String(String),
    Array(Vec<SetValue>),
}

#[derive(Clone, Debug)]
pub struct Role {
    pub name: String,
    pub files: Vec<String>,
    pub reload: Option<String>,
    /// Must pass on a host before clients are pointed at it.
    pub health: Option<String>,
    /// Runs on a replaced host once no host refers to it any more.
    pub retire: Option<String>,
    /// path -> (dotted key, value), in key order.
    pub set: BTreeMap<String, Vec<(String, SetValue)>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Ssh { user: Option<String>, port: Option<u16> },
    /// A directory standing in for the host's `/`.
    Local { root: PathBuf },
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub address: Option<String>,
    pub role: String,
    pub aliases: Vec<String>,
    pub transport: Transport,
    /// Another farm host may have the same address and port (two names for one machine).
    pub allow_shared_address: bool,
}

#[derive(Clone, Debug)]
pub struct Replacement {
    /// Position in the farm file, counted from 0.
    pub index: usize,
    pub old: String,
    pub new: String,
    pub at: Option<jiff::Timestamp>,
    /// Roles or hosts this replacement is limited to; empty means everywhere.
    pub on: Vec<String>,
    /// Files (`*` globs on the path) this replacement leaves alone.
    pub skip_paths: Vec<String>,
    /// Lines (`*` globs on the whole line) whose names this replacement leaves alone.
    pub skip_lines: Vec<String>,
}

impl Replacement {
    pub fn describe(&self) -> String {
        format!("replace {} -> {}", self.old, self.new)
    }
}

impl Farm {
    /// Whether a replacement applies to a host. `on` limits it to roles or
    /// hosts. The old host's own files are left alone unless `on` names it:
    /// it is the server being replaced, not a client of it.
    pub fn applies_to(&self, r: &Replacement, host: &Host) -> bool {
        if host.name == r.old {
            return r.on.contains(&host.name);
        }
        r.on.is_empty() || r.on.iter().any(|o| *o == host.name || *o == host.role)
    }

    /// Every file farmctl reads and may write on `host`: its role's files, the
    /// hosts file of a service it is a client of (`strategy = "hosts"`), and the
    /// host-name file of a server being adopted.
    pub fn paths_of(&self, host: &str) -> Vec<String> {
        let mut paths = self.roles[&self.hosts[host].role].files.clone();
        for svc in self.services.values() {
            if svc.strategy == Strategy::Hosts && svc.serves(host) {
                paths.push(svc.hosts_file.clone());
            }
            if svc.adopt.is_some() && svc.members[0] == host {
                paths.push(svc.hostname_file.clone());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        paths.retain(|p| seen.insert(p.clone()));
        paths
    }
}

/// One problem in a farm file, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The offending source line, for a caret display.
    pub source_line: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)?;
        if !self.source_line.is_empty() {
            let pad = " ".repeat(self.col.saturating_sub(1));
            write!(f, "\n  | {}\n  | {}^", self.source_line, pad)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    #[error("cannot read farm file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Checker<'a> {
    file: String,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// A duration such as "5s", above zero; `default` when absent, and when
    /// not one (the error is recorded at the value).
    fn duration(&mut self, value: &Option<S<String>>, default: std::time::Duration) -> std::time::Duration {
        match value {
            None => default,
            Some(v) => match humantime::parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.span(v, "expected a duration above zero, such as \"5s\"");
                    default
                }
                Err(e) => {
                    self.span(v, format!("expected a duration such as \"5s\" or \"2m\": {e}"));
                    default
                }
            },
        }
    }

    fn at(&mut self, offset: usize, message: impl Into<String>) {
        let (line, col) = line_col(self.text, offset);
        let source_line = self.text.lines().nth(line - 1).unwrap_or("").to_string();
        self.problems.push(Problem { file: self.file.clone(), line, col, message: message.into(), source_line });
    }

    fn span<T>(&mut self, s: &S<T>, message: impl Into<String>) {
        self.at(s.span().start, message)
    }
}

/// Reads and validates a farm file.
pub fn load(path: &Path) -> Result<Farm, FarmError> {
    let bytes = std::fs::read(path).map_err(|source| FarmError::Read { path: path.display().to_string(), source })?;
    let file = path.display().to_string();
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let mut c = Checker { file, text: &text, problems: Vec::new() };
            c.at(offset, "expected UTF-8 text; the farm file has an invalid byte here");
            return Err(FarmError::Invalid(c.problems));
        }
    };
    parse(path, &text)
}

/// Validates farm-file text. `path` is used for messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Farm, FarmError> {
    let mut c = Checker { file: path.display().to_string(), text, problems: Vec::new() };
    let raw: RawFarm = match toml_edit::de::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let mut message = describe_de_error(e.message());
            let (line, _) = line_col(text, offset);
            let source = text.lines().nth(line - 1).unwrap_or("").trim_start();
            if message.contains("invalid type: map, expected a sequence") && source.starts_with('[') && !source.starts_with("[[") {
                message.push_str("; a list of tables takes double brackets, as in [[replace]]");
            }
            c.at(offset, message);
            return Err(FarmError::Invalid(c.problems));
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let farm = check::check(&mut c, raw, &base, path, text);
    if c.problems.is_empty() {
        Ok(farm)
    } else {
        Err(FarmError::Invalid(c.problems))
    }
}

fn describe_de_error(message: &str) -> String {
    let m = message.trim().replace('\n', "; ");
    if m == "missing field `farm`" {
        return "missing the [farm] table; every farm file starts with [farm] and its `name`".into();
    }
    if let Some(field) = m.strip_prefix("missing field ") {
        return format!("missing key {field} in this table");
    }
    if m.contains("data did not match any variant of untagged enum RawSetValue") {
        return "expected a string, number, boolean or array as a `set` value".into();
    }
    if m.contains("untagged enum RawTime") {
        return "expected an RFC 3339 time, such as \"2026-12-01T02:00:00Z\"".into();
    }
    m
}

#[cfg(test)]
mod tests;
