//! Downloading a finished job's diff.

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use ckrv_wit::types::{ErrorKind, JobState};

use super::lookup::resolve;
use crate::error::AppError;
use crate::identity::extract::Session;
use crate::jobs::JobsState;

pub async fn diff(
    State(state): State<JobsState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let row = resolve(&state, &session, &id).await?;
    let job = &row.job;
    if let Some(when) = &row.expired_at {
        return Err(super::expired(&job.id, when));
    }
    if !job.change_is_pullable() || !row.has_diff {
        let why = match row.state {
            JobState::Pending | JobState::Running => "it has not finished yet".to_string(),
            JobState::Succeeded => "it uploaded none".to_string(),
            other => format!("it ended {other}"),
        };
        return Err(AppError::new(
            ErrorKind::NotFound,
            format!("job {} has no diff: {why}", job.id),
        ));
    }
    let bytes = state.artifacts.get_diff(&job.id).await?;
    // The contract serves the diff as text/plain; it is what `git apply` reads.
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], bytes))
}
