//! The `github-actions` provider: a job is a run of the `ckrv.yml` workflow (`workflow/ckrv.yml`)
//! in the user's own repository, dispatched with the spec as its input. The run's status and
//! steps are the job's status and phase, its job logs the job's log, and its `ckrv-diff`
//! artifact the change. Made from `plugins/template`; see docs/providers.md.

ckrv_wit::guest_bindings!("ckrv-wit", "ckrv:cloud/provider-plugin");

mod github;

use std::io::Read as _;
use std::time::Duration;

use ckrv_wit::guest::wasi::clocks::monotonic_clock;
use ckrv_wit::types::{
    ApiError, CredentialCreate, CredentialSummary, DeviceCodeResponse, ErrorKind, Group,
    GroupCreate, Job, JobCreate, JobListResponse, JobState, JobStatus, LogEntry, LogLevel,
    LogQuery, LogResponse, SnapshotSummary, SubscriptionTier, TokenResponse, User, Webhook,
    WebhookCreate, WebhookDelivery,
};
use exports::ckrv::cloud::provider::{CallContext, Guest, PluginInfo};
use github::{
    Artifacts, Client, DIFF_ARTIFACT, DIFF_FILE, DispatchDetails, GitHubUser, Repo, Run, RunJobs,
    RunList, WORKFLOW, error,
};

/// How often a follower's wait asks GitHub whether the run has ended (its logs are there only
/// then), well inside the API's rate limit.
const POLL: Duration = Duration::from_secs(3);
/// How long a dispatch looks for its run when GitHub does not return the run's id.
const FIND_RUN_TRIES: u32 = 10;

struct GitHubActions;

impl Guest for GitHubActions {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "github-actions".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
            default_api_url: Some("https://api.github.com".into()),
            // Where GitHub redirects log and artifact downloads.
            origins: vec![
                "https://*.blob.core.windows.net".into(),
                "https://*.actions.githubusercontent.com".into(),
            ],
        }
    }

    fn login_start(_: CallContext) -> Result<DeviceCodeResponse, ApiError> {
        Err(token_only())
    }

    fn login_poll(_: CallContext, _: String) -> Result<TokenResponse, ApiError> {
        Err(token_only())
    }

    fn refresh(_: CallContext, _: String) -> Result<TokenResponse, ApiError> {
        Err(error(
            ErrorKind::InvalidGrant,
            "a GitHub token is not refreshed: sign in again with a new one",
        ))
    }

    /// GitHub tokens are revoked in GitHub's settings; forgetting the session is ckrv's part.
    fn logout(_: CallContext) -> Result<(), ApiError> {
        Ok(())
    }

    fn whoami(ctx: CallContext) -> Result<User, ApiError> {
        let user: GitHubUser = client(&ctx).get("/user")?;
        Ok(User {
            email: user.email.unwrap_or_else(|| user.login.clone()),
            name: user.name.unwrap_or_else(|| user.login.clone()),
            id: user.login,
            subscription_tier: SubscriptionTier::Free,
            // GitHub bills Actions minutes, not jobs: no job quota applies.
            job_quota_remaining: u32::MAX,
            billing_cycle_end: String::new(),
            job_quota_limit: None,
            model_cost_usd: None,
        })
    }

    fn credentials_add(_: CallContext, _: CredentialCreate) -> Result<CredentialSummary, ApiError> {
        Err(no_credentials())
    }

    fn credentials_list(_: CallContext) -> Result<Vec<CredentialSummary>, ApiError> {
        Err(no_credentials())
    }

    fn credentials_remove(_: CallContext, _: String) -> Result<(), ApiError> {
        Err(no_credentials())
    }

    fn snapshots_list(_: CallContext) -> Result<Vec<SnapshotSummary>, ApiError> {
        Err(no_snapshots())
    }

    fn snapshots_remove(_: CallContext, _: String) -> Result<(), ApiError> {
        Err(no_snapshots())
    }

    fn webhooks_add(_: CallContext, _: WebhookCreate) -> Result<Webhook, ApiError> {
        Err(no_webhooks())
    }

    fn webhooks_list(_: CallContext) -> Result<Vec<Webhook>, ApiError> {
        Err(no_webhooks())
    }

    fn webhooks_remove(_: CallContext, _: String) -> Result<(), ApiError> {
        Err(no_webhooks())
    }

    fn webhooks_rotate(_: CallContext, _: String) -> Result<Webhook, ApiError> {
        Err(no_webhooks())
    }

    fn webhooks_deliveries(
        _: CallContext,
        _: Option<String>,
        _: Option<String>,
        _: u32,
    ) -> Result<Vec<WebhookDelivery>, ApiError> {
        Err(no_webhooks())
    }

    fn webhooks_redeliver(_: CallContext, _: String) -> Result<WebhookDelivery, ApiError> {
        Err(no_webhooks())
    }

    /// Dispatches the workflow on the base branch with the spec. The key is in the run's name,
    /// so a retry finds the run the first try made.
    fn dispatch(ctx: CallContext, request: JobCreate, key: String) -> Result<Job, ApiError> {
        if request.publish.is_some_and(|mode| mode.publishes()) {
            return Err(error(
                ErrorKind::Forbidden,
                "workflow runs do not publish for ckrv; open the pull request from the workflow \
                 itself (for example with peter-evans/create-pull-request), or run without --publish",
            ));
        }
        if request.continues.is_some() {
            return Err(error(
                ErrorKind::Forbidden,
                "workflow runs cannot follow up an earlier run's change; run a new spec instead",
            ));
        }
        let repo = Repo::from_url(&request.git_repo_url)?;
        let github = client(&ctx);
        if let Some(run) = find_run(&github, &repo, &key)? {
            return Ok(run.job(&request.git_repo_url, None));
        }
        let body = serde_json::json!({
            "ref": request.git_base_branch.as_deref().unwrap_or("main"),
            "inputs": {
                "spec": request.spec_content,
                "spec_path": request.spec_path.as_deref().unwrap_or("spec.md"),
                "key": key,
            },
            "return_run_details": true,
        });
        let path = repo.path(&format!("/actions/workflows/{WORKFLOW}/dispatches"));
        let details: Option<DispatchDetails> = github.post(&path, &body).map_err(|e| {
            if e.error == ErrorKind::NotFound {
                error(
                    ErrorKind::NotFound,
                    format!(
                        "{} (is .github/workflows/{WORKFLOW} on the base branch? copy it from \
                         the provider's workflow/ directory)",
                        e.description()
                    ),
                )
            } else {
                e
            }
        })?;
        let run = match details {
            Some(details) => github
                .get::<Run>(&repo.path(&format!("/actions/runs/{}", details.workflow_run_id)))?,
            // An older GitHub answers 204 without the run: look for it by its key.
            None => {
                let mut found = None;
                for _ in 0..FIND_RUN_TRIES {
                    found = find_run(&github, &repo, &key)?;
                    if found.is_some() {
                        break;
                    }
                    sleep(Duration::from_secs(1));
                }
                found.ok_or_else(|| {
                    error(
                        ErrorKind::Unavailable,
                        "the workflow was dispatched but its run did not appear; see the \
                         repository's Actions tab",
                    )
                })?
            }
        };
        Ok(run.job(&request.git_repo_url, None))
    }

    fn get_job(ctx: CallContext, id: String) -> Result<Job, ApiError> {
        let (repo, url) = repository(&ctx)?;
        let github = client(&ctx);
        let run: Run = github.get(&repo.path(&format!("/actions/runs/{}", run_id(&id)?)))?;
        let phase = if run.state() == JobState::Running {
            let jobs: RunJobs =
                github.get(&repo.path(&format!("/actions/runs/{}/jobs", run.id)))?;
            github::phase_of(&jobs)
        } else {
            None
        };
        Ok(run.job(&url, phase))
    }

    fn list_jobs(
        ctx: CallContext,
        status: Option<JobStatus>,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<JobListResponse, ApiError> {
        let (repo, url) = repository(&ctx)?;
        let page: u64 = match cursor {
            Some(c) => c
                .parse()
                .map_err(|_| error(ErrorKind::InvalidRequest, "not a cursor of this provider"))?,
            None => 1,
        };
        let per_page = limit.clamp(1, 100);
        let mut path = repo.path(&format!(
            "/actions/workflows/{WORKFLOW}/runs?per_page={per_page}&page={page}"
        ));
        if let Some(status) = status {
            path.push_str("&status=");
            path.push_str(match status {
                JobStatus::Pending => "queued",
                JobStatus::Running => "in_progress",
                JobStatus::Succeeded => "success",
                JobStatus::Failed => "failure",
                JobStatus::Timeout => "timed_out",
            });
        }
        let list: RunList = client(&ctx).get(&path)?;
        let more = page * u64::from(per_page) < list.total_count;
        Ok(JobListResponse {
            jobs: list
                .workflow_runs
                .iter()
                .map(|run| run.job(&url, None))
                .collect(),
            next_cursor: more.then(|| (page + 1).to_string()),
        })
    }

    fn dispatch_group(_: CallContext, _: GroupCreate) -> Result<Group, ApiError> {
        Err(no_groups())
    }

    fn get_group(_: CallContext, _: String) -> Result<Group, ApiError> {
        Err(no_groups())
    }

    fn cancel_group(_: CallContext, _: String) -> Result<Group, ApiError> {
        Err(no_groups())
    }

    fn cancel_job(ctx: CallContext, id: String) -> Result<Job, ApiError> {
        let (repo, _) = repository(&ctx)?;
        let path = repo.path(&format!("/actions/runs/{}/cancel", run_id(&id)?));
        client(&ctx).post::<serde_json::Value>(&path, &serde_json::json!({}))?;
        let mut job = Self::get_job(ctx, id)?;
        // GitHub cancels asynchronously: the run reads `cancelled` once its steps stop.
        if !job.lifecycle().is_terminal() {
            job.state = Some(JobState::Cancelled);
            job.status = JobStatus::Failed;
        }
        Ok(job)
    }

    /// GitHub serves a job's log once the job has ended: until the run ends, the page is empty
    /// (after waiting up to `wait-ms`); then the whole log is read and numbered by line.
    fn read_logs(ctx: CallContext, id: String, query: LogQuery) -> Result<LogResponse, ApiError> {
        let (repo, _) = repository(&ctx)?;
        let github = client(&ctx);
        let run_path = repo.path(&format!("/actions/runs/{}", run_id(&id)?));
        let started = monotonic_clock::now();
        let wait = u64::from(query.wait_ms) * 1_000_000;
        let run = loop {
            let run: Run = github.get(&run_path)?;
            let waited = monotonic_clock::now().saturating_sub(started);
            if run.state().is_terminal() || waited >= wait {
                break run;
            }
            sleep(POLL.min(Duration::from_nanos(wait - waited)));
        };
        let state = run.state();
        if !state.is_terminal() {
            return Ok(LogResponse {
                logs: Vec::new(),
                next_after: Some(query.after),
                job_state: Some(state),
            });
        }
        let jobs: RunJobs = github.get(&format!("{run_path}/jobs"))?;
        let mut whole = Vec::new();
        for job in &jobs.jobs {
            let text = github.download(&repo.path(&format!("/actions/jobs/{}/logs", job.id)))?;
            whole.extend(String::from_utf8_lossy(&text).lines().map(log_entry));
        }
        Ok(ckrv_wit::log_page::page(whole, state, &query))
    }

    fn fetch_diff(ctx: CallContext, id: String) -> Result<Vec<u8>, ApiError> {
        let (repo, _) = repository(&ctx)?;
        let github = client(&ctx);
        let artifacts: Artifacts =
            github.get(&repo.path(&format!("/actions/runs/{}/artifacts", run_id(&id)?)))?;
        let artifact = artifacts
            .artifacts
            .iter()
            .find(|a| a.name == DIFF_ARTIFACT)
            .ok_or_else(|| {
                error(
                    ErrorKind::NotFound,
                    format!("run {id} has no {DIFF_ARTIFACT} artifact"),
                )
            })?;
        if artifact.expired {
            return Err(error(
                ErrorKind::Gone,
                format!("run {id}'s {DIFF_ARTIFACT} artifact has expired"),
            ));
        }
        let zip =
            github.download(&repo.path(&format!("/actions/artifacts/{}/zip", artifact.id)))?;
        unzip(&zip, DIFF_FILE)
    }
}

export!(GitHubActions);

fn client(ctx: &CallContext) -> Client<'_> {
    Client {
        api_url: &ctx.api_url,
        token: ctx.access_token.as_deref(),
    }
}

/// The repository of the worktree the command runs in: runs belong to one.
fn repository(ctx: &CallContext) -> Result<(Repo, String), ApiError> {
    let url = ctx.repository.clone().ok_or_else(|| {
        error(
            ErrorKind::InvalidRequest,
            "run this inside a clone of the repository whose workflow runs you want (its \
             `origin` names it)",
        )
    })?;
    Ok((Repo::from_url(&url)?, url))
}

/// Run ids are numbers.
fn run_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        error(
            ErrorKind::NotFound,
            format!("`{id}` is not a workflow run id (a number)"),
        )
    })
}

/// The run dispatched under `key`, among the workflow's recent runs.
fn find_run(github: &Client<'_>, repo: &Repo, key: &str) -> Result<Option<Run>, ApiError> {
    let list: RunList = github.get(&repo.path(&format!(
        "/actions/workflows/{WORKFLOW}/runs?event=workflow_dispatch&per_page=30"
    )))?;
    Ok(list.workflow_runs.into_iter().find(|run| run.has_key(key)))
}

/// A line of a GitHub job log: `2026-11-24T09:00:00.1234567Z message`.
fn log_entry(line: &str) -> LogEntry {
    let (timestamp, message) = match line.split_once(' ') {
        Some((t, m)) if t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[4] == b'-' => {
            // Whole seconds, as RFC 3339 in UTC.
            (format!("{}Z", &t[..19]), m)
        }
        _ => (String::new(), line),
    };
    let message = message.trim_start_matches('\u{feff}');
    let level = if message.starts_with("##[error]") {
        LogLevel::Error
    } else if message.starts_with("##[warning]") {
        LogLevel::Warn
    } else {
        LogLevel::Info
    };
    LogEntry {
        timestamp,
        level,
        source: "github-actions".into(),
        message: message.to_string(),
        sequence: None,
    }
}

/// `name` from the artifact's zip.
fn unzip(zip: &[u8], name: &str) -> Result<Vec<u8>, ApiError> {
    let damaged = |e: zip::result::ZipError| {
        error(
            ErrorKind::Internal,
            format!("the {DIFF_ARTIFACT} artifact is not a readable zip: {e}"),
        )
    };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(damaged)?;
    let mut file = archive.by_name(name).map_err(damaged)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| {
        error(
            ErrorKind::Internal,
            format!("reading {name} from the artifact: {e}"),
        )
    })?;
    Ok(bytes)
}

fn no_groups() -> ApiError {
    error(
        ErrorKind::Forbidden,
        "workflow runs have no attempt groups; dispatch each attempt as its own job, or use --provider chakravarti",
    )
}

fn no_snapshots() -> ApiError {
    error(
        ErrorKind::Forbidden,
        "workflow runs keep no snapshots of a setup; cache dependencies with actions/cache in the workflow instead",
    )
}

fn no_webhooks() -> ApiError {
    error(
        ErrorKind::Forbidden,
        "workflow runs send no webhooks; add one to the repository in GitHub's settings \
         (its workflow_run events) instead",
    )
}

fn no_credentials() -> ApiError {
    error(
        ErrorKind::Forbidden,
        "the workflow clones with GitHub's own token (actions/checkout); keep agent keys as \
         repository secrets in GitHub instead",
    )
}

fn sleep(duration: Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    monotonic_clock::subscribe_duration(nanos).block();
}

/// GitHub's device flow needs an OAuth app of the user's own; a token is simpler.
fn token_only() -> ApiError {
    error(
        ErrorKind::UnsupportedGrantType,
        "GitHub Actions signs in with a token: create a fine-grained personal access token \
         with Actions (read and write) and Contents (read) on the repository, then run \
         `ckrv --provider github-actions cloud login --with-token < token-file`",
    )
}
