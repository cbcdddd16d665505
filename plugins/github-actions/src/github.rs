//! The GitHub REST endpoints this provider uses, and how their answers become the contract's
//! types. Paths and fields as GitHub documents them (docs.github.com/en/rest/actions).

use ckrv_wit::guest::http;
use ckrv_wit::types::{ApiError, ErrorKind, Job, JobPhase, JobState, JobStatus, ResultStatus};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The workflow file the provider dispatches, in `.github/workflows/` of the repository.
pub const WORKFLOW: &str = "ckrv.yml";
/// The artifact the workflow uploads the change in, and the file inside it.
pub const DIFF_ARTIFACT: &str = "ckrv-diff";
pub const DIFF_FILE: &str = "diff.patch";
/// The REST API version the requests are written against.
const API_VERSION: &str = "2022-11-28";
/// Redirects followed for one download.
const MAX_REDIRECTS: usize = 3;

/// `OWNER/REPO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub owner: String,
    pub name: String,
}

impl Repo {
    /// From a clone URL: `https://github.com/OWNER/REPO(.git)`, `git@github.com:OWNER/REPO.git`
    /// or `ssh://git@host/OWNER/REPO.git` (any host: GitHub Enterprise too).
    pub fn from_url(url: &str) -> Result<Self, ApiError> {
        let path = match url.split_once("://") {
            Some((_, rest)) => rest.split_once('/').map(|(_, p)| p),
            None => url.split_once(':').map(|(_, p)| p),
        };
        let mut parts = path
            .unwrap_or_default()
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .rsplit('/');
        let (name, owner) = (parts.next(), parts.next());
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match (owner, name) {
            (Some(owner), Some(name)) if valid(owner) && valid(name) => Ok(Self {
                owner: owner.to_string(),
                name: name.to_string(),
            }),
            _ => Err(error(
                ErrorKind::InvalidRequest,
                format!("`{url}` does not name a GitHub repository (OWNER/REPO)"),
            )),
        }
    }

    pub fn path(&self, rest: &str) -> String {
        format!("/repos/{}/{}{rest}", self.owner, self.name)
    }
}

#[derive(Debug, Deserialize)]
pub struct Run {
    pub id: u64,
    pub status: Option<String>,
    pub conclusion: Option<String>,
    pub display_title: Option<String>,
    pub head_branch: Option<String>,
    pub html_url: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub run_started_at: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RunList {
    pub total_count: u64,
    pub workflow_runs: Vec<Run>,
}

#[derive(Debug, Deserialize)]
pub struct RunJobs {
    pub jobs: Vec<RunJob>,
}

#[derive(Debug, Deserialize)]
pub struct RunJob {
    pub id: u64,
    #[serde(default)]
    pub steps: Vec<RunStep>,
}

#[derive(Debug, Deserialize)]
pub struct RunStep {
    pub name: String,
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Artifacts {
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Deserialize)]
pub struct Artifact {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub expired: bool,
}

#[derive(Debug, Deserialize)]
pub struct DispatchDetails {
    pub workflow_run_id: u64,
}

#[derive(Debug, Deserialize)]
pub struct GitHubUser {
    pub login: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

impl Run {
    pub fn state(&self) -> JobState {
        match (self.status.as_deref(), self.conclusion.as_deref()) {
            (Some("completed"), Some("success")) => JobState::Succeeded,
            (Some("completed"), Some("cancelled")) => JobState::Cancelled,
            (Some("completed"), Some("timed_out")) => JobState::Timeout,
            (Some("completed"), _) => JobState::Failed,
            (Some("in_progress"), _) => JobState::Running,
            _ => JobState::Pending,
        }
    }

    /// The contract's job for this run; `repo_url` is the repository's clone URL.
    pub fn job(&self, repo_url: &str, phase: Option<JobPhase>) -> Job {
        let state = self.state();
        let status = match state {
            JobState::Pending => JobStatus::Pending,
            JobState::Running => JobStatus::Running,
            JobState::Succeeded => JobStatus::Succeeded,
            JobState::Timeout => JobStatus::Timeout,
            JobState::Failed | JobState::Cancelled => JobStatus::Failed,
        };
        let finished = state.is_terminal();
        let result_status = finished.then_some(match state {
            JobState::Succeeded => ResultStatus::Succeeded,
            JobState::Timeout => ResultStatus::Timeout,
            _ => ResultStatus::Failed,
        });
        let url = self.html_url.clone().unwrap_or_default();
        Job {
            id: self.id.to_string(),
            status,
            git_repo_url: repo_url.to_string(),
            git_base_branch: self.head_branch.clone().unwrap_or_default(),
            feature_branch_name: None,
            created_at: self.created_at.clone(),
            started_at: self.run_started_at.clone(),
            completed_at: finished.then(|| self.updated_at.clone()).flatten(),
            result_status,
            result_summary: (state == JobState::Succeeded)
                .then(|| format!("the change is the run's {DIFF_ARTIFACT} artifact")),
            error_message: match state {
                JobState::Failed => Some(format!("the workflow run failed: see {url}")),
                JobState::Timeout => Some(format!("the workflow run timed out: see {url}")),
                _ => None,
            },
            state: Some(state),
            phase: phase.or(finished.then_some(JobPhase::Finished)),
            agent: None,
            spec_path: self.spec_path(),
            updated_at: self.updated_at.clone(),
            diff_stats: None,
            diff_sha256: None,
            usage: None,
            egress_refusals: None,
            setup: None,
            publish: None,
            publication: None,
            parent_id: None,
            follow_ups: None,
            verified: None,
            verification: None,
            group_id: None,
            attempt: None,
        }
    }

    /// The workflow names its runs `ckrv SPEC_PATH [KEY]`.
    pub fn spec_path(&self) -> Option<String> {
        let title = self.display_title.as_deref()?.strip_prefix("ckrv ")?;
        let path = title.rsplit_once(" [").map_or(title, |(path, _)| path);
        Some(path.to_string())
    }

    /// Whether this run was dispatched with idempotency key `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.display_title
            .as_deref()
            .is_some_and(|t| t.ends_with(&format!(" [{key}]")))
    }
}

/// What the running step's name says the job is doing.
pub fn phase_of(jobs: &RunJobs) -> Option<JobPhase> {
    let step = jobs
        .jobs
        .iter()
        .flat_map(|j| &j.steps)
        .find(|s| s.status.as_deref() == Some("in_progress"))?;
    let name = step.name.to_ascii_lowercase();
    Some(if name.contains("clone") || name.contains("checkout") {
        JobPhase::Cloning
    } else if name.contains("agent") {
        JobPhase::Agent
    } else if name.contains("upload") {
        JobPhase::Uploading
    } else {
        JobPhase::Queued
    })
}

/// One GitHub REST call.
pub struct Client<'a> {
    pub api_url: &'a str,
    pub token: Option<&'a str>,
}

impl Client<'_> {
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        json(self.send("GET", path, None)?.body)
    }

    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Option<T>, ApiError> {
        let response = self.send("POST", path, Some(body))?;
        if response.body.is_empty() {
            return Ok(None);
        }
        json(response.body).map(Some)
    }

    /// Downloads what `path` redirects to (logs, artifacts): the redirect's target is signed,
    /// so it gets no token.
    pub fn download(&self, path: &str) -> Result<Vec<u8>, ApiError> {
        let mut response = self.send("GET", path, None)?;
        for _ in 0..MAX_REDIRECTS {
            let Some(location) = response.location.clone().filter(|_| is_redirect(&response))
            else {
                return Ok(response.body);
            };
            response = fetch(&location, &[("user-agent", USER_AGENT)], None)?;
            if !(200..400).contains(&response.status) {
                return Err(github_error(&response));
            }
        }
        Err(error(
            ErrorKind::Internal,
            "GitHub redirected too many times",
        ))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<http::Response, ApiError> {
        let url = format!("{}{path}", self.api_url.trim_end_matches('/'));
        let bearer = self.token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("accept", "application/vnd.github+json"),
            ("x-github-api-version", API_VERSION),
            ("user-agent", USER_AGENT),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer));
        }
        let bytes = body.map(|b| b.to_string().into_bytes());
        if bytes.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = match &bytes {
            Some(b) => Some((method, b.as_slice())),
            None if method != "GET" => Some((method, &[][..])),
            None => None,
        };
        let response = fetch(&url, &headers, body)?;
        if (200..300).contains(&response.status) || is_redirect(&response) {
            Ok(response)
        } else {
            Err(github_error(&response))
        }
    }
}

const USER_AGENT: &str = "ckrv-provider-github-actions";

fn is_redirect(response: &http::Response) -> bool {
    matches!(response.status, 301 | 302 | 303 | 307 | 308)
}

fn fetch(
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<http::Response, ApiError> {
    let (method, bytes) = match body {
        Some((method, bytes)) => (method, Some(bytes)),
        None => ("GET", None),
    };
    http::send(method, url, headers, bytes).map_err(|e| match e {
        http::Error::BadUrl(m) => error(ErrorKind::InvalidRequest, m),
        http::Error::Transport(m) => {
            error(ErrorKind::Unavailable, format!("cannot reach {url}: {m}"))
        }
    })
}

/// GitHub's `{"message": …}` as the contract's error kinds.
fn github_error(response: &http::Response) -> ApiError {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    let message = serde_json::from_slice::<Message>(&response.body)
        .map(|m| m.message)
        .unwrap_or_else(|_| {
            String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect()
        });
    let kind = match response.status {
        401 => ErrorKind::NotAuthenticated,
        403 | 429 if message.to_ascii_lowercase().contains("rate limit") => {
            ErrorKind::TooManyRequests
        }
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        410 => ErrorKind::Gone,
        422 => ErrorKind::InvalidRequest,
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    error(
        kind,
        format!("GitHub: {message} (HTTP {})", response.status),
    )
}

fn json<T: DeserializeOwned>(body: Vec<u8>) -> Result<T, ApiError> {
    serde_json::from_slice(&body).map_err(|e| {
        error(
            ErrorKind::Internal,
            format!("unexpected answer from GitHub: {e}"),
        )
    })
}

pub fn error(kind: ErrorKind, description: impl Into<String>) -> ApiError {
    ApiError::new(kind, description)
}
