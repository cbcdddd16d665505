//! An account's snapshots of repository setups as its people see them (`ckrv env list`,
//! `ckrv env rm`): listed, and dropped so the next job of that repository runs setup afresh.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ckrv_wit::types::{ErrorKind, SnapshotList, SnapshotSummary};

use crate::clock;
use crate::error::{ApiJson, AppError};
use crate::identity::extract::Session;
use crate::jobs::JobsState;
use crate::store::Snapshot;

/// The shortest key prefix `DELETE` takes: shorter ones would too often name several.
const MIN_PREFIX: usize = 8;

fn summary(snapshot: Snapshot) -> SnapshotSummary {
    SnapshotSummary {
        key: snapshot.key,
        repository: snapshot.repository,
        job_id: snapshot.job_id,
        bytes: snapshot.bytes,
        created_at: clock::rfc3339(clock::from_millis(snapshot.created_ms)),
        last_used_at: clock::rfc3339(clock::from_millis(snapshot.used_ms)),
    }
}

/// `GET /v1/snapshots`: the caller's account's snapshots, most recently used first.
pub async fn list(
    State(state): State<JobsState>,
    session: Session,
) -> Result<ApiJson<SnapshotList>, AppError> {
    let snapshots = state.store.snapshots(&session.account_id).await?;
    Ok(ApiJson(SnapshotList {
        snapshots: snapshots.into_iter().map(summary).collect(),
    }))
}

/// `DELETE /v1/snapshots/{key}`: drops the caller's snapshot whose key is `key` or starts with
/// it (at least 8 hex digits, naming one).
pub async fn remove(
    State(state): State<JobsState>,
    session: Session,
    Path(key): Path<String>,
) -> Result<StatusCode, AppError> {
    let account = session.account_id.as_str();
    let prefix = key.to_ascii_lowercase();
    if !(MIN_PREFIX..=64).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(AppError::new(
            ErrorKind::InvalidRequest,
            format!(
                "a snapshot key is {MIN_PREFIX} to 64 hex digits (a unique prefix of the key `ckrv env list` shows)"
            ),
        ));
    }
    let all = state.store.snapshots(account).await?;
    let matching: Vec<&Snapshot> = all.iter().filter(|s| s.key.starts_with(&prefix)).collect();
    let snapshot = match matching.as_slice() {
        [one] => *one,
        [] => {
            return Err(AppError::new(
                ErrorKind::NotFound,
                format!("no snapshot {prefix} in your account; see yours with `ckrv env list`"),
            ));
        }
        several => {
            return Err(AppError::new(
                ErrorKind::Conflict,
                format!(
                    "{prefix} starts {} snapshots' keys; give more of the key",
                    several.len()
                ),
            ));
        }
    };
    // The row first: a job that asks afterwards misses and runs setup, never finding a row
    // whose archive is half gone.
    state.store.delete_snapshot(account, &snapshot.key).await?;
    state
        .artifacts
        .delete_snapshot(account, &snapshot.key)
        .await?;
    tracing::info!(%account, key = %snapshot.key, "snapshot removed by its account");
    Ok(StatusCode::NO_CONTENT)
}
