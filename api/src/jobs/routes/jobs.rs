//! Creating, reading, listing and cancelling a user's jobs.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ckrv_wit::types::{ErrorKind, Job, JobCreate, JobListResponse, JobStatus, PublishMode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::lookup::resolve;
use crate::clock;
use crate::error::{ApiJson, ApiQuery, AppError, invalid};
use crate::identity::extract::Session;
use crate::identity::quota::{self, dollars_to_micros, micros_to_dollars};
use crate::jobs::JobsState;
use crate::store::{KeyUse, NewJob};

/// Specs are prose plus front matter; anything larger is a mistake.
const MAX_SPEC_BYTES: usize = 1024 * 1024;
/// The contract's default base branch.
const DEFAULT_BASE_BRANCH: &str = "main";
/// The contract's page size: 20 unless asked, at most 100.
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

pub async fn create(
    State(state): State<JobsState>,
    session: Session,
    headers: HeaderMap,
    ApiJson(request): ApiJson<JobCreate>,
) -> Result<Response, AppError> {
    let (request, parent) = super::follow_ups::continued(&state, &session, request).await?;
    let parent_id = parent.as_ref().map(|p| p.job.id.as_str());
    let (base_branch, publish) = checked(&state, &session, &request).await?;
    let base_branch = base_branch.as_str();
    let key = idempotency_key(&headers)?;
    if let Some(key) = key
        && let Some(earlier) = earlier_use(&state, &session, &request, key).await?
    {
        return Ok(earlier);
    }
    match make(
        &state,
        &session,
        &request,
        base_branch,
        Lineage {
            publish,
            parent_id,
            group: None,
        },
        key,
    )
    .await
    {
        Ok(job) => Ok(created(job, false)),
        Err(refused) => {
            // Refused before a job was made (the quota): a retry is served afresh. Once a job
            // exists the key stands for it, and this deletes nothing.
            if let Some(key) = key {
                state
                    .store
                    .release_idempotency_key(&session.account_id, key)
                    .await?;
            }
            Err(refused)
        }
    }
}

/// A spec's `max_cost_usd` within what the operator lets a job of its account's tier spend.
async fn check_budget(state: &JobsState, session: &Session, spec: &str) -> Result<(), AppError> {
    let asked = ckrv_agents::parse_spec(spec)
        .ok()
        .and_then(|spec| spec.front.max_cost_usd);
    let Some(asked) = asked else {
        return Ok(());
    };
    let tier = session.account(&state.store).await?.tier;
    match state.model_budgets.job.for_tier(tier) {
        Some(cap) if dollars_to_micros(asked) > cap => Err(invalid(format!(
            "spec_content: max_cost_usd = {asked} is more than a job of a {tier} account may \
             spend on models on this server (${:.2}); ask for at most that",
            micros_to_dollars(cap)
        ))),
        _ => Ok(()),
    }
}

/// Where the job's result goes: as the request asks, else as its spec's front matter says,
/// else the operator's default.
fn publish_mode(state: &JobsState, request: &JobCreate) -> Result<PublishMode, AppError> {
    if let Some(asked) = request.publish {
        return Ok(asked);
    }
    let front = ckrv_agents::parse_spec(&request.spec_content)
        .ok()
        .and_then(|spec| spec.front.publish);
    match front {
        Some(text) => PublishMode::parse(&text).map_err(|problem| {
            invalid(format!(
                "spec_content: front-matter key `publish`: {problem}"
            ))
        }),
        None => Ok(state.default_publish),
    }
}

/// A job request checked as it is before a job is made: its repository and base branch, its
/// spec (agent and options now, not after a worker has cloned), its budget, how it publishes
/// and its credential. Returns the base branch and the publish mode.
pub(super) async fn checked(
    state: &JobsState,
    session: &Session,
    request: &JobCreate,
) -> Result<(String, PublishMode), AppError> {
    let base_branch = request
        .git_base_branch
        .as_deref()
        .map_or(DEFAULT_BASE_BRANCH, str::trim);
    validate(request, base_branch, state.allow_local_repos)?;
    state
        .workers
        .check_spec(&request.spec_content)
        .map_err(|e| invalid(format!("spec_content: {e}")))?;
    check_budget(state, session, &request.spec_content).await?;
    let publish = publish_mode(state, request)?;
    if publish.publishes() && request.git_credential_name.is_none() {
        return Err(invalid(format!(
            "publish: {publish} pushes to the repository with the job's git credential; name one \
             with git_credential_name (`ckrv run --cloud --credential NAME`), or publish none"
        )));
    }
    if let Some(name) = &request.git_credential_name {
        check_credential(state, session, name).await?;
    }
    Ok((base_branch.to_string(), publish))
}

/// Where a new job comes from besides its request: how it publishes, the job it follows up,
/// and its attempt group and number.
pub(super) struct Lineage<'a> {
    pub publish: PublishMode,
    pub parent_id: Option<&'a str>,
    pub group: Option<(&'a str, u32)>,
}

/// What an earlier request under `key` answers for this one: `None` when this request now holds
/// the key and makes the job; the earlier job for a replay; an error for a key in use.
async fn earlier_use(
    state: &JobsState,
    session: &Session,
    request: &JobCreate,
    key: &str,
) -> Result<Option<Response>, AppError> {
    let digest = hex::encode(Sha256::digest(
        serde_json::to_vec(request).map_err(|e| invalid(e.to_string()))?,
    ));
    let now_ms = clock::millis(clock::now());
    match state
        .store
        .use_idempotency_key(&session.account_id, key, &digest, now_ms)
        .await?
    {
        KeyUse::Claimed => Ok(None),
        KeyUse::InFlight {
            same_request: false,
        }
        | KeyUse::Made {
            same_request: false,
            ..
        } => Err(AppError::new(
            ErrorKind::UnprocessableRequest,
            format!(
                "Idempotency-Key '{key}' was used for a different request; use a new key for a \
                 new job"
            ),
        )),
        KeyUse::InFlight { .. } => Err(AppError::new(
            ErrorKind::Conflict,
            format!(
                "a request with Idempotency-Key '{key}' is still being served; retry in a moment"
            ),
        )),
        KeyUse::Made { job_id, .. } => {
            let row = state
                .store
                .job(&job_id)
                .await?
                .ok_or_else(|| AppError::new(ErrorKind::Internal, "the key's job is gone"))?;
            Ok(Some(created(row.job, true)))
        }
    }
}

/// How long an idempotency key stands for its job.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            invalid(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters (a UUID is usual)"
            ))
        })?;
    Ok(Some(key))
}

/// 201 with the job; a replay of an earlier request says so in `Idempotent-Replayed`.
fn created(job: Job, replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, ApiJson(job)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Makes the job within the account's quota (under `key`, when the request sent one) and
/// starts it if the limits let it. Once made, the job is the answer: a worker that could not
/// start has failed it with the reason, which the caller reads in the job, and a retry under
/// the same key finds this job rather than making and paying for another.
pub(super) async fn make(
    state: &JobsState,
    session: &Session,
    request: &JobCreate,
    base_branch: &str,
    lineage: Lineage<'_>,
    key: Option<&str>,
) -> Result<Job, AppError> {
    let account = session.account(&state.store).await?;
    let now = clock::now();
    let (cycle_start, cycle_end) = quota::cycle(now);
    let limit = quota::monthly_limit(account.tier);
    let id = uuid::Uuid::new_v4().to_string();
    let created_at = clock::rfc3339(now);
    let feature_branch = format!("ckrv/{}", &id[..8]);
    let new = NewJob {
        id: &id,
        account_id: &account.id,
        spec: &request.spec_content,
        spec_path: request
            .spec_path
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty()),
        git_repo_url: request.git_repo_url.trim(),
        git_base_branch: base_branch,
        git_credential_name: request.git_credential_name.as_deref(),
        feature_branch_name: &feature_branch,
        created_ms: clock::millis(now),
        created_at: &created_at,
        idempotency_key: key,
        no_snapshot: request.no_snapshot.unwrap_or(false),
        publish: lineage.publish,
        parent_id: lineage.parent_id,
        group: lineage.group,
    };
    let Some(row) = state
        .store
        .insert_job_within_quota(&new, limit, clock::millis(cycle_start))
        .await?
    else {
        return Err(AppError::quota_exceeded(
            format!(
                "all {limit} jobs of this month's {} quota are used; it resets at {}",
                account.tier,
                clock::rfc3339(cycle_end)
            ),
            clock::rfc3339(cycle_end),
            state.billing_url.clone(),
        ));
    };
    tracing::info!(job_id = %id, account = %account.id, "job created");
    // Its `job.queued` deliveries are in the outbox: wake the webhook senders.
    state.events.changed(&id);

    // Starts this job now if the limits let it, and whatever else waits before it. A job that
    // could not start has ended `failed` with the reason; the caller sees it in the job.
    match state.engine.schedule().await {
        Ok(started)
            if started
                .iter()
                .any(|(job, outcome)| *job == id && outcome.is_err()) =>
        {
            Ok(state.store.job(&id).await?.map_or(row.job, |now| now.job))
        }
        Ok(_) => Ok(row.job),
        Err(error) => {
            // The job waits `pending`; the reaper's next pass starts it.
            tracing::error!(job_id = %id, %error, "starting jobs after a create");
            Ok(row.job)
        }
    }
}

/// A job may name only a credential of its own account (the seed's "Credential not found"
/// otherwise).
async fn check_credential(
    state: &JobsState,
    session: &Session,
    name: &str,
) -> Result<(), AppError> {
    if state
        .store
        .credential_exists(&session.account_id, name)
        .await?
    {
        return Ok(());
    }
    Err(AppError::new(
        ErrorKind::NotFound,
        format!(
            "Credential not found: '{name}'; see your credentials with `ckrv cloud credentials list`"
        ),
    ))
}

fn validate(
    request: &JobCreate,
    base_branch: &str,
    allow_local_repos: bool,
) -> Result<(), AppError> {
    if request.spec_content.trim().is_empty() {
        return Err(invalid(
            "spec_content is empty: send the spec file's contents",
        ));
    }
    if request.spec_content.len() > MAX_SPEC_BYTES {
        return Err(invalid(format!(
            "spec_content is {} bytes; the limit is {MAX_SPEC_BYTES}",
            request.spec_content.len()
        )));
    }
    let repo = request.git_repo_url.trim();
    if repo.is_empty() {
        return Err(invalid(
            "git_repo_url is empty: give the repository's clone URL",
        ));
    }
    // The worker checks again, against the addresses the host resolves to, when it connects.
    ckrv_wit::repo_url::check(repo, allow_local_repos)
        .map_err(|e| invalid(format!("git_repo_url: {e}")))?;
    if base_branch.is_empty() {
        return Err(invalid(
            "git_base_branch is empty: name the branch to start from",
        ));
    }
    if !valid_branch(base_branch) {
        return Err(invalid(format!(
            "git_base_branch {base_branch:?} is not a valid branch name"
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

pub async fn get(
    State(state): State<JobsState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<ApiJson<Job>, AppError> {
    let mut job = resolve(&state, &session, &id).await?.job;
    job.follow_ups = Some(state.store.follow_ups(&job.id).await?);
    Ok(ApiJson(job))
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<JobStatus>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<JobsState>,
    session: Session,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<JobListResponse>, AppError> {
    let limit = match query.limit.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => limit as u32,
        _ => return Err(invalid(format!("limit must be between 1 and {MAX_PAGE}"))),
    };
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
        .list_jobs(&session.account_id, query.status, before, limit)
        .await?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(ApiJson(JobListResponse {
        jobs: rows.into_iter().map(|r| r.job).collect(),
        next_cursor,
    }))
}

pub async fn cancel(
    State(state): State<JobsState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<ApiJson<Job>, AppError> {
    let row = resolve(&state, &session, &id).await?;
    if !state.engine.cancel(&row.job.id).await? {
        return Err(AppError::new(
            ErrorKind::Conflict,
            format!("job {} already ended: it is {}", row.job.id, row.state),
        ));
    }
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
