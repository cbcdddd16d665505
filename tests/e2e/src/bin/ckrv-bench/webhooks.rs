//! Webhooks through the real `ckrv-api` (SQLite, `--external-workers`, no worker ever runs):
//! how long a job's transition takes to reach a receiver on loopback, and what a receiver
//! that is down, with a thousand deliveries queued for it, costs the job path (`POST
//! /v1/jobs`, which writes the outbox rows in its transaction).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ckrv_e2e::Api;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::engine;
use crate::table::Table;

const EMAIL: &str = "webhooks@example.com";

/// How much of each to do.
pub struct Load {
    /// Jobs whose `job.queued` is timed to the receiver, one after another.
    pub latency_jobs: usize,
    /// Deliveries queued for a receiver that is down.
    pub queued: usize,
    /// `POST /v1/jobs` timed without a webhook, with one whose receiver is down, and with
    /// `queued` more deliveries waiting too.
    pub creates: usize,
}

struct Client {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// One request; fails unless the answer is `expect`. The answer's JSON (`Null` if none).
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        ensure!(
            response.status() == expect,
            "{method} {path}: {}",
            response.status()
        );
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    async fn create_job(&self) -> Result<String> {
        engine::create_job(&self.http, &self.url, &self.token, engine::SCRIPT_SPEC).await
    }

    /// `n` creates one after another, each timed.
    async fn timed_creates(&self, n: usize) -> Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            self.create_job().await?;
            times.push(start.elapsed());
        }
        Ok(times)
    }
}

/// A receiver on loopback that notes when each job's first event came.
struct Receiver {
    url: String,
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
    wake: Arc<Notify>,
}

async fn receiver() -> Result<Receiver> {
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let wake = Arc::new(Notify::new());
    let (note, woken) = (Arc::clone(&arrived), Arc::clone(&wake));
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (note, woken) = (Arc::clone(&note), Arc::clone(&woken));
        async move {
            let now = Instant::now();
            if let Ok(event) = serde_json::from_slice::<Value>(&body)
                && let Some(job) = event["data"]["job"]["id"].as_str()
                && let Ok(mut arrived) = note.lock()
            {
                arrived.entry(job.to_owned()).or_insert(now);
            }
            woken.notify_waiters();
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Receiver { url, arrived, wake })
}

pub fn run(
    root: &Path,
    load: &Load,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    let api = Api::start_with(
        &root.join("webhooks-api"),
        &["--external-workers", "--allow-local-repos"],
    );
    let client = Client {
        url: api.url.clone(),
        token: engine::bench_account(&api, EMAIL)?,
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        // 1. From `POST /v1/jobs` to the receiver's hands.
        let receiver = receiver().await?;
        let hook = client
            .send(
                reqwest::Method::POST,
                "/v1/webhooks",
                Some(json!({"url": receiver.url, "events": ["job.queued"]})),
                201,
            )
            .await?;
        let mut latencies = Vec::with_capacity(load.latency_jobs);
        for _ in 0..load.latency_jobs {
            let start = Instant::now();
            let id = client.create_job().await?;
            let arrived = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    let woken = receiver.wake.notified();
                    if let Some(at) = receiver
                        .arrived
                        .lock()
                        .ok()
                        .and_then(|a| a.get(&id).copied())
                    {
                        return at;
                    }
                    woken.await;
                }
            })
            .await
            .context("a job.queued never reached the receiver")?;
            latencies.push(arrived - start);
        }
        table.row(
            "job created → its `job.queued` at a receiver on loopback",
            &latencies,
        );
        let hook_id = hook["id"].as_str().context("the webhook has an id")?;
        client
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/webhooks/{hook_id}"),
                None,
                204,
            )
            .await?;

        // 2. The job path: without a webhook; with a webhook whose receiver is down (each
        // create queues one more delivery, tried at once and failing); and the same with
        // `queued` more deliveries waiting. Rows 2 and 3 differ only by those.
        let before = client.timed_creates(load.creates).await?;
        table.row("`POST /v1/jobs`, no webhook", &before);
        let down = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        client
            .send(
                reqwest::Method::POST,
                "/v1/webhooks",
                Some(json!({"url": format!("http://{down}/hook"), "events": ["*"]})),
                201,
            )
            .await?;
        let fresh = client.timed_creates(load.creates).await?;
        table.row(
            "`POST /v1/jobs`, a webhook whose receiver is down, none queued at the start",
            &fresh,
        );
        for _ in 0..load.queued {
            client.create_job().await?;
        }
        let during = client.timed_creates(load.creates).await?;
        table.row(
            &format!(
                "`POST /v1/jobs`, the same with {} more deliveries queued at the start",
                load.queued
            ),
            &during,
        );
        Ok(())
    })
}
