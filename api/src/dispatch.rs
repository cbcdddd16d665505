//! Starting and stopping the worker of a job. The embedded default runs `ckrv-orchestrator` as
//! a local child process; the Kubernetes dispatcher of the roadmap implements the same trait.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("starting the worker {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("preparing the worker log {path}: {source}")]
    Log {
        path: String,
        source: std::io::Error,
    },
}

/// The only `PATH` a local worker gets: system tools (git, bwrap), nothing of the operator's.
const WORKER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A claimed job to start a worker for.
#[derive(Debug)]
pub struct WorkerStart<'a> {
    pub job_id: &'a str,
    /// The claim the worker acts under.
    pub generation: i64,
    /// The job's worker token; it goes to the worker by a private channel only.
    pub token: &'a str,
}

/// A local worker that ended without completing its job: the engine fails the job (if that
/// claim is still current).
#[derive(Debug)]
pub struct WorkerExit {
    pub job_id: String,
    pub generation: i64,
    pub reason: String,
}

/// Starts and stops workers.
#[async_trait::async_trait]
pub trait Dispatcher: Send + Sync {
    /// Starts a worker for a claimed job. Returns once the worker is started, not when it ends.
    async fn start(&self, job: &WorkerStart<'_>) -> Result<(), DispatchError>;
    /// Stops the job's worker if it is still running.
    async fn stop(&self, job_id: &str);
    /// Whether this API starts workers itself; if not, jobs wait for workers elsewhere to
    /// claim them.
    fn starts_workers(&self) -> bool {
        true
    }
}

/// Starts nothing: jobs stay pending until a worker started elsewhere claims them.
pub struct External;

#[async_trait::async_trait]
impl Dispatcher for External {
    async fn start(&self, job: &WorkerStart<'_>) -> Result<(), DispatchError> {
        tracing::info!(job_id = job.job_id, "job left for an external worker");
        Ok(())
    }

    async fn stop(&self, _job_id: &str) {}

    fn starts_workers(&self) -> bool {
        false
    }
}

/// Runs `ckrv-orchestrator run --api-url URL --job-id ID` per job, its output in
/// `<workers dir>/<id>.log`. If the process ends without having completed its job, it is
/// reported on `exits` with a pointer to that log.
pub struct LocalProcess {
    orchestrator: PathBuf,
    api_url: String,
    log_dir: PathBuf,
    allow_local_repos: bool,
    insecure_no_sandbox: bool,
    exits: mpsc::UnboundedSender<WorkerExit>,
    running: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl LocalProcess {
    pub fn new(
        orchestrator: PathBuf,
        api_url: String,
        log_dir: PathBuf,
        allow_local_repos: bool,
        insecure_no_sandbox: bool,
        exits: mpsc::UnboundedSender<WorkerExit>,
    ) -> Self {
        Self {
            orchestrator,
            api_url,
            log_dir,
            allow_local_repos,
            insecure_no_sandbox,
            exits,
            running: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl Dispatcher for LocalProcess {
    async fn start(&self, job: &WorkerStart<'_>) -> Result<(), DispatchError> {
        let job_id = job.job_id;
        let log_path = self.log_dir.join(format!("{job_id}.log"));
        let log_error = |source| DispatchError::Log {
            path: log_path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.log_dir).map_err(log_error)?;
        let log = std::fs::File::create(&log_path).map_err(log_error)?;
        let log_err = log.try_clone().map_err(log_error)?;
        // Nothing of the API's environment reaches the worker: not its configuration, not
        // whatever secrets an operator exported. The token travels on a pipe.
        let mut command = tokio::process::Command::new(&self.orchestrator);
        command
            .args(["run", "--api-url", &self.api_url, "--job-id", job_id])
            .args(self.allow_local_repos.then_some("--allow-local-repos"))
            .args(self.insecure_no_sandbox.then_some("--insecure-no-sandbox"))
            .env_clear()
            .env("PATH", WORKER_PATH)
            .env("HOME", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        if let Ok(filter) = std::env::var("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        let spawn_error = |source| DispatchError::Spawn {
            program: self.orchestrator.display().to_string(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt as _;
            let written = async {
                stdin.write_all(job.token.as_bytes()).await?;
                stdin.write_all(b"\n").await?;
                stdin.shutdown().await
            };
            // A worker that died before reading its token is seen by the watcher below, which
            // fails the job with a pointer to the worker's log.
            if let Err(error) = written.await {
                tracing::warn!(job_id, %error, "the worker did not take its token");
            }
        }
        tracing::info!(job_id, pid = child.id(), "worker started");

        let (stop_tx, stop_rx) = oneshot::channel();
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job_id.to_string(), stop_tx);
        let running = Arc::clone(&self.running);
        let exits = self.exits.clone();
        let generation = job.generation;
        let job_id = job_id.to_string();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                status = child.wait() => Some(status),
                _ = stop_rx => {
                    let _ = child.kill().await;
                    None
                }
            };
            running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&job_id);
            let Some(status) = outcome else { return };
            let described = match &status {
                Ok(status) => status.to_string(),
                Err(e) => format!("could not be waited for ({e})"),
            };
            tracing::info!(job_id, status = %described, "worker ended");
            // A worker that ends without completing its job leaves it failed, never stuck; the
            // engine ignores this when the job had already ended.
            let reason = format!(
                "the worker ended ({described}) without completing the job; see {}",
                log_path.display()
            );
            let _ = exits.send(WorkerExit {
                job_id,
                generation,
                reason,
            });
        });
        Ok(())
    }

    async fn stop(&self, job_id: &str) {
        let stop = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(job_id);
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}
