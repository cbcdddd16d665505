//! The job engine under load, through the real `ckrv-api` (SQLite, `--external-workers`) on
//! loopback, playing the worker over HTTP as `ckrv-orchestrator` does: many followers of one
//! job's log, log ingestion, job creation, the model gateway (`gateway.rs`), and reads as the
//! job table grows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ckrv_e2e::Api;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::gateway;
use crate::table::Table;

const EMAIL: &str = "engine@example.com";

/// How much of each to do.
pub struct Load {
    pub followers: usize,
    pub follow_lines: usize,
    pub log_lines: usize,
    pub creates: usize,
    pub clients: usize,
    pub requests: usize,
    pub model_requests: usize,
    pub stored: Vec<usize>,
}

pub fn run(
    root: &Path,
    load: &Load,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    let stand_in = gateway::StandIn::start(runtime)?;
    let secrets = gateway::secrets_file(&root.join("engine-secrets"))?;
    let upstream = format!("anthropic={}", stand_in.url);
    let secrets = secrets.display().to_string();
    let api = played_api(
        &root.join("engine-api"),
        &["--agent-secrets", &secrets, "--model-upstream", &upstream],
    );
    let engine = Engine::on(&api, EMAIL)?;
    runtime.block_on(async {
        engine.followers(load, table).await?;
        engine.ingest(load, table).await?;
        // Before the creates: their queued jobs would be claimed ahead of the gateway's.
        gateway::measure(&engine, &stand_in, load.model_requests, table).await?;
        engine.creates(load, table).await?;
        engine.reads_as_jobs_grow(&api, load, table).await
    })
}

/// A `ckrv-api` in `dir` whose worker the bench plays, with `extra` flags. The bench claims jobs
/// without renewing leases: a long lease keeps them. Its jobs name a loopback repository that
/// nothing ever clones (no worker runs), and stay running (the followers', the log ingest's,
/// the gateway's, the console's): room for all of them whatever the machine's cores.
pub fn played_api(dir: &Path, extra: &[&str]) -> Api {
    let mut flags = vec![
        "--external-workers",
        "--allow-local-repos",
        "--max-log-lines",
        "100000000",
        "--worker-lease",
        "1h",
        "--max-running",
        "8",
    ];
    flags.extend_from_slice(extra);
    Api::start_with(dir, &flags)
}

/// The API as its users and one external worker reach it.
pub struct Engine {
    pub url: String,
    /// A user's access token.
    pub token: String,
    worker_credential: String,
    pub http: reqwest::Client,
}

/// A claimed job: its id and the worker token that acts on it.
pub struct Claimed {
    pub id: String,
    pub token: String,
    next_sequence: u64,
}

/// The spec of the engine's jobs: no worker ever runs them.
pub const SCRIPT_SPEC: &str = "---\nagent: script\nrun: echo hi\n---\n# Bench\n";

/// `POST /v1/jobs` as the holder of `token`, of a job on a loopback repository that nothing
/// ever clones; its id.
pub async fn create_job(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    spec: &str,
) -> Result<String> {
    let response = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(token)
        .json(&json!({
            "spec_content": spec,
            "git_repo_url": "http://127.0.0.1:9/bench.git",
        }))
        .send()
        .await?;
    ensure!(
        response.status() == 201,
        "POST /v1/jobs: {}",
        response.status()
    );
    let job: Value = response.json().await?;
    Ok(job["id"].as_str().context("the job has an id")?.to_string())
}

/// The password of the bench's accounts, for a browser's sign-in.
pub const PASSWORD: &str = "bench-password-long-enough";

/// An enterprise account (room for every job a bench makes) on `api`; its token.
pub fn bench_account(api: &Api, email: &str) -> Result<String> {
    api.add_user(email, PASSWORD);
    let set = api.admin(&["users", "set-tier", email, "enterprise"]);
    ensure!(
        set.status.success(),
        "set-tier: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    Ok(api.token(email))
}

impl Engine {
    /// An enterprise account `email` and an external worker's credential on `api` (started with
    /// `--external-workers`).
    pub fn on(api: &Api, email: &str) -> Result<Self> {
        let token = bench_account(api, email)?;
        let added = api.admin(&["workers", "add", "bench-worker"]);
        ensure!(
            added.status.success(),
            "workers add: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        Ok(Self {
            url: api.url.clone(),
            token,
            worker_credential: String::from_utf8(added.stdout)?.trim().to_string(),
            http: reqwest::Client::new(),
        })
    }

    pub async fn create_job(&self, spec: &str) -> Result<String> {
        create_job(&self.http, &self.url, &self.token, spec).await
    }

    /// Creates a job of `spec` and claims it as the bench's external worker.
    pub async fn running_job(&self, spec: &str) -> Result<Claimed> {
        let id = self.create_job(spec).await?;
        let claim: Value = self
            .http
            .post(format!("{}/v1/worker/claim", self.url))
            .bearer_auth(&self.worker_credential)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ensure!(claim["job_id"] == id.as_str(), "claimed {claim}, not {id}");
        Ok(Claimed {
            id,
            token: claim["token"].as_str().context("a job token")?.to_string(),
            next_sequence: 1,
        })
    }

    pub async fn append(&self, job: &mut Claimed, messages: &[String]) -> Result<()> {
        let lines: Vec<Value> = messages
            .iter()
            .map(|m| json!({"timestamp": "2026-11-23T00:00:00Z", "level": "info", "source": "bench", "message": m}))
            .collect();
        let response = self
            .http
            .post(format!("{}/v1/worker/jobs/{}/logs", self.url, job.id))
            .bearer_auth(&job.token)
            .json(&json!({"first_sequence": job.next_sequence, "lines": lines}))
            .send()
            .await?;
        ensure!(response.status() == 204, "POST logs: {}", response.status());
        job.next_sequence += messages.len() as u64;
        Ok(())
    }

    /// Many followers of one job's log: from a line's POST to its event at each follower.
    async fn followers(&self, load: &Load, table: &mut Table) -> Result<()> {
        let mut job = self.running_job(SCRIPT_SPEC).await?;
        let sent: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
        let (connected_tx, mut connected) = tokio::sync::mpsc::channel(load.followers);
        let mut followers = Vec::new();
        for _ in 0..load.followers {
            let request = self
                .http
                .get(format!("{}/v1/jobs/{}/logs?follow=true", self.url, job.id))
                .bearer_auth(&self.token);
            let (sent, connected_tx, expect) =
                (Arc::clone(&sent), connected_tx.clone(), load.follow_lines);
            followers.push(tokio::spawn(async move {
                let response = request.send().await?.error_for_status()?;
                connected_tx.send(()).await.ok();
                let mut body = response.bytes_stream();
                let mut text = String::new();
                let mut delays = Vec::with_capacity(expect);
                while delays.len() < expect {
                    let chunk = body.next().await.context("the stream ended early")??;
                    let arrived = Instant::now();
                    text.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = text.find("\n\n") {
                        let event: String = text.drain(..end + 2).collect();
                        if let Some(n) = event
                            .split("\"message\":\"probe ")
                            .nth(1)
                            .and_then(|rest| rest.split('"').next())
                            .and_then(|n| n.parse::<usize>().ok())
                        {
                            let at = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?[&n];
                            delays.push(arrived.duration_since(at));
                        }
                    }
                }
                anyhow::Ok(delays)
            }));
        }
        drop(connected_tx);
        for _ in 0..load.followers {
            connected
                .recv()
                .await
                .context("a follower failed to connect")?;
        }
        for n in 0..load.follow_lines {
            sent.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(n, Instant::now());
            self.append(&mut job, &[format!("probe {n}")]).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut delays = Vec::new();
        for follower in followers {
            delays.extend(follower.await??);
        }
        table.row(
            &format!(
                "log line to each of {} SSE followers of one job",
                load.followers
            ),
            &delays,
        );
        Ok(())
    }

    /// One job's log written as fast as one worker sends it: batches of 500, one at a time.
    async fn ingest(&self, load: &Load, table: &mut Table) -> Result<()> {
        let mut job = self.running_job(SCRIPT_SPEC).await?;
        let batch: Vec<String> = (0..500)
            .map(|i| format!("agent output line {i} with some text"))
            .collect();
        let mut times = Vec::new();
        let start = Instant::now();
        while (job.next_sequence as usize) <= load.log_lines {
            let at = Instant::now();
            self.append(&mut job, &batch).await?;
            times.push(at.elapsed());
        }
        let rate = (job.next_sequence - 1) as f64 / start.elapsed().as_secs_f64();
        table.row(
            &format!("log batch of 500 lines stored ({rate:.0} lines/s)"),
            &times,
        );
        Ok(())
    }

    /// `POST /v1/jobs` from several clients at once.
    async fn creates(&self, load: &Load, table: &mut Table) -> Result<()> {
        let per_client = load.creates.div_ceil(load.clients);
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..load.clients {
            let engine = Engine {
                url: self.url.clone(),
                token: self.token.clone(),
                worker_credential: String::new(),
                http: self.http.clone(),
            };
            clients.push(tokio::spawn(async move {
                let mut times = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let at = Instant::now();
                    engine.create_job(SCRIPT_SPEC).await?;
                    times.push(at.elapsed());
                }
                anyhow::Ok(times)
            }));
        }
        let mut times = Vec::new();
        for client in clients {
            times.extend(client.await??);
        }
        let rate = times.len() as f64 / start.elapsed().as_secs_f64();
        table.row(
            &format!(
                "`POST /v1/jobs`, {} clients ({rate:.0} creates/s)",
                load.clients
            ),
            &times,
        );
        Ok(())
    }

    /// `GET /v1/jobs/{id}` and `GET /v1/jobs?limit=20` with the job table at each size.
    async fn reads_as_jobs_grow(&self, api: &Api, load: &Load, table: &mut Table) -> Result<()> {
        let id = self.create_job(SCRIPT_SPEC).await?;
        let database = format!("sqlite:{}", api.data_dir.join("ckrv.db").display());
        let pool = sqlx::SqlitePool::connect(&database).await?;
        for &size in &load.stored {
            let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
                .fetch_one(&pool)
                .await?;
            let missing = i64::try_from(size)?.saturating_sub(stored);
            fill(&pool, &id, missing).await?;
            for (what, path) in [
                ("`GET /v1/jobs/{id}`", format!("/v1/jobs/{id}")),
                ("`GET /v1/jobs?limit=20`", "/v1/jobs?limit=20".to_string()),
            ] {
                let mut times = Vec::with_capacity(load.requests);
                for _ in 0..load.requests {
                    let at = Instant::now();
                    let response = self
                        .http
                        .get(format!("{}{path}", self.url))
                        .bearer_auth(&self.token)
                        .send()
                        .await?;
                    ensure!(
                        response.status() == 200,
                        "GET {path}: {}",
                        response.status()
                    );
                    response.bytes().await?;
                    times.push(at.elapsed());
                }
                table.row(&format!("{what} with {size} jobs stored"), &times);
            }
        }
        pool.close().await;
        Ok(())
    }
}

/// Adds `count` copies of job `template` to its account, dated 1970 so no quota counts them,
/// in one statement.
async fn fill(pool: &sqlx::SqlitePool, template: &str, count: i64) -> Result<()> {
    if count <= 0 {
        return Ok(());
    }
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('jobs')")
        .fetch_all(pool)
        .await?;
    if !columns.iter().any(|c| c == "created_ms") {
        bail!("the jobs table has no created_ms column: {columns:?}");
    }
    let copied: Vec<&str> = columns
        .iter()
        .map(String::as_str)
        .filter(|c| !matches!(*c, "seq" | "id" | "created_ms"))
        .collect();
    let statement = format!(
        "INSERT INTO jobs (id, created_ms, {list})
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         SELECT 'filler-' || lower(hex(randomblob(8))) || '-' || i, 0, {list}
         FROM n, (SELECT * FROM jobs WHERE id = $2)",
        list = copied.join(", ")
    );
    sqlx::query(&statement)
        .bind(count)
        .bind(template)
        .execute(pool)
        .await?;
    Ok(())
}
