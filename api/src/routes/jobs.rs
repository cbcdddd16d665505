//! Creating, reading, listing and cancelling a user's jobs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ckrv_wit::types::{ErrorKind, Job, JobPage, JobRequest, JobStatus};
use serde::Deserialize;

use crate::auth::{self, Session};
use crate::error::{ApiJson, ApiQuery, AppError, invalid};
use crate::state::AppState;
use crate::store::{JobLookup, JobRow, NewJob};
use crate::{clock, quota};

/// Specs are prose plus front matter; anything larger is a mistake.
const MAX_SPEC_BYTES: usize = 1024 * 1024;
const MIN_PREFIX: usize = 4;

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    ApiJson(request): ApiJson<JobRequest>,
) -> Result<(StatusCode, ApiJson<Job>), AppError> {
    validate(&request)?;
    if let Some(name) = &request.credential {
        return Err(AppError::new(
            ErrorKind::NotFound,
            format!(
                "credential '{name}' not found (stored git credentials are not available on this server yet)"
            ),
        ));
    }
    let account = super::users::account_of(&state, &session).await?;
    let now = clock::now();
    let (cycle_start, cycle_end) = quota::cycle(now);
    let limit = quota::monthly_limit(account.tier);
    let id = uuid::Uuid::new_v4().to_string();
    let created_at = clock::rfc3339(now);
    let feature_branch = format!("ckrv/{}", &id[..8]);
    let new = NewJob {
        id: &id,
        account_id: &account.id,
        spec: &request.spec,
        spec_path: request.spec_path.trim(),
        repo_url: request.repo_url.trim(),
        base_branch: request.base_branch.trim(),
        credential: None,
        feature_branch: &feature_branch,
        created_ms: clock::millis(now),
        created_at: &created_at,
    };
    let row = state
        .store
        .insert_job_within_quota(&new, limit, clock::millis(cycle_start))
        .await?
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "all {limit} jobs of this month's {} quota are used; it resets at {}",
                    account.tier,
                    clock::rfc3339(cycle_end)
                ),
            )
        })?;

    let token = auth::issue_worker_token(&state.store, &id).await?;
    if let Err(e) = state.dispatcher.start(&id, &token).await {
        tracing::error!(job_id = %id, error = %e, "dispatch failed");
        let reason = format!("could not start a worker: {e}");
        state
            .store
            .finish_job(
                &id,
                JobStatus::Failed,
                Some(&reason),
                &clock::rfc3339(clock::now()),
            )
            .await?;
        return Err(AppError::new(ErrorKind::Unavailable, reason));
    }
    tracing::info!(job_id = %id, account = %account.id, "job created");
    Ok((StatusCode::CREATED, ApiJson(row.job)))
}

fn validate(request: &JobRequest) -> Result<(), AppError> {
    if request.spec.trim().is_empty() {
        return Err(invalid("spec is empty: send the spec file's contents"));
    }
    if request.spec.len() > MAX_SPEC_BYTES {
        return Err(invalid(format!(
            "spec is {} bytes; the limit is {MAX_SPEC_BYTES}",
            request.spec.len()
        )));
    }
    let repo = request.repo_url.trim();
    if repo.is_empty() {
        return Err(invalid(
            "repo_url is empty: give the repository's clone URL",
        ));
    }
    if repo.chars().any(char::is_whitespace) || repo.starts_with('-') {
        return Err(invalid(format!("repo_url {repo:?} is not a clone URL")));
    }
    let branch = request.base_branch.trim();
    if branch.is_empty() {
        return Err(invalid(
            "base_branch is empty: name the branch to start from",
        ));
    }
    if !valid_branch(branch) {
        return Err(invalid(format!(
            "base_branch {branch:?} is not a valid branch name"
        )));
    }
    Ok(())
}

/// The subset of git's ref rules that matter for a branch we pass to `git clone -b`.
fn valid_branch(name: &str) -> bool {
    !name.starts_with('-')
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("@{")
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
}

/// Resolves a job id or unique prefix among the caller's jobs.
pub(super) async fn resolve(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<JobRow, AppError> {
    if id.len() < MIN_PREFIX {
        return Err(invalid(format!(
            "job id {id:?} is too short: give at least {MIN_PREFIX} characters"
        )));
    }
    let not_found = || AppError::new(ErrorKind::NotFound, format!("job not found: {id}"));
    // Ids are UUIDs; anything else cannot match (and cannot smuggle LIKE wildcards).
    if !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(not_found());
    }
    match state
        .store
        .find_job(&session.account_id, &id.to_ascii_lowercase())
        .await?
    {
        JobLookup::Found(row) => Ok(*row),
        JobLookup::NotFound => Err(not_found()),
        JobLookup::Ambiguous => Err(invalid(format!(
            "job id prefix {id:?} matches more than one job: give more characters"
        ))),
    }
}

pub async fn get(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<ApiJson<Job>, AppError> {
    Ok(ApiJson(resolve(&state, &session, &id).await?.job))
}

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    session: Session,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<JobPage>, AppError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(invalid("limit must be between 1 and 100"));
    }
    let before = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .map_err(|_| invalid(format!("cursor {cursor:?} is not one this API returned")))?,
        ),
    };
    let rows = state
        .store
        .list_jobs(&session.account_id, before, limit)
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(ApiJson(JobPage {
        jobs: rows.into_iter().map(|r| r.job).collect(),
        next_cursor,
    }))
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<ApiJson<Job>, AppError> {
    let row = resolve(&state, &session, &id).await?;
    let now = clock::rfc3339(clock::now());
    let cancelled = state
        .store
        .finish_job(
            &row.job.id,
            JobStatus::Cancelled,
            Some("cancelled by the user"),
            &now,
        )
        .await?;
    if !cancelled {
        return Err(AppError::new(
            ErrorKind::Conflict,
            format!("job {} already ended: it is {}", row.job.id, row.job.status),
        ));
    }
    state.dispatcher.stop(&row.job.id).await;
    state.events.changed(&row.job.id);
    let job = state
        .store
        .job(&row.job.id)
        .await?
        .ok_or_else(|| AppError::new(ErrorKind::NotFound, format!("job not found: {id}")))?;
    Ok(ApiJson(job.job))
}

#[cfg(test)]
mod tests {
    use super::valid_branch;

    #[test]
    fn branch_names_follow_git_rules() {
        for ok in ["main", "release/1.2", "feature-x"] {
            assert!(valid_branch(ok), "{ok}");
        }
        for bad in ["-x", "a..b", "a b", "x.lock", "a:b", "/x", "x/", "a@{1}"] {
            assert!(!valid_branch(bad), "{bad}");
        }
    }
}
