//! What a job's worker calls, authenticated by the job's own worker token. The token carries
//! the claim (generation) it was issued under, so a worker that lost its job to another writes
//! nothing: every change goes through the engine, fenced by that generation. An external
//! worker first claims a job with its operator-issued credential.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use ckrv_agents::Policy;
use ckrv_wit::types::{
    DiffStats, ErrorKind, GitCredential, HeartbeatAnswer, JobCompletion, JobPhase, JobStart,
    JobState, LogBatch, ModelAccess, PhaseUpdate, Publication, PublishMode, Verification,
    WorkerClaim, WorkerJob,
};

use sha2::{Digest as _, Sha256};

use crate::error::{ApiJson, AppError, invalid};
use crate::identity::extract::{ExternalWorker, WorkerGrant};
use crate::identity::tokens::duration_ms;
use crate::jobs::JobsState;
use crate::store::{JobRow, MAX_LOG_SEQUENCE, Pick, log_batch_fits};

/// Lines per batch; the orchestrator sends far fewer.
const MAX_BATCH_LINES: usize = 10_000;
/// The longest log message stored whole (the orchestrator already cuts agent lines at 16 KiB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub(crate) async fn granted_job(
    state: &JobsState,
    grant: &WorkerGrant,
    id: &str,
) -> Result<JobRow, AppError> {
    grant.check(id)?;
    state
        .store
        .job(id)
        .await?
        .ok_or_else(|| AppError::new(ErrorKind::NotFound, format!("job not found: {id}")))
}

/// Why a worker's write changed nothing: the job ended, or it runs under a newer claim.
pub(crate) async fn refused(state: &JobsState, grant: &WorkerGrant, id: &str) -> AppError {
    match granted_job(state, grant, id).await {
        Ok(row) if row.state.is_terminal() => AppError::new(
            ErrorKind::Conflict,
            format!("job {} already ended: it is {}", row.job.id, row.state),
        ),
        Ok(row) if row.generation != grant.generation => AppError::new(
            ErrorKind::Conflict,
            format!(
                "job {} was given to another worker; this worker's claim ended",
                row.job.id
            ),
        ),
        Ok(row) => AppError::new(
            ErrorKind::Conflict,
            format!(
                "job {} is {} ({}); the change does not apply",
                row.job.id,
                row.state,
                row.job.phase.map_or("", |p| p.as_str())
            ),
        ),
        Err(e) => e,
    }
}

/// An external worker asks for the next job the limits admit: 200 with the job and its own
/// token, or 204 when nothing waits.
pub async fn claim(
    State(state): State<JobsState>,
    worker: ExternalWorker,
) -> Result<Response, AppError> {
    let next = Pick::Next(state.engine.settings().admission);
    match state.engine.claim_external(next, &worker.name).await? {
        Some(claim) => Ok(ApiJson(WorkerClaim {
            job_id: claim.job_id,
            token: claim.token,
        })
        .into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub async fn job(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<ApiJson<WorkerJob>, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.state != JobState::Running || row.generation != grant.generation {
        return Err(refused(&state, &grant, &id).await);
    }
    let settings = state.engine.settings();
    let heartbeat = settings.heartbeat();
    let log_sequence = state.store.last_log_sequence(&id).await?;
    let git_credential = match &row.credential_name {
        Some(name) => Some(open_credential(&state, &row, name, grant.generation).await?),
        None => None,
    };
    let start = job_start(&state, &row).await?;
    Ok(ApiJson(WorkerJob {
        start,
        publish: row.job.publish,
        job: row.job,
        heartbeat_ms: u32::try_from(duration_ms(heartbeat)).unwrap_or(u32::MAX),
        log_sequence,
        pipeline: state.workers.pipeline.stages.clone(),
        model_access: ModelAccess {
            // The claim's model token, derived from the worker token this request carries.
            token: crate::identity::tokens::model_token(crate::identity::extract::bearer(
                &headers,
            )?),
            keys: state.workers.keys_for(&row.spec),
        },
        egress: state.workers.egress_for(&row.spec).to_string(),
        git_credential,
        spec_content: row.spec,
        setup_timeout_s: Some(u32::try_from(settings.setup_timeout.as_secs()).unwrap_or(u32::MAX)),
        verify_timeout_s: Some(
            u32::try_from(settings.verify_timeout.as_secs()).unwrap_or(u32::MAX),
        ),
        fresh_setup: Some(row.no_snapshot),
        setup_egress: state.workers.setup_egress().map(ToString::to_string),
        egress_internal: Some(
            state
                .workers
                .internal()
                .iter()
                .map(ToString::to_string)
                .collect(),
        ),
    }))
}

/// Where a follow-up starts: its parent's change on the parent's base commit, and the branch
/// and pull request the chain published, which a publishing follow-up updates.
async fn job_start(state: &JobsState, row: &JobRow) -> Result<Option<JobStart>, AppError> {
    let Some(parent) = parent_of(state, row).await? else {
        return Ok(None);
    };
    let gone = || {
        AppError::new(
            ErrorKind::Conflict,
            format!("the change of job {} to start from is gone", parent.job.id),
        )
    };
    let base_commit = parent
        .job
        .diff_stats
        .as_ref()
        .and_then(|stats| stats.base_commit.clone())
        .ok_or_else(gone)?;
    let diff_sha256 = parent.job.diff_sha256.clone().ok_or_else(gone)?;
    let published = parent.job.publication.as_ref();
    Ok(Some(JobStart {
        parent_id: parent.job.id.clone(),
        base_commit,
        diff_sha256,
        published_branch: published.map(|p| p.branch.clone()),
        published_commit: published.map(|p| p.commit.clone()),
        pull_request_url: published.and_then(|p| p.pull_request_url.clone()),
    }))
}

/// The job `row` follows up, if any.
async fn parent_of(state: &JobsState, row: &JobRow) -> Result<Option<JobRow>, AppError> {
    match &row.job.parent_id {
        Some(id) => Ok(state.store.job(id).await?),
        None => Ok(None),
    }
}

/// A follow-up's start: its parent's diff, for its worker.
pub async fn start_diff(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.state != JobState::Running || row.generation != grant.generation {
        return Err(refused(&state, &grant, &id).await);
    }
    let parent = parent_of(&state, &row)
        .await?
        .ok_or_else(|| AppError::new(ErrorKind::NotFound, format!("job {id} follows up no job")))?;
    if parent.expired_at.is_some() || !parent.has_diff {
        return Err(AppError::new(
            ErrorKind::NotFound,
            format!("the change of job {} is gone", parent.job.id),
        ));
    }
    let bytes = state.artifacts.get_diff(&parent.job.id).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/x-diff")], bytes).into_response())
}

/// The job's git credential, opened for the worker of claim `generation`, once: a second read
/// under the same claim gets 409 rather than the secret again.
async fn open_credential(
    state: &JobsState,
    row: &JobRow,
    name: &str,
    generation: i64,
) -> Result<GitCredential, AppError> {
    if !state
        .store
        .take_credential_delivery(&row.job.id, generation)
        .await?
    {
        return Err(AppError::new(
            ErrorKind::Conflict,
            format!(
                "job {}'s git credential was already handed to its worker",
                row.job.id
            ),
        ));
    }
    let now = crate::clock::rfc3339(crate::clock::now());
    let Some(stored) = state
        .store
        .use_credential(&row.account_id, name, &now)
        .await?
    else {
        return Err(AppError::new(
            ErrorKind::NotFound,
            format!("the job's credential '{name}' was removed after the job was created"),
        ));
    };
    let opened = state
        .secrets
        .open(
            &stored.sealed,
            &crate::credentials::secrets::credential_binding(&row.account_id, name),
        )
        .map_err(|e| {
            tracing::error!(job_id = %row.job.id, error = %e, "opening a credential");
            AppError::new(
                ErrorKind::Internal,
                "the job's credential cannot be opened with this server's keys",
            )
        })?;
    let value = String::from_utf8(opened.to_vec())
        .map_err(|_| AppError::new(ErrorKind::Internal, "the job's credential is not text"))?;
    tracing::info!(job_id = %row.job.id, credential = name, "credential handed to the worker");
    Ok(GitCredential {
        provider: stored.provider,
        credential_type: stored.credential_type,
        username: stored.username,
        value,
    })
}

/// A component the pipeline names, by its SHA-256, for the worker of a running job.
pub async fn component(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path((id, digest)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.state != JobState::Running || row.generation != grant.generation {
        return Err(refused(&state, &grant, &id).await);
    }
    let bytes = state.workers.pipeline.component(&digest).ok_or_else(|| {
        AppError::new(
            ErrorKind::NotFound,
            format!("the pipeline has no component {digest}"),
        )
    })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/wasm")],
        Bytes::copy_from_slice(bytes),
    )
        .into_response())
}

/// Renews the worker's lease: 204, or 200 with the connections the API's egress proxy refused
/// its agent since (for its log). 409 tells the worker its job ended (cancelled, timed out) or
/// went to another worker: it stops.
pub async fn heartbeat(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    grant.check(&id)?;
    if !state.engine.heartbeat(&id, grant.generation).await? {
        return Err(refused(&state, &grant, &id).await);
    }
    let egress_refusals = state.store.take_egress_notices(&id).await?;
    if egress_refusals.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(ApiJson(HeartbeatAnswer { egress_refusals }).into_response())
}

pub async fn phase(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(update): ApiJson<PhaseUpdate>,
) -> Result<StatusCode, AppError> {
    grant.check(&id)?;
    if let Some(requested) = &update.setup_egress {
        let policy = setup_egress(&state, &grant, &id, update.phase, requested).await?;
        if !state
            .store
            .set_setup_egress(&id, grant.generation, &policy)
            .await?
        {
            return Err(refused(&state, &grant, &id).await);
        }
    }
    if let Some(summary) = &update.setup
        && !state
            .engine
            .attach_setup(&id, grant.generation, summary)
            .await?
    {
        return Err(refused(&state, &grant, &id).await);
    }
    if let Some(verification) = &update.verification {
        check_verification(update.phase, verification)?;
        if !state
            .engine
            .attach_verification(&id, grant.generation, verification)
            .await?
        {
            return Err(refused(&state, &grant, &id).await);
        }
    }
    if state
        .engine
        .phase(&id, grant.generation, update.phase, update.agent.as_deref())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(refused(&state, &grant, &id).await)
    }
}

/// A worker's verification report, within bounds: it comes with phase `verifying`, and what
/// it quotes of the job's output is at most what a status page shows.
fn check_verification(phase: JobPhase, verification: &Verification) -> Result<(), AppError> {
    if phase != JobPhase::Verifying {
        return Err(invalid(format!(
            "verification goes with phase `verifying`, not `{}`",
            phase.as_str()
        )));
    }
    let quoted: usize = verification
        .last_lines
        .iter()
        .map(String::len)
        .sum::<usize>()
        + verification.command.len()
        + verification.note.as_ref().map_or(0, String::len);
    if verification.last_lines.len() > MAX_VERIFICATION_LINES || quoted > MAX_VERIFICATION_BYTES {
        return Err(invalid(format!(
            "verification quotes too much: at most {MAX_VERIFICATION_LINES} lines and {MAX_VERIFICATION_BYTES} bytes in all"
        )));
    }
    Ok(())
}

/// The most lines and bytes a verification report quotes.
const MAX_VERIFICATION_LINES: usize = 50;
const MAX_VERIFICATION_BYTES: usize = 64 * 1024;

/// The policy a job's setup may run under, as its worker reports it with phase `setup`: the
/// API checks it again against the operator's ceiling (`--setup-egress-allow`, else the
/// job's own policy), since its egress proxy applies it to a job pod's setup.
async fn setup_egress(
    state: &JobsState,
    grant: &WorkerGrant,
    id: &str,
    phase: JobPhase,
    requested: &str,
) -> Result<String, AppError> {
    if phase != JobPhase::Setup {
        return Err(invalid(format!(
            "setup_egress goes with phase `setup`, not `{}`",
            phase.as_str()
        )));
    }
    let requested: Policy = requested
        .parse()
        .map_err(|e| invalid(format!("setup_egress `{requested}` is not a policy: {e}")))?;
    let ceiling = match state.workers.setup_egress() {
        Some(ceiling) => ceiling.clone(),
        None => state
            .workers
            .egress_for(&granted_job(state, grant, id).await?.spec),
    };
    let policy = ceiling.narrow(&requested).map_err(|e| {
        invalid(format!(
            "setup_egress `{requested}` is not within `{ceiling}`, the most setup may reach: {e}"
        ))
    })?;
    Ok(policy.to_string())
}

/// The worker sends every line before it completes the job; once the job has ended its token
/// is revoked, so nothing can be added to its log afterwards.
pub async fn logs(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(batch): ApiJson<LogBatch>,
) -> Result<StatusCode, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.state != JobState::Running || row.generation != grant.generation {
        return Err(refused(&state, &grant, &id).await);
    }
    if batch.lines.len() > MAX_BATCH_LINES {
        return Err(invalid(format!(
            "a batch holds at most {MAX_BATCH_LINES} lines; send {} in several",
            batch.lines.len()
        )));
    }
    if batch.first_sequence == 0 {
        return Err(invalid("log sequences start at 1".to_string()));
    }
    if !log_batch_fits(batch.first_sequence, batch.lines.len()) {
        return Err(invalid(format!(
            "log sequences go up to {MAX_LOG_SEQUENCE}: {} line(s) from first_sequence {} do not \
             fit; number the job's lines 1, 2, 3 …",
            batch.lines.len(),
            batch.first_sequence
        )));
    }
    let mut lines = batch.lines;
    for line in &mut lines {
        cap_message(&mut line.message);
    }
    let cap = state.engine.settings().max_log_lines;
    if state
        .store
        .append_logs(&id, batch.first_sequence, &lines, cap)
        .await?
    {
        state.metrics.log_lines_ingested(lines.len() as u64);
        state.events.changed(&id);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Cuts a message longer than [`MAX_MESSAGE_BYTES`] (at a character boundary) and says so: one
/// long line costs its tail, never its batch.
fn cap_message(message: &mut String) {
    if message.len() <= MAX_MESSAGE_BYTES {
        return;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = message.len() - end;
    message.truncate(end);
    message.push_str(&format!(" [… line truncated: {dropped} more bytes]"));
}

pub async fn diff(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.state != JobState::Running || row.generation != grant.generation {
        return Err(refused(&state, &grant, &id).await);
    }
    let sha256 = hex::encode(Sha256::digest(&body));
    state.artifacts.put_diff(&id, body).await?;
    if state
        .engine
        .attach_diff(&id, grant.generation, &sha256)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(refused(&state, &grant, &id).await)
    }
}

pub async fn result(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(stats): ApiJson<DiffStats>,
) -> Result<StatusCode, AppError> {
    grant.check(&id)?;
    if state
        .engine
        .attach_result(&id, grant.generation, &stats)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(refused(&state, &grant, &id).await)
    }
}

/// Where the job's result was published, as its `publish` step reports it: the job's own
/// branch, and a pull request only when the job asked for one.
pub async fn publication(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(publication): ApiJson<Publication>,
) -> Result<StatusCode, AppError> {
    let row = granted_job(&state, &grant, &id).await?;
    if row.state != JobState::Running || row.generation != grant.generation {
        return Err(refused(&state, &grant, &id).await);
    }
    let asked = row.job.publish.unwrap_or(PublishMode::None);
    // A follow-up updates the branch its chain published; any other job publishes its own.
    let branch = match parent_of(&state, &row).await? {
        Some(parent) => parent.job.publication.map(|p| p.branch),
        None => None,
    }
    .or_else(|| row.job.feature_branch_name.clone())
    .unwrap_or_default();
    if branch != publication.branch {
        return Err(invalid(format!(
            "branch: the job publishes to its own branch {branch}, not {}",
            publication.branch
        )));
    }
    if publication.mode != asked || !asked.publishes() {
        return Err(invalid(format!(
            "mode: the job publishes {asked}, not {}",
            publication.mode
        )));
    }
    let commit = &publication.commit;
    if !matches!(commit.len(), 40 | 64) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("commit: a full commit id (40 or 64 hex digits)"));
    }
    // A pull request the forge refused leaves the pushed branch, reported without one.
    match (&publication.pull_request_url, asked.opens_pull_request()) {
        (Some(url), true) if url.starts_with("https://") || url.starts_with("http://") => {}
        (Some(_), true) => return Err(invalid("pull_request_url: an http(s) URL")),
        (Some(_), false) => return Err(invalid("pull_request_url: the job opens no pull request")),
        (None, _) => {}
    }
    if state
        .engine
        .attach_publication(&id, grant.generation, &publication)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(refused(&state, &grant, &id).await)
    }
}

pub async fn complete(
    State(state): State<JobsState>,
    grant: WorkerGrant,
    Path(id): Path<String>,
    ApiJson(completion): ApiJson<JobCompletion>,
) -> Result<StatusCode, AppError> {
    grant.check(&id)?;
    if !matches!(completion.state, JobState::Succeeded | JobState::Failed) {
        return Err(invalid(format!(
            "a worker completes a job as succeeded or failed, not {}",
            completion.state
        )));
    }
    if state
        .engine
        .complete(
            &id,
            grant.generation,
            completion.state,
            completion.error_message.as_deref(),
        )
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(refused(&state, &grant, &id).await)
    }
}
