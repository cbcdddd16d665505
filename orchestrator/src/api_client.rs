//! The worker endpoints of the API (docs/protocol.md, "Worker").

use crate::outbox::{Delivery, Report, ReportSink};
use ckrv_wit::protocol::{SNAPSHOT_SHA256_HEADER, paths};
use ckrv_wit::types::{HeartbeatAnswer, JobCompletion, WorkerClaim, WorkerJob};
use reqwest::{Client, Method, Url};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// Why a call to the API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("invalid API URL `{0}`")]
    BadUrl(String),
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} returned {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("unexpected response from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{doing}: {source}")]
    File {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl ApiClientError {
    /// Whether trying again later may succeed: the API was unreachable, restarting or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            Self::BadUrl(_) | Self::Decode { .. } | Self::File { .. } => false,
        }
    }
}

/// How long a request is retried while the API is unreachable (it may be restarting): every
/// write of the worker's is safe to repeat.
const RETRY_FOR: Duration = Duration::from_secs(120);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// One job's view of the API, authenticated with its worker token.
#[derive(Clone)]
pub struct ApiClient {
    http: Client,
    base: Url,
    job_id: String,
    token: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is deliberately left out.
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("job_id", &self.job_id)
            .finish()
    }
}

impl ApiClient {
    pub fn new(api_url: &str, job_id: &str, token: &str) -> Result<Self, ApiClientError> {
        let base = Url::parse(api_url.trim_end_matches('/'))
            .map_err(|_| ApiClientError::BadUrl(api_url.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ApiClientError::BadUrl(api_url.to_string()));
        }
        let http = Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|source| ApiClientError::Transport {
                url: api_url.to_string(),
                source,
            })?;
        Ok(Self {
            http,
            base,
            job_id: job_id.to_string(),
            token: token.to_string(),
        })
    }

    /// The API's base URL, as steps see it.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The URL of one of this job's worker routes (`paths::WORKER_…`).
    fn url(&self, template: &str) -> String {
        format!("{}{}", self.base_url(), paths::fill(template, &self.job_id))
    }

    /// Reads the job and its spec (the job is already running: the API claimed it for this
    /// worker when it issued the token).
    pub async fn fetch_job(&self) -> Result<WorkerJob, ApiClientError> {
        let url = self.url(paths::WORKER_JOB);
        let response = self.send(Method::GET, &url, None::<&()>).await?;
        response
            .json()
            .await
            .map_err(|source| ApiClientError::Decode { url, source })
    }

    /// The bytes of the pipeline's component with SHA-256 `digest`, checked against it.
    pub async fn fetch_component(&self, digest: &str) -> Result<Vec<u8>, ApiClientError> {
        let url = paths::fill(&self.url(paths::WORKER_COMPONENT), digest);
        self.fetch_checked(url, digest, "the component's").await
    }

    /// A follow-up's start: the change of the job it follows up, checked against `sha256`.
    pub async fn fetch_start_diff(&self, sha256: &str) -> Result<Vec<u8>, ApiClientError> {
        let url = self.url(paths::WORKER_START_DIFF);
        self.fetch_checked(url, sha256, "the earlier job's change's")
            .await
    }

    /// The bytes at `url`, refused unless their SHA-256 is `sha256`.
    async fn fetch_checked(
        &self,
        url: String,
        sha256: &str,
        whose: &str,
    ) -> Result<Vec<u8>, ApiClientError> {
        use sha2::Digest as _;
        let response = self.send(Method::GET, &url, None::<&()>).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ApiClientError::Decode {
                url: url.clone(),
                source,
            })?;
        if !hex::encode(sha2::Sha256::digest(&bytes)).eq_ignore_ascii_case(sha256) {
            return Err(ApiClientError::Status {
                url,
                status: 200,
                body: format!("{whose} bytes do not match its digest"),
            });
        }
        Ok(bytes.to_vec())
    }

    /// As an external worker (this client made with its credential and no job): claims the
    /// next job the API admits, or `None` when nothing waits.
    pub async fn claim(&self) -> Result<Option<WorkerClaim>, ApiClientError> {
        let url = format!("{}{}", self.base_url(), paths::WORKER_CLAIM);
        let response = self.send(Method::POST, &url, None::<&()>).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        response
            .json()
            .await
            .map(Some)
            .map_err(|source| ApiClientError::Decode { url, source })
    }

    /// Renews the lease on the job; the answer holds the connections the API's egress proxy
    /// refused the job's agent since the last one (an API that answers 204 refused none).
    pub async fn heartbeat(&self) -> Result<HeartbeatAnswer, ApiClientError> {
        let url = self.url(paths::WORKER_HEARTBEAT);
        let response = self.send(Method::POST, &url, None::<&()>).await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(HeartbeatAnswer {
                egress_refusals: Vec::new(),
            });
        }
        response
            .json()
            .await
            .map_err(|source| ApiClientError::Decode { url, source })
    }

    /// The SHA-256 and size of the account's snapshot under `key` (`HEAD`), without its bytes:
    /// `None` when there is none.
    pub async fn snapshot_digest(
        &self,
        key: &str,
    ) -> Result<Option<(String, u64)>, ApiClientError> {
        let url = paths::fill(&self.url(paths::WORKER_SNAPSHOT), key);
        let response = match self.send_once(Method::HEAD, &url, None::<&()>).await {
            Err(ApiClientError::Status { status: 404, .. }) => return Ok(None),
            answer => answer?,
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let bytes = header("content-length").and_then(|v| v.parse().ok());
        Ok(header(SNAPSHOT_SHA256_HEADER).map(|digest| (digest, bytes.unwrap_or(0))))
    }

    /// The job's account's snapshot under `key`, written to `to`: its SHA-256 as the API
    /// names it, or `None` when there is none. Tried once: setup runs without it.
    pub async fn fetch_snapshot(
        &self,
        key: &str,
        to: &Path,
    ) -> Result<Option<String>, ApiClientError> {
        use tokio::io::AsyncWriteExt as _;
        let url = paths::fill(&self.url(paths::WORKER_SNAPSHOT), key);
        let transport = |source| ApiClientError::Transport {
            url: url.clone(),
            source,
        };
        let mut response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(transport)?;
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => return Ok(None),
            status if !status.is_success() => {
                return Err(ApiClientError::Status {
                    url,
                    status: status.as_u16(),
                    body: response.text().await.unwrap_or_default(),
                });
            }
            _ => {}
        }
        let digest = response
            .headers()
            .get(SNAPSHOT_SHA256_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let file_error = |doing| move |source| ApiClientError::File { doing, source };
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(file_error("saving the snapshot"))?;
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            file.write_all(&chunk)
                .await
                .map_err(file_error("saving the snapshot"))?;
        }
        file.flush()
            .await
            .map_err(file_error("saving the snapshot"))?;
        Ok(Some(digest))
    }

    /// Saves `from` as the job's account's snapshot under `key`; `sha256` is its digest.
    pub async fn save_snapshot(
        &self,
        key: &str,
        from: &Path,
        sha256: &str,
    ) -> Result<(), ApiClientError> {
        let url = paths::fill(&self.url(paths::WORKER_SNAPSHOT), key);
        let file = tokio::fs::File::open(from)
            .await
            .map_err(|source| ApiClientError::File {
                doing: "reading the snapshot",
                source,
            })?;
        let response = self
            .http
            .put(&url)
            .bearer_auth(&self.token)
            .header(SNAPSHOT_SHA256_HEADER, sha256)
            .body(reqwest::Body::from(file))
            .send()
            .await
            .map_err(|source| ApiClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(ApiClientError::Status {
            url,
            status: response.status().as_u16(),
            body: response.text().await.unwrap_or_default(),
        })
    }

    pub async fn complete(&self, completion: &JobCompletion) -> Result<(), ApiClientError> {
        self.send(
            Method::POST,
            &self.url(paths::WORKER_COMPLETE),
            Some(completion),
        )
        .await
        .map(drop)
    }

    /// One attempt at a report: the outbox keeps it on disk and retries while the API is away.
    pub async fn report_once(&self, report: &Report) -> Result<(), ApiClientError> {
        let post = Method::POST;
        match report {
            Report::Logs(batch) => {
                self.send_once(post, &self.url(paths::WORKER_LOGS), Some(batch))
                    .await
            }
            Report::Phase(update) => {
                self.send_once(post, &self.url(paths::WORKER_PHASE), Some(update))
                    .await
            }
            Report::Complete(completion) => {
                self.send_once(post, &self.url(paths::WORKER_COMPLETE), Some(completion))
                    .await
            }
        }
        .map(drop)
    }

    /// Sends the request, again and again with growing pauses while the failure is transient,
    /// for at most [`RETRY_FOR`].
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, ApiClientError> {
        let give_up = Instant::now() + RETRY_FOR;
        let mut wait = Duration::from_millis(250);
        loop {
            match self.send_once(method.clone(), url, body).await {
                Err(e) if e.is_transient() && Instant::now() + wait < give_up => {
                    tracing::warn!(error = %e, retry_in = ?wait, "the API did not answer; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                }
                answer => return answer,
            }
        }
    }

    async fn send_once<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, ApiClientError> {
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| ApiClientError::Transport {
                url: url.to_string(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(ApiClientError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            body,
        })
    }
}

impl ReportSink for ApiClient {
    async fn deliver(&mut self, report: &Report) -> Delivery {
        match self.report_once(report).await {
            Ok(()) => Delivery::Taken,
            Err(e) if e.is_transient() => Delivery::Unreachable(e.to_string()),
            Err(e) => Delivery::Refused(e.to_string()),
        }
    }
}
