//! The switches armed on the hosts (`apply --detach`) and the hosts' locks,
//! as `status`, `cancel` and `unlock` see them: each operation run on every
//! selected host at once, and the fired switches recorded in the journal.

use super::Session;
use crate::apply::journal::{Entry, FileOutcome, Journal, Record};
use crate::error::Result;
use crate::plan::RunId;
use crate::transport::{AnyHost, Host, TransportError};
pub use crate::transport::{ArmedJob, CancelOutcome, JobState, UnlockOutcome};
use crate::farm::Farm;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// Each selected host's answer, and the hosts that could not be reached (`host: why`).
pub struct OnEach<R> {
    pub session: Session,
    pub results: Vec<(String, std::result::Result<R, TransportError>)>,
    pub down: Vec<String>,
}

/// Connects to the selected hosts and runs `op` on each, bounded by `--parallel`.
async fn on_each<R, F, Fut>(farm: &Path, limit: &[String], parallel: usize, op: F) -> Result<OnEach<R>>
where
    R: Send + 'static,
    F: Fn(Arc<AnyHost>, Arc<Farm>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, TransportError>> + Send + 'static,
{
    let mut session = Session::load(farm, parallel)?;
    let scope = session.select(limit)?;
    let down: Vec<String> = session.connect(&scope).await.into_iter().map(|(n, e)| format!("{n}: {e}")).collect();
    let jobs: Vec<(String, Arc<AnyHost>)> = scope.iter().filter_map(|n| Some((n.clone(), session.pool.hosts.get(n)?.clone()))).collect();
    let farm = session.pool.farm.clone();
    let op = Arc::new(op);
    let results = crate::fanout::each(jobs, session.pool.parallel, move |(name, host)| {
        let (op, farm) = (op.clone(), farm.clone());
        async move { (name, op(host, farm).await) }
    })
    .await;
    Ok(OnEach { session, results, down })
}

/// Every switch armed or fired on the selected hosts. The files of a switch
/// seen fired are journaled as written, once; `Err` in the second place says
/// why the journal could not take them.
pub async fn armed(farm: &Path, limit: &[String], parallel: usize) -> Result<(OnEach<Vec<ArmedJob>>, std::io::Result<()>)> {
    let each = on_each(farm, limit, parallel, |h, farm| async move { h.armed_jobs(&farm.state_dir).await }).await?;
    let journaled = journal_fired(&each.results);
    Ok((each, journaled))
}

/// Disarms every switch armed on the selected hosts.
pub async fn cancel(farm: &Path, limit: &[String], parallel: usize) -> Result<OnEach<Vec<CancelOutcome>>> {
    on_each(farm, limit, parallel, |h, farm| async move { h.cancel_armed(&farm.state_dir).await }).await
}

/// Breaks the lock of each selected host, unless a switch is armed there.
pub async fn unlock(farm: &Path, limit: &[String], parallel: usize) -> Result<OnEach<UnlockOutcome>> {
    on_each(farm, limit, parallel, |h, farm| async move {
        let paths = farm.paths_of(h.name());
        h.unlock(&farm.state_dir, &paths).await
    })
    .await
}

/// Records, once, each file of a detached switch seen fired: the apply
/// journaled them as armed; now they are written.
fn journal_fired(results: &[(String, std::result::Result<Vec<ArmedJob>, TransportError>)]) -> std::io::Result<()> {
    let journal = Journal::open();
    let entries = journal.read()?;
    let mut new = Vec::new();
    for (host, r) in results {
        for job in r.iter().flatten().filter(|j| j.state == JobState::Fired) {
            let run = job.id.parse::<RunId>().ok();
            let plan = run.as_ref().map_or(job.id.as_str(), RunId::plan);
            let ours = |e: &&Entry, outcome: FileOutcome| e.plan == plan && e.host == *host && e.file().is_some_and(|(_, o)| o == outcome);
            let done: Vec<&str> = entries.iter().filter(|e| ours(e, FileOutcome::Written)).filter_map(|e| e.file().map(|(p, _)| p)).collect();
            for armed in entries.iter().filter(|e| ours(e, FileOutcome::Armed)) {
                let Record::File { path, before_sha256, after_sha256, .. } = &armed.record else { continue };
                if done.contains(&path.as_str()) {
                    continue;
                }
                let at = job.renamed_ns.and_then(|ns| jiff::Timestamp::from_nanosecond(ns).ok()).map_or_else(|| job.at.clone(), |t| t.to_string());
                let record = Record::File { path: path.clone(), before_sha256: before_sha256.clone(), after_sha256: after_sha256.clone(), outcome: FileOutcome::Written };
                new.push(Entry::now(&armed.plan, &armed.farm, host, record, format!("detached switch {} fired at {at}", job.id)));
            }
        }
    }
    journal.record(&new)
}
