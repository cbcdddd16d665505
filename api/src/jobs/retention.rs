//! Retention: a finished job's diff and log are kept for the configured time after it ended,
//! then removed; the job stays listed, and asking for its results says they expired. A
//! snapshot of a repository's setup that no job has used for as long is removed too.

use std::time::Duration;

use crate::clock;
use crate::jobs::artifacts::ArtifactStore;
use crate::store::Store;

/// Jobs expired per statement, so one pass never holds the database long.
const BATCH: i64 = 100;

/// Expires what is older than `retention`, every so often, until dropped.
pub async fn run(store: Store, artifacts: ArtifactStore, retention: Duration) {
    let period = (retention / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    clock::every(
        period,
        "expiring old jobs' results and unused snapshots",
        || async {
            let jobs = expire(&store, &artifacts, retention).await?;
            let snapshots = expire_snapshots(&store, &artifacts, retention).await?;
            anyhow::Ok(jobs + snapshots)
        },
    )
    .await;
}

/// One pass: every job that ended more than `retention` ago loses its diff and its log.
pub async fn expire(
    store: &Store,
    artifacts: &ArtifactStore,
    retention: Duration,
) -> anyhow::Result<usize> {
    let now = clock::now();
    let cutoff = clock::rfc3339(now - retention);
    let mut expired = 0;
    loop {
        let ids = store.expirable_jobs(&cutoff, BATCH).await?;
        if ids.is_empty() {
            return Ok(expired);
        }
        for id in &ids {
            // The artifacts go first: a job marked expired never points at one that stayed.
            artifacts.delete_job(id).await?;
            store.expire_job(id, &clock::rfc3339(now)).await?;
            tracing::info!(job_id = id, "job's diff and log expired");
        }
        expired += ids.len();
    }
}

/// One pass: every snapshot no job has used for `retention` is removed.
pub async fn expire_snapshots(
    store: &Store,
    artifacts: &ArtifactStore,
    retention: Duration,
) -> anyhow::Result<usize> {
    let cutoff = clock::millis(clock::now() - retention);
    let mut expired = 0;
    loop {
        let unused = store.unused_snapshots(cutoff, BATCH).await?;
        if unused.is_empty() {
            return Ok(expired);
        }
        for (account, key) in &unused {
            // The archive goes first: a row left behind is forgotten when asked for.
            artifacts.delete_snapshot(account, key).await?;
            store.delete_snapshot(account, key).await?;
            tracing::info!(key, "unused snapshot expired");
        }
        expired += unused.len();
    }
}
