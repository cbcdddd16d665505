//! What a job's worker calls, authenticated by the job's own worker token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use ckrv_wit::types::{ErrorKind, JobCompletion, LogBatch, PhaseUpdate, ResultSummary, WorkerJob};

use crate::auth::WorkerGrant;
use crate::clock;
use crate::error::{ApiJson, AppError, invalid};
use crate::state::AppState;
use crate::store::JobRow;

/// Lines per batch; the orchestrator sends far fewer.
const MAX_BATCH_LINES: usize = 10_000;

async fn granted_job(state: &AppState, grant: &WorkerGrant, id: &str) -> Result<JobRow, AppError> {
    grant.check(id)?;
    state
        .store
        .job(id)
        .await?
        .ok_or_else(|| AppError::new(ErrorKind::NotFound, format!("job not found: {id}")))
}

fn ended(row: &JobRow) -> AppError {
    AppError::new(
        ErrorKind::Conflict,
        format!("job {} already ended: it is {}", row.job.id, row.job.status),
    )
}

pub async fn job(
    State(state): State<AppState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
) -> Result<ApiJson<WorkerJob>, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.job.status.is_terminal() {
        return Err(ended(&row));
    }
    state
        .store
        .start_job(&id, &clock::rfc3339(clock::now()))
        .await?;
    state.events.changed(&id);
    let row = granted_job(&state, &grant, &id).await?;
    Ok(ApiJson(WorkerJob {
        job: row.job,
        spec: row.spec,
    }))
}

pub async fn phase(
    State(state): State<AppState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(update): ApiJson<PhaseUpdate>,
) -> Result<StatusCode, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    let now = clock::rfc3339(clock::now());
    if !state
        .store
        .set_phase(&id, update.phase, update.agent.as_deref(), &now)
        .await?
    {
        return Err(ended(&row));
    }
    state.events.changed(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Accepted even after the job ended, so the worker's last lines are never lost.
pub async fn logs(
    State(state): State<AppState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(batch): ApiJson<LogBatch>,
) -> Result<StatusCode, AppError> {
    granted_job(&state, &grant, &id).await?;
    if batch.lines.len() > MAX_BATCH_LINES {
        return Err(invalid(format!(
            "a batch holds at most {MAX_BATCH_LINES} lines; send {} in several",
            batch.lines.len()
        )));
    }
    state.store.append_logs(&id, &batch.lines).await?;
    state.events.changed(&id);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn diff(
    State(state): State<AppState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.job.status.is_terminal() {
        return Err(ended(&row));
    }
    state.artifacts.put_diff(&id, body).await?;
    if !state
        .store
        .set_has_diff(&id, &clock::rfc3339(clock::now()))
        .await?
    {
        return Err(ended(&row));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn result(
    State(state): State<AppState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(summary): ApiJson<ResultSummary>,
) -> Result<StatusCode, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if !state
        .store
        .set_result(&id, &summary, &clock::rfc3339(clock::now()))
        .await?
    {
        return Err(ended(&row));
    }
    state.events.changed(&id);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn complete(
    State(state): State<AppState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(completion): ApiJson<JobCompletion>,
) -> Result<StatusCode, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if !completion.status.is_terminal() {
        return Err(invalid(format!(
            "a job completes with a terminal status, not {}",
            completion.status
        )));
    }
    let now = clock::rfc3339(clock::now());
    if !state
        .store
        .finish_job(&id, completion.status, completion.error.as_deref(), &now)
        .await?
    {
        return Err(ended(&row));
    }
    tracing::info!(job_id = %id, status = %completion.status, "job completed");
    state.events.changed(&id);
    Ok(StatusCode::NO_CONTENT)
}
