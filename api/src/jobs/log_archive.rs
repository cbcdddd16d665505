//! Finished jobs' logs move out of the database into the artifact store, one JSON entry per
//! line (`jobs/ID/log.jsonl`). Readers switch to the archive as soon as it is written; the
//! rows stay for [`ArchiveSettings::keep_rows`] more, so a reader that looked just before the
//! switch still finds them, then go. The archive's SHA-256 is recorded with the switch, and
//! every read checks the whole archive against it before it serves a line: a log changed in
//! the artifact store is refused, never shown.

use std::collections::VecDeque;
use std::time::Duration;

use ckrv_wit::types::LogEntry;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::clock;
use crate::jobs::artifacts::{ArtifactError, ArtifactStore};
use crate::store::{Store, StoreError};

/// Jobs handled per query, so one pass never holds the database long.
const BATCH: i64 = 100;
/// Rows read per query while archiving.
const PAGE: u32 = 5_000;

#[derive(Debug, Clone, Copy)]
pub struct ArchiveSettings {
    /// How often finished jobs are looked for.
    pub period: Duration,
    /// How long an archived job's rows stay for readers that started before the switch.
    pub keep_rows: Duration,
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(5),
            keep_rows: Duration::from_secs(10 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error("writing the archived log of job {job_id}: {source}")]
    Write {
        job_id: String,
        source: std::io::Error,
    },
    #[error("the archived log of job {job_id} is unreadable at line {line}: {reason}")]
    Corrupt {
        job_id: String,
        line: usize,
        reason: String,
    },
    #[error(
        "the archived log of job {job_id} does not match the SHA-256 recorded when it was \
         archived (recorded {recorded}, found {found}): it was changed in the artifact store"
    )]
    Tampered {
        job_id: String,
        recorded: String,
        found: String,
    },
}

/// Archives and purges every so often, until dropped.
pub async fn run(store: Store, artifacts: ArtifactStore, settings: ArchiveSettings) {
    clock::every(settings.period, "archiving finished jobs' logs", || {
        pass(&store, &artifacts, settings)
    })
    .await;
}

/// One pass: archives every finished job's log, then drops the rows of those archived more
/// than `keep_rows` ago. Returns how many of each.
pub async fn pass(
    store: &Store,
    artifacts: &ArtifactStore,
    settings: ArchiveSettings,
) -> Result<(usize, usize), ArchiveError> {
    let mut archived = 0;
    loop {
        let ids = store.logs_to_archive(BATCH).await?;
        if ids.is_empty() {
            break;
        }
        for id in &ids {
            archive(store, artifacts, id).await?;
        }
        archived += ids.len();
    }
    let now = clock::now();
    let cutoff = clock::rfc3339(now - settings.keep_rows);
    let mut purged = 0;
    loop {
        let ids = store.log_rows_to_purge(&cutoff, BATCH).await?;
        if ids.is_empty() {
            break;
        }
        for id in &ids {
            store.purge_log_rows(id, &clock::rfc3339(now)).await?;
        }
        purged += ids.len();
    }
    Ok((archived, purged))
}

/// Writes the job's whole log as JSON lines, then points readers at it. Writing it twice (two
/// replicas at once) writes the same bytes: the rows do not change once the job has ended.
async fn archive(
    store: &Store,
    artifacts: &ArtifactStore,
    job_id: &str,
) -> Result<(), ArchiveError> {
    let write_error = |source| ArchiveError::Write {
        job_id: job_id.to_string(),
        source,
    };
    let mut writer = artifacts.log_writer(job_id);
    let mut digest = Sha256::new();
    let mut after = 0;
    let mut lines = 0usize;
    loop {
        let page = store.read_logs(job_id, after, PAGE).await?;
        let Some(last) = page.last().and_then(|e| e.sequence) else {
            break;
        };
        let mut chunk = Vec::new();
        for entry in &page {
            // A LogEntry always serializes.
            serde_json::to_writer(&mut chunk, entry)
                .map_err(std::io::Error::from)
                .map_err(write_error)?;
            chunk.push(b'\n');
        }
        digest.update(&chunk);
        writer.write_all(&chunk).await.map_err(write_error)?;
        lines += page.len();
        after = last;
    }
    writer.shutdown().await.map_err(write_error)?;
    let sha256 = hex::encode(digest.finalize());
    store
        .mark_logs_archived(job_id, &clock::rfc3339(clock::now()), &sha256)
        .await?;
    tracing::debug!(job_id, lines, "job's log archived");
    Ok(())
}

/// An archived log: the job it belongs to and the SHA-256 recorded when it was written (`None`
/// for one archived before digests were recorded, which is read unchecked).
#[derive(Debug, Clone, Copy)]
pub struct Archived<'a> {
    pub job_id: &'a str,
    pub sha256: Option<&'a str>,
}

/// Up to `limit` archived entries with a sequence above `after`, in order.
pub async fn read(
    artifacts: &ArtifactStore,
    archived: Archived<'_>,
    after: u64,
    limit: u32,
) -> Result<Vec<LogEntry>, ArchiveError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut entries = Vec::new();
    scan(artifacts, archived, |entry| {
        if entry.sequence.unwrap_or_default() > after {
            entries.push(entry);
        }
        entries.len() < limit
    })
    .await?;
    Ok(entries)
}

/// The archived log's last sequence; 0 when it is empty.
pub async fn last_sequence(
    artifacts: &ArtifactStore,
    archived: Archived<'_>,
) -> Result<u64, ArchiveError> {
    let mut last = 0;
    scan(artifacts, archived, |entry| {
        last = entry.sequence.unwrap_or(last);
        true
    })
    .await?;
    Ok(last)
}

/// Feeds the archive's entries to `visit` in order while it returns true, then reads the rest
/// only to check the whole archive against its recorded digest: an error then means that
/// nothing `visit` saw may be served.
async fn scan(
    artifacts: &ArtifactStore,
    archived: Archived<'_>,
    mut visit: impl FnMut(LogEntry) -> bool,
) -> Result<(), ArchiveError> {
    let job_id = archived.job_id;
    let mut chunks = artifacts.log_reader(job_id).await?;
    let mut digest = Sha256::new();
    let mut pending: VecDeque<u8> = VecDeque::new();
    let mut line_number = 0;
    // Entries are read until `visit` has enough or a line does not parse; the digest covers
    // every byte either way.
    let mut reading = true;
    let mut unreadable = None;
    let mut take = |line: &[u8], line_number: usize| match serde_json::from_slice::<LogEntry>(line)
    {
        Ok(entry) => visit(entry),
        Err(e) => {
            unreadable = Some(ArchiveError::Corrupt {
                job_id: job_id.to_string(),
                line: line_number,
                reason: e.to_string(),
            });
            false
        }
    };
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(ArtifactError::from)?;
        digest.update(&chunk);
        if !reading {
            continue;
        }
        pending.extend(chunk.iter());
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            line_number += 1;
            if !take(&line[..end], line_number) {
                reading = false;
                pending.clear();
                break;
            }
        }
    }
    if reading && !pending.is_empty() {
        let line: Vec<u8> = pending.into_iter().collect();
        take(&line, line_number + 1);
    }
    let found = hex::encode(digest.finalize());
    if let Some(recorded) = archived.sha256
        && recorded != found
    {
        return Err(ArchiveError::Tampered {
            job_id: job_id.to_string(),
            recorded: recorded.to_string(),
            found,
        });
    }
    unreadable.map_or(Ok(()), Err)
}

impl From<ArchiveError> for crate::error::AppError {
    fn from(error: ArchiveError) -> Self {
        match error {
            ArchiveError::Artifacts(e) => e.into(),
            ArchiveError::Store(e) => e.into(),
            tampered @ ArchiveError::Tampered { .. } => {
                tracing::error!(error = %tampered, "an archived log failed its integrity check");
                crate::error::AppError::new(
                    ckrv_wit::types::ErrorKind::Internal,
                    "this job's archived log was changed in storage after it was archived \
                     (its SHA-256 no longer matches), so it is not served; the operator finds \
                     the details in the API's log",
                )
            }
            other => {
                tracing::error!(error = %other, "archived log failure");
                crate::error::AppError::new(
                    ckrv_wit::types::ErrorKind::Internal,
                    "internal error; see the API's log",
                )
            }
        }
    }
}
