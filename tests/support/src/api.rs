//! A real `ckrv-api` in this process on loopback, with a recording dispatcher so the test plays
//! the worker, and a small JSON client: what the API's own tests and the CLI's share.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::TestDatabase;
use ckrv_api::dispatch::{DispatchError, Dispatcher, WorkerStart};
use ckrv_api::identity::accounts::NewUser;
use ckrv_api::identity::admin;
use ckrv_api::store::{Database, Store};
use ckrv_api::{Config, DispatcherConfig, Server};
use ckrv_wit::types::SubscriptionTier;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use zeroize::Zeroizing;

/// Records what a real dispatcher would receive, so a test can play the worker.
#[derive(Default)]
pub struct RecordingDispatcher {
    pub started: Mutex<Vec<(String, String)>>,
    pub stopped: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Dispatcher for RecordingDispatcher {
    async fn start(&self, job: &WorkerStart<'_>) -> Result<(), DispatchError> {
        self.started
            .lock()
            .unwrap()
            .push((job.job_id.to_string(), job.token.to_string()));
        Ok(())
    }

    async fn stop(&self, job_id: &str) {
        self.stopped.lock().unwrap().push(job_id.to_string());
    }
}

impl RecordingDispatcher {
    /// Whether the job's worker was told to stop.
    pub fn was_stopped(&self, job_id: &str) -> bool {
        self.stopped.lock().unwrap().iter().any(|id| id == job_id)
    }

    /// How many workers were started for the job.
    pub fn starts_of(&self, job_id: &str) -> usize {
        self.started
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id == job_id)
            .count()
    }

    /// The token of the job's latest worker.
    pub fn token_for(&self, job_id: &str) -> String {
        self.started
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(id, _)| id == job_id)
            .map(|(_, token)| token.clone())
            .expect("the job was dispatched")
    }
}

pub struct TestApi {
    pub url: String,
    pub dispatcher: Arc<RecordingDispatcher>,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The data directory, when the API made its own.
    own_dir: Option<tempfile::TempDir>,
    database: Arc<TestDatabase>,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestApi {
    /// An API in a data directory of its own, and a signed-in user's access token.
    pub async fn signed_in(email: &str) -> (Self, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut api = Self::start(dir.path()).await;
        api.own_dir = Some(dir);
        let tokens = api.login(email).await;
        (api, access(&tokens).to_string())
    }

    /// The data directory of an API made by [`TestApi::signed_in`].
    pub fn data_dir(&self) -> &Path {
        self.own_dir
            .as_ref()
            .expect("the API has its own data dir")
            .path()
    }

    /// The database of this test: what a restarted API opens again.
    pub fn database(&self) -> Arc<TestDatabase> {
        Arc::clone(&self.database)
    }

    /// An API on `data_dir` and the database an earlier one left.
    pub async fn restart(data_dir: &Path, database: Arc<TestDatabase>) -> Self {
        let dispatcher = Arc::new(RecordingDispatcher::default());
        Self::start_on(data_dir, database, dispatcher, |_| ()).await
    }

    pub async fn start(data_dir: &Path) -> Self {
        let dispatcher = Arc::new(RecordingDispatcher::default());
        Self::start_with(
            data_dir,
            DispatcherConfig::Custom(dispatcher.clone()),
            dispatcher,
        )
        .await
    }

    /// An API that takes loopback repository URLs (as `--allow-local-repos`), for tests whose
    /// jobs name one on loopback that nothing clones.
    pub async fn start_local(data_dir: &Path) -> Self {
        let dispatcher = Arc::new(RecordingDispatcher::default());
        Self::start_configured(data_dir, dispatcher, |c| c.allow_local_repos = true).await
    }

    pub async fn start_with(
        data_dir: &Path,
        config: DispatcherConfig,
        dispatcher: Arc<RecordingDispatcher>,
    ) -> Self {
        Self::start_configured(data_dir, dispatcher, |c| c.dispatcher = config).await
    }

    /// An API on `data_dir` whose configuration `configure` adjusts.
    pub async fn start_configured(
        data_dir: &Path,
        dispatcher: Arc<RecordingDispatcher>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let database = TestDatabase::new(data_dir).await;
        Self::start_on(data_dir, database, dispatcher, configure).await
    }

    /// An API on `data_dir` and the database an earlier one left, configured by `configure`.
    pub async fn start_configured_on(
        data_dir: &Path,
        database: Arc<TestDatabase>,
        dispatcher: Arc<RecordingDispatcher>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_on(data_dir, database, dispatcher, configure).await
    }

    async fn start_on(
        data_dir: &Path,
        database: Arc<TestDatabase>,
        dispatcher: Arc<RecordingDispatcher>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = test_config(data_dir, &database);
        config.dispatcher = DispatcherConfig::Custom(dispatcher.clone());
        configure(&mut config);
        let server = Server::bind(config).await.unwrap();
        let url = server.url();
        let task = tokio::spawn(server.run());
        Self {
            url,
            dispatcher,
            http: reqwest::Client::new(),
            task,
            own_dir: None,
            database,
        }
    }

    /// Sends a request; returns the status and the body as JSON (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {text}"))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// What `/metrics` shows now, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("the API answers /metrics")
            .text()
            .await
            .expect("a text body")
    }

    /// The store under the API, as the `ckrv-api users` commands open it.
    pub async fn store(&self) -> Store {
        Store::open(&Database::from_url(self.database.url()).unwrap())
            .await
            .unwrap()
    }

    /// Runs `statement` on the API's database: how a test makes time pass for stored rows.
    pub async fn sql(&self, statement: &str) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(self.database.url()).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    }

    /// Adds an account with a password, as `ckrv-api users add --password-stdin` does.
    pub async fn add_user(&self, email: &str, password: &str) {
        let user = NewUser {
            email: email.to_string(),
            name: None,
            tier: SubscriptionTier::Free,
            admin: false,
            password: Some(Zeroizing::new(password.to_string())),
        };
        admin::add_user(&self.store().await, user, None)
            .await
            .unwrap();
    }

    /// A browser of its own: cookies, redirects, no session yet.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    /// Starts a device authorization as the CLI does.
    pub async fn start_device(&self) -> Value {
        let (status, device) = self
            .call(
                Method::POST,
                "/v1/auth/device",
                None,
                Some(serde_json::json!({"client_id": CLIENT_ID})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{device}");
        device
    }

    /// The whole device flow for a new account `email`: added by an administrator, signed in
    /// on the web, request approved; returns the token set.
    pub async fn login(&self, email: &str) -> Value {
        self.add_user(email, PASSWORD).await;
        let device = self.start_device().await;
        let browser = self.browser();
        browser.sign_in(email, PASSWORD).await;
        let (status, page) = browser
            .decide(device["user_code"].as_str().unwrap(), "approve")
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let (status, tokens) = self.poll(device["device_code"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        tokens
    }

    pub async fn poll(&self, device_code: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(serde_json::json!({
                "client_id": CLIENT_ID,
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": device_code,
            })),
        )
        .await
    }

    pub async fn create_job(&self, token: &str) -> (StatusCode, Value) {
        self.post("/v1/jobs", token, job_request()).await
    }
}

pub use crate::{Browser, PASSWORD};

/// The client id the tests' device flows use.
pub const CLIENT_ID: &str = "ckrv-cli";

/// A contract `JobCreate` with our `spec_path` extension; the base branch is the default.
pub fn job_request() -> Value {
    serde_json::json!({
        "spec_content": "---\nagent: script\nrun: echo hi\n---\n# Hi\n",
        "spec_path": "specs/hi/spec.md",
        "git_repo_url": "https://git.example.com/sample.git",
        "git_credential_name": null,
    })
}

impl TestApi {
    /// Plays a job's worker from start to end: picks it up, logs `lines`, uploads `diff` with
    /// its stats when given, and completes it in `state` (`None` leaves it running).
    pub async fn work_job(
        &self,
        id: &str,
        lines: &[&str],
        diff: Option<(&str, Value)>,
        end: Option<Value>,
    ) {
        let worker = self.dispatcher.token_for(id);
        let base = format!("/v1/worker/jobs/{id}");
        let (status, work) = self.get(&base, &worker).await;
        assert_eq!(status, StatusCode::OK, "{work}");
        if !lines.is_empty() {
            let lines: Vec<Value> = lines.iter().map(|m| line(m)).collect();
            let first = work["log_sequence"].as_u64().unwrap() + 1;
            let (status, body) = self
                .post(
                    &format!("{base}/logs"),
                    &worker,
                    serde_json::json!({"first_sequence": first, "lines": lines}),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
        if let Some((patch, stats)) = diff {
            let response = self
                .http
                .put(format!("{}{base}/artifacts/diff", self.url))
                .bearer_auth(&worker)
                .body(patch.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT);
            let (status, body) = self.post(&format!("{base}/result"), &worker, stats).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
        if let Some(completion) = end {
            let (status, body) = self
                .post(&format!("{base}/complete"), &worker, completion)
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }
}

/// The `key` string of each item of a JSON array: ids of a job list, messages of a log.
pub fn each<'a>(items: &'a Value, key: &str) -> Vec<&'a str> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap())
        .collect()
}

/// The job ids of an attempt group's answer, by attempt number.
pub fn attempt_ids(group: &Value) -> Vec<String> {
    let mut attempts: Vec<(u64, String)> = group["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["attempt"].as_u64().unwrap(),
                j["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    attempts.sort();
    attempts.into_iter().map(|(_, id)| id).collect()
}

pub fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

/// A worker's log line as the orchestrator sends it.
pub fn line(message: &str) -> Value {
    serde_json::json!({
        "timestamp": "2026-11-22T12:00:00Z",
        "level": "info",
        "source": "script",
        "message": message,
    })
}

/// The settings of a test API on `data_dir` and `database`; workers are the test's business.
pub fn test_config(data_dir: &Path, database: &TestDatabase) -> Config {
    let mut config = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        data_dir.to_path_buf(),
        DispatcherConfig::External,
    );
    config.database = Database::from_url(database.url()).unwrap();
    // Tests hold many jobs running at once; the admission tests set their own limits.
    config.engine.admission.max_running = 1000;
    config.engine.admission.max_running_per_account = 1000;
    config
}
