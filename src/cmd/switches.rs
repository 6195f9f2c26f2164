//! `farmctl status`, `cancel` and `unlock`: what is armed or locked on the
//! hosts, and taking it back.

use super::{confirm, out, Outcome};
use crate::cli::{FarmArgs, UnlockArgs};
use crate::error::{Error, ErrorKind};
use crate::pipeline::switches::{self, CancelOutcome, JobState, OnEach, UnlockOutcome};
use crate::plan::RunId;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// A detached job's id (`PLAN-STAGE`) in words: `the switch of plan PLAN, stage N`.
fn switch_name(id: &str) -> String {
    id.parse::<RunId>().map_or_else(|_| format!("switch {id}"), |r| r.in_words())
}

fn unreachable(down: &[String], what: &str) -> Error {
    Error::new(ErrorKind::Unreachable, format!("could not reach{what}:\n  {}", down.join("\n  ")))
}

pub async fn status(args: &FarmArgs) -> Outcome {
    let (OnEach { mut session, results, down }, journaled) = switches::armed(&args.farm, &args.reach.limit, args.reach.parallel as usize).await?;
    let mut renames: BTreeMap<String, BTreeMap<String, i128>> = BTreeMap::new();
    let mut any = false;
    for (host, r) in &results {
        match r {
            Err(e) => out(&format!("{host}: {e}\n")),
            Ok(jobs) => {
                for job in jobs {
                    any = true;
                    out(&format!("{host}: {} {} (switch at {})\n", switch_name(&job.id), job.state, job.at));
                    for line in &job.log {
                        out(&format!("{host}:   {line}\n"));
                    }
                    if let (JobState::Fired, Some(t)) = (job.state, job.renamed_ns) {
                        renames.entry(job.id.clone()).or_default().insert(host.clone(), t);
                    }
                }
            }
        }
    }
    if !any {
        out("Nothing is armed or has fired on these hosts.\n");
    }
    if let Err(e) = journaled {
        crate::say!("warning: could not record the fired switches in the journal: {e}");
    }
    let mut down = down;
    if !session.pool.farm.services.is_empty() {
        for s in crate::pipeline::status::service_status(&mut session).await {
            out(&format!("{}\n", service_line(&s)));
            // A dead standby of a service that is served is what a failover
            // leaves: it is shown, and `status` still says the farm is served.
            if s.served() {
                down.retain(|d| !s.standbys.iter().any(|(m, _)| d.starts_with(&format!("{m}: "))));
            }
        }
    }
    for (id, times) in &renames {
        let (min, max) = (times.values().min().copied().unwrap_or(0), times.values().max().copied().unwrap_or(0));
        out(&format!("{}: fired on {} host(s), skew {:.1} ms\n", switch_name(id), times.len(), (max - min) as f64 / 1e6));
    }
    if !down.is_empty() {
        return Err(unreachable(&down, ""));
    }
    Ok(ExitCode::SUCCESS)
}

/// One service in an operator's words: who serves, which standbys answer,
/// which watcher holds the lease and since when, and how fresh its heartbeat is.
fn service_line(s: &crate::pipeline::status::ServiceStatus) -> String {
    let active = match (&s.active, s.active_answers, &s.address) {
        (Some(a), true, Some((cidr, holders))) if holders.len() > 1 => format!("{a} holds {cidr} (active), and so does {}: TWO MEMBERS ANSWER AT THE ADDRESS", holders[1..].join(", ")),
        (Some(a), true, Some((cidr, _))) => format!("{a} holds {cidr} (active, for {} client(s))", s.clients),
        (None, _, Some((cidr, _))) => format!("no member holds {cidr}"),
        (Some(a), true, None) => format!("{a} is active (named by {} client(s))", s.clients),
        (Some(a), false, _) => format!("{a} is active (named by {} client(s)) but DOES NOT ANSWER", s.clients),
        (None, _, None) => "no client names any member".to_string(),
    };
    let standbys: Vec<String> = s
        .standbys
        .iter()
        .map(|(m, up)| match (up, s.watcher_sees_down.contains(m)) {
            (true, false) => format!("{m} (answers)"),
            (true, true) => format!("{m} (answers here; the watcher's check fails)"),
            (false, _) => format!("{m} (down)"),
        })
        .collect();
    let now = jiff::Timestamp::now().as_millisecond().max(0) as u64;
    let ago = |t: u64| format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0);
    let lease = match &s.lease {
        Some(h) => {
            // The lease's token is the time its holder took it, in ms.
            let since = jiff::Timestamp::from_millisecond(h.token as i64).map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()).unwrap_or_else(|_| "an unknown time".into());
            format!("watched by {} since {since} ({:.1} s left on its lease unless renewed)", h.holder, h.left_ms as f64 / 1000.0)
        }
        None => "no watcher holds its lease".to_string(),
    };
    let every = s.heartbeat_every_ms.map(|e| format!(", every {:.1} s", e as f64 / 1000.0)).unwrap_or_default();
    let beat = match s.last_heartbeat_ms.filter(|t| *t > 0) {
        Some(t) => format!("; last heartbeat answered {}{every}", ago(t)),
        None if s.lease.is_some() => "; no heartbeat answered yet".to_string(),
        None => String::new(),
    };
    let sync: Vec<String> = s.last_sync.iter().map(|(m, t)| format!("{m} {}", ago(*t))).collect();
    let sync = if sync.is_empty() { String::new() } else { format!("; last sync: {}", sync.join(", ")) };
    format!("service {}: {active}; standbys: {}; {lease}{beat}{sync}", s.name, standbys.join(", "))
}

pub async fn cancel(args: &FarmArgs) -> Outcome {
    let OnEach { results, down, .. } = switches::cancel(&args.farm, &args.reach.limit, args.reach.parallel as usize).await?;
    let (mut cancelled, mut fired) = (0, Vec::new());
    for (host, r) in &results {
        match r {
            Err(e) => out(&format!("{host}: {e}\n")),
            Ok(outcomes) => {
                for o in outcomes {
                    match o {
                        CancelOutcome::Cancelled(id) => {
                            cancelled += 1;
                            out(&format!("{host}: cancelled {}; its staged files are removed, nothing was switched\n", switch_name(id)));
                        }
                        CancelOutcome::Fired(id) => {
                            fired.push(format!("{host} ({id})"));
                            out(&format!("{host}: {} had already fired\n", switch_name(id)));
                        }
                    }
                }
            }
        }
    }
    out(&format!("{cancelled} switch(es) cancelled.\n"));
    if !down.is_empty() {
        return Err(unreachable(&down, ", so nothing was cancelled there").hint("run cancel again when the host is back; a switch armed there still fires"));
    }
    if !fired.is_empty() {
        return Err(Error::new(ErrorKind::Incomplete, format!("too late on {}: the switch had fired", fired.join(", "))).hint("undo it with `farmctl rollback PLAN-ID`"));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn unlock(args: &UnlockArgs) -> Outcome {
    confirm("break the locks of these hosts (only do this when no apply is running)", args.yes)?;
    let OnEach { results, down, .. } = switches::unlock(&args.farm, &args.reach.limit, args.reach.parallel as usize).await?;
    let mut armed = Vec::new();
    for (host, r) in &results {
        match r {
            Err(e) => out(&format!("{host}: {e}\n")),
            Ok(UnlockOutcome::Free) => out(&format!("{host}: not locked\n")),
            Ok(UnlockOutcome::Armed { job }) => {
                armed.push(host.clone());
                out(&format!("{host}: left locked: switch {job} is armed there\n"));
            }
            Ok(UnlockOutcome::Unlocked { holder }) => out(&format!("{host}: unlocked (was held by {holder})\n")),
        }
    }
    if !armed.is_empty() {
        return Err(Error::new(ErrorKind::Refused, format!("{} still armed: {}", armed.len(), armed.join(", "))).hint("disarm with `farmctl cancel FARM` first"));
    }
    if !down.is_empty() {
        return Err(unreachable(&down, ""));
    }
    Ok(ExitCode::SUCCESS)
}
