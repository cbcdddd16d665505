//! A real `ckrv-api` on loopback with a recording dispatcher, and a small JSON client.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use ckrv_api::dispatch::{DispatchError, Dispatcher};
use ckrv_api::{Config, DispatcherConfig, Server};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Records what a real dispatcher would receive, so a test can play the worker.
#[derive(Default)]
pub struct RecordingDispatcher {
    pub started: Mutex<Vec<(String, String)>>,
    pub stopped: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Dispatcher for RecordingDispatcher {
    async fn start(&self, job_id: &str, worker_token: &str) -> Result<(), DispatchError> {
        self.started
            .lock()
            .unwrap()
            .push((job_id.to_string(), worker_token.to_string()));
        Ok(())
    }

    async fn stop(&self, job_id: &str) {
        self.stopped.lock().unwrap().push(job_id.to_string());
    }
}

impl RecordingDispatcher {
    pub fn token_for(&self, job_id: &str) -> String {
        self.started
            .lock()
            .unwrap()
            .iter()
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
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestApi {
    pub async fn start(data_dir: &Path) -> Self {
        let dispatcher = Arc::new(RecordingDispatcher::default());
        Self::start_with(
            data_dir,
            DispatcherConfig::Custom(dispatcher.clone()),
            dispatcher,
        )
        .await
    }

    pub async fn start_with(
        data_dir: &Path,
        config: DispatcherConfig,
        dispatcher: Arc<RecordingDispatcher>,
    ) -> Self {
        let server = Server::bind(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            dispatcher: config,
            public_url: None,
        })
        .await
        .unwrap();
        let url = server.url();
        let task = tokio::spawn(server.run());
        Self {
            url,
            dispatcher,
            http: reqwest::Client::new(),
            task,
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

    /// Approves a user code on the activation page, as a person would.
    pub async fn activate(&self, user_code: &str, email: &str) -> (StatusCode, String) {
        let body = format!(
            "user_code={}&email={}",
            user_code,
            email.replace('@', "%40")
        );
        let response = self
            .http
            .post(format!("{}/activate", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Runs the whole device flow for `email`; returns the token set.
    pub async fn login(&self, email: &str) -> Value {
        let (status, device) = self.call(Method::POST, "/v1/auth/device", None, None).await;
        assert_eq!(status, StatusCode::OK, "{device}");
        let (status, page) = self
            .activate(device["user_code"].as_str().unwrap(), email)
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

pub fn job_request() -> Value {
    serde_json::json!({
        "spec": "---\nagent: script\nrun: echo hi\n---\n# Hi\n",
        "spec_path": "specs/hi/spec.md",
        "repo_url": "https://git.example.com/sample.git",
        "base_branch": "main",
        "credential": null,
    })
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
