//! Retention: a finished job's diff and log are kept for the configured time after it ended,
//! then removed; the job stays listed, and asking for its results says they expired.

use std::time::Duration;

use crate::clock;
use crate::jobs::artifacts::ArtifactStore;
use crate::store::Store;

/// Jobs expired per statement, so one pass never holds the database long.
const BATCH: i64 = 100;

/// Expires what is older than `retention`, every so often, until dropped.
pub async fn run(store: Store, artifacts: ArtifactStore, retention: Duration) {
    let period = (retention / 2).clamp(Duration::from_millis(100), Duration::from_secs(60));
    clock::every(period, "expiring old jobs' results", || {
        expire(&store, &artifacts, retention)
    })
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
