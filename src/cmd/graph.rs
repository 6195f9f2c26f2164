//! `farmctl graph`: the plan's dependency graph as Graphviz DOT, or as SVG
//! drawn by Graphviz's `dot`. From a farm file (read and planned) or from a
//! saved plan (checked as `show` checks it).

use super::{out, Outcome};
use crate::cli::{GraphArgs, GraphFormat};
use crate::error::{Error, ErrorKind};
use crate::pipeline::{self, Session};
use std::process::ExitCode;

pub async fn run(args: &GraphArgs) -> Outcome {
    let plan = if args.target.extension().is_some_and(|e| e == "json") {
        pipeline::load_plan(&args.target)?
    } else {
        let (session, planned) = Session::read_and_plan(&args.target, &args.reach.limit, args.reach.parallel as usize).await?;
        if let Some(e) = pipeline::unreachable_error(&planned.plan, &session.live) {
            return Err(e);
        }
        planned.plan
    };
    let dot = crate::render::dot(&plan);
    match args.format {
        GraphFormat::Dot => out(&dot),
        GraphFormat::Svg => out(&svg(&dot)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Draws DOT as SVG with Graphviz's `dot`.
fn svg(dot: &str) -> crate::error::Result<String> {
    use std::io::Write;
    let missing = |e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("cannot run Graphviz's `dot`: {e}")).hint("install Graphviz (Debian: apt-get install graphviz), or print DOT with --format dot")
    };
    let mut child = std::process::Command::new("dot").arg("-Tsvg").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().map_err(missing)?;
    child.stdin.take().expect("piped").write_all(dot.as_bytes()).map_err(missing)?;
    let o = child.wait_with_output().map_err(missing)?;
    if !o.status.success() {
        return Err(Error::new(ErrorKind::Io, format!("Graphviz's `dot` failed: {}", String::from_utf8_lossy(&o.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}
