//! A job's worker and its account's snapshots of repository setups (docs/environments.md):
//! it asks for the one its key names before setup, and saves one after. A job reaches only
//! its own account's snapshots, and only while it runs under the claim its token came with.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use ckrv_wit::protocol::SNAPSHOT_SHA256_HEADER;
use ckrv_wit::types::{ErrorKind, JobState};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::worker::{granted_job, refused};
use crate::clock;
use crate::error::AppError;
use crate::identity::extract::WorkerGrant;
use crate::jobs::JobsState;
use crate::store::{JobRow, NewSnapshot, over_cap};

/// A SHA-256 as hex: 64 lower-case hex digits.
fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A snapshot key: 64 lower-case hex digits (a SHA-256), so it is a safe object name.
fn check_key(key: &str) -> Result<(), AppError> {
    if is_sha256(key) {
        Ok(())
    } else {
        Err(AppError::new(
            ErrorKind::InvalidRequest,
            "a snapshot key is a SHA-256: 64 lower-case hex digits",
        ))
    }
}

/// The job, while it runs under this worker's claim.
async fn running(state: &JobsState, grant: &WorkerGrant, id: &str) -> Result<JobRow, AppError> {
    let row = granted_job(state, grant, id).await?;
    if row.state != JobState::Running || row.generation != grant.generation {
        return Err(refused(state, grant, id).await);
    }
    Ok(row)
}

/// `GET /v1/worker/jobs/{id}/snapshots/{key}`: the account's snapshot, its SHA-256 in a header,
/// or 404; `HEAD` the header alone.
pub async fn get(
    State(state): State<JobsState>,
    method: axum::http::Method,
    grant: WorkerGrant,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, AppError> {
    check_key(&key)?;
    let row = running(&state, &grant, &id).await?;
    let now = clock::millis(clock::now());
    let none = || {
        AppError::new(
            ErrorKind::NotFound,
            format!("no snapshot {key} for this account"),
        )
    };
    let Some(snapshot) = state.store.use_snapshot(&row.account_id, &key, now).await? else {
        return Err(none());
    };
    let headers = [
        (SNAPSHOT_SHA256_HEADER, snapshot.sha256),
        ("content-type", "application/octet-stream".to_string()),
        ("content-length", snapshot.bytes.to_string()),
    ];
    // HEAD: which snapshot it is, for a worker that keeps it unpacked already.
    if method == axum::http::Method::HEAD {
        return Ok(headers.into_response());
    }
    let stream = match state.artifacts.snapshot_reader(&row.account_id, &key).await {
        Ok(stream) => stream,
        Err(error) => {
            // Its archive is gone (removed by hand, say): forget it, so setup runs and saves anew.
            tracing::warn!(%error, key, "a snapshot's archive cannot be read; forgetting it");
            state.store.delete_snapshot(&row.account_id, &key).await?;
            return Err(none());
        }
    };
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// `PUT /v1/worker/jobs/{id}/snapshots/{key}`: stores the body as the account's snapshot under
/// `key`, checked against the SHA-256 in its header and the operator's size limit; then drops
/// the account's least recently used snapshots past its cap.
pub async fn put(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, AppError> {
    check_key(&key)?;
    let expected = headers
        .get(SNAPSHOT_SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .filter(|v| is_sha256(v))
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::InvalidRequest,
                format!("name the snapshot's SHA-256 in the {SNAPSHOT_SHA256_HEADER} header"),
            )
        })?;
    let row = running(&state, &grant, &id).await?;
    let account = row.account_id.as_str();
    let settings = state.engine.settings();
    let limit = settings.max_snapshot_bytes;
    let mut writer = state.artifacts.snapshot_writer(account, &key);
    let mut digest = Sha256::new();
    let mut bytes: u64 = 0;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| {
            AppError::new(
                ErrorKind::InvalidRequest,
                format!("reading the snapshot: {e}"),
            )
        })?;
        bytes = bytes.saturating_add(chunk.len() as u64);
        if bytes > limit {
            let _ = writer.abort().await;
            return Err(AppError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the snapshot is larger than this server's limit of {} MiB (--max-snapshot-mb); keep less in `cache`",
                    limit / (1024 * 1024)
                ),
            ));
        }
        digest.update(&chunk);
        writer.write_all(&chunk).await.map_err(store_error)?;
    }
    let found = hex::encode(digest.finalize());
    if found != expected {
        let _ = writer.abort().await;
        return Err(AppError::new(
            ErrorKind::UnprocessableRequest,
            format!("the snapshot's bytes have SHA-256 {found}, not {expected} as its header says"),
        ));
    }
    writer.shutdown().await.map_err(store_error)?;
    let now = clock::millis(clock::now());
    state
        .store
        .put_snapshot(&NewSnapshot {
            account_id: account,
            key: &key,
            repository: &row.job.git_repo_url,
            job_id: &row.job.id,
            sha256: &found,
            bytes,
            now_ms: now,
        })
        .await?;
    let all = state.store.snapshots(account).await?;
    for old in over_cap(&all, settings.account_snapshot_bytes, &key) {
        state.artifacts.delete_snapshot(account, old).await?;
        state.store.delete_snapshot(account, old).await?;
        tracing::info!(key = old, "snapshot dropped: its account is over its cap");
    }
    Ok(StatusCode::NO_CONTENT)
}

fn store_error(error: std::io::Error) -> AppError {
    tracing::error!(%error, "writing a snapshot to the artifact store failed");
    AppError::new(
        ErrorKind::Unavailable,
        "the artifact store did not take the snapshot; try again later",
    )
}
