//! `farmctl schema`, `completions`, `man` (documents about farmctl itself)
//! and `import` (a farm file from an Ansible inventory or an ssh_config).

use super::{out, Outcome};
use crate::cli::{Cli, CompletionsArgs, ImportArgs, ImportFrom, ManArgs, SchemaArgs};
use crate::error::{Error, ErrorKind};
use std::process::ExitCode;

pub fn schema(args: &SchemaArgs) -> Outcome {
    let schema = if args.plan { crate::plan::schema() } else { crate::farm::farm_schema() };
    out(&format!("{}\n", serde_json::to_string_pretty(&schema).expect("a schema serializes")));
    Ok(ExitCode::SUCCESS)
}

pub fn completions(args: &CompletionsArgs) -> Outcome {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "farmctl", &mut buf);
    out(&String::from_utf8_lossy(&buf));
    Ok(ExitCode::SUCCESS)
}

/// The top page to stdout, or with `--dir` one page per command: `farmctl.1`
/// names `farmctl-plan.1` and the others, and each of them exists.
pub fn man(args: &ManArgs) -> Outcome {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Built, the command has its `help` subcommand too, which the top page names.
    cmd.build();
    let page = |c: clap::Command| {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf).expect("rendering into memory cannot fail");
        buf
    };
    let Some(dir) = &args.dir else {
        out(&String::from_utf8_lossy(&page(cmd)));
        return Ok(ExitCode::SUCCESS);
    };
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("cannot write man pages to {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut written = vec!["farmctl.1".to_string()];
    std::fs::write(dir.join("farmctl.1"), page(cmd.clone())).map_err(io)?;
    for sub in cmd.get_subcommands() {
        let name = format!("farmctl-{}", sub.get_name());
        std::fs::write(dir.join(format!("{name}.1")), page(sub.clone().name(Box::leak(name.clone().into_boxed_str()) as &'static str))).map_err(io)?;
        written.push(format!("{name}.1"));
    }
    crate::say!("wrote {} man pages to {}: {}", written.len(), dir.display(), written.join(", "));
    Ok(ExitCode::SUCCESS)
}

pub fn import(args: &ImportArgs) -> Outcome {
    let text = std::fs::read_to_string(&args.file).map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", args.file.display())))?;
    let source = args.file.display().to_string();
    let stem = args.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "farm".into());
    let name = args.name.clone().unwrap_or(stem);
    let imported = match args.from {
        ImportFrom::Ansible => crate::import::ansible(&name, &source, &text, &args.files).map_err(|e| Error::new(ErrorKind::Refused, format!("{source}: {e}")).hint("farmctl reads Ansible's INI and YAML inventory formats"))?,
        ImportFrom::SshConfig => crate::import::ssh_config(&name, &source, &text, &args.files),
    };
    // What was left out is said, not only written as a comment.
    for why in &imported.left_out {
        crate::say!("warning: left out: {why}");
    }
    let farm = imported.text;
    let target = args.out.clone().unwrap_or_else(|| "farm.toml".into());
    // What is written must validate; the parse resolves paths beside the target.
    crate::farm::parse(&target, &farm).map_err(|e| Error::new(ErrorKind::Refused, format!("the imported farm file does not validate:\n{e}")).hint("edit the inventory, or write to stdout and fix the farm file by hand"))?;
    match &args.out {
        None => out(&farm),
        Some(path) => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
                Error::new(ErrorKind::Refused, format!("cannot create {}: {e}", path.display())).hint("farmctl import never overwrites a file; choose another -o, or remove it")
            })?;
            f.write_all(farm.as_bytes()).map_err(|e| Error::new(ErrorKind::Io, format!("cannot write {}: {e}", path.display())))?;
            crate::say!("wrote {}: edit each role's `files`, then run `farmctl plan {}`", path.display(), path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
