//! Downloading a finished job's diff.

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use ckrv_wit::types::{ErrorKind, JobStatus};

use super::jobs::resolve;
use crate::auth::Session;
use crate::error::AppError;
use crate::state::AppState;

pub async fn diff(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let row = resolve(&state, &session, &id).await?;
    let job = &row.job;
    if job.status != JobStatus::Succeeded || !row.has_diff {
        let why = match job.status {
            JobStatus::Pending | JobStatus::Running => "it has not finished yet".to_string(),
            JobStatus::Succeeded => "it uploaded none".to_string(),
            other => format!("it ended {other}"),
        };
        return Err(AppError::new(
            ErrorKind::NotFound,
            format!("job {} has no diff: {why}", job.id),
        ));
    }
    let bytes = state.artifacts.get_diff(&job.id).await?;
    Ok(([(CONTENT_TYPE, "text/x-diff; charset=utf-8")], bytes))
}
