//! `farmctl rollback PLAN.json|ID`: restore every file an applied plan wrote
//! that still has the content it wrote, and every version it upgraded. The
//! rollback itself is `pipeline::rollback::Rollback`; this shows it and asks.

use super::{confirm, finish, Outcome};
use crate::pipeline::{journal::Journal, progress};
use crate::cli::RollbackArgs;
use crate::error::{Error, ErrorKind};
use crate::pipeline::{self, rollback::Rollback};
use crate::plan::ActionKind;
use std::process::ExitCode;

pub async fn run(args: &RollbackArgs) -> Outcome {
    let path = pipeline::find_plan(&args.plan)?;
    let saved = pipeline::load_plan(&path)?;
    let journal = Journal::open();
    let rollback = Rollback::prepare(&saved, &journal, args.parallel as usize)?;
    let plan = rollback.plan.clone();
    for s in &rollback.skipped {
        crate::say!("{s}: left alone: this plan never wrote it");
    }
    let scope = rollback.scope();
    if scope.is_empty() {
        crate::say!("Plan {} wrote no file and upgraded no host; nothing to roll back.", plan.id);
        return Ok(ExitCode::SUCCESS);
    }
    crate::say!("Rollback of plan {} restores, on {} host(s), every file that still has the content the plan wrote, and every version it still runs:", plan.id, scope.len());
    for (a, e) in plan.edits() {
        crate::say!("  {}:{}", a.host, e.path);
    }
    for a in plan.actions.iter().filter(|a| rollback.upgraded.contains(&a.host)) {
        if let ActionKind::Upgrade { from, to, .. } = &a.kind {
            crate::say!("  {}: {to} -> {from}", a.host);
        }
    }
    confirm("roll back this plan", args.yes)?;
    journal.check_writable().map_err(|e| Error::new(ErrorKind::Io, format!("refusing to roll back, nothing was written: {e}")).hint("make the journal's directory writable, or point $FARMCTL_JOURNAL elsewhere"))?;
    let reporter = progress::reporter(super::quiet());
    let (summary, down) = rollback.run(&*reporter, &journal).await;
    if !down.is_empty() {
        let _ = finish("rollback", &summary, &plan, None);
        let lines: Vec<String> = down.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        return Err(Error::new(ErrorKind::Unreachable, format!("rollback could not reach: {}", lines.join("; ")))
            .hint("run rollback again once the host is back; it only restores files that still have the plan's content"));
    }
    finish("rollback", &summary, &plan, None)
}
