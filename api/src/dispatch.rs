//! Starting and stopping the worker of a job. The embedded default runs `ckrv-orchestrator` as
//! a local child process; the Kubernetes dispatcher of the roadmap implements the same trait.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use ckrv_wit::types::JobStatus;
use tokio::sync::oneshot;

use crate::clock;
use crate::events::JobEvents;
use crate::store::Store;

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

/// Starts and stops workers.
#[async_trait::async_trait]
pub trait Dispatcher: Send + Sync {
    /// Starts a worker for `job_id` that authenticates with `worker_token`. Returns once the
    /// worker is started, not when it ends.
    async fn start(&self, job_id: &str, worker_token: &str) -> Result<(), DispatchError>;
    /// Stops the job's worker if it is still running.
    async fn stop(&self, job_id: &str);
}

/// Starts nothing: jobs stay pending until a worker started elsewhere asks for them.
pub struct External;

#[async_trait::async_trait]
impl Dispatcher for External {
    async fn start(&self, job_id: &str, _worker_token: &str) -> Result<(), DispatchError> {
        tracing::info!(job_id, "job queued for an external worker");
        Ok(())
    }

    async fn stop(&self, _job_id: &str) {}
}

/// Runs `ckrv-orchestrator run --api-url URL --job-id ID` per job, its output in
/// `<workers dir>/<id>.log`. If the process ends without having completed its job, the job
/// fails with a pointer to that log.
pub struct LocalProcess {
    orchestrator: PathBuf,
    api_url: String,
    log_dir: PathBuf,
    store: Store,
    events: JobEvents,
    running: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl LocalProcess {
    pub fn new(
        orchestrator: PathBuf,
        api_url: String,
        log_dir: PathBuf,
        store: Store,
        events: JobEvents,
    ) -> Self {
        Self {
            orchestrator,
            api_url,
            log_dir,
            store,
            events,
            running: Arc::default(),
        }
    }
}

#[async_trait::async_trait]
impl Dispatcher for LocalProcess {
    async fn start(&self, job_id: &str, worker_token: &str) -> Result<(), DispatchError> {
        let log_path = self.log_dir.join(format!("{job_id}.log"));
        let log_error = |source| DispatchError::Log {
            path: log_path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.log_dir).map_err(log_error)?;
        let log = std::fs::File::create(&log_path).map_err(log_error)?;
        let log_err = log.try_clone().map_err(log_error)?;
        let mut child = tokio::process::Command::new(&self.orchestrator)
            .args(["run", "--api-url", &self.api_url, "--job-id", job_id])
            .env("CKRV_WORKER_TOKEN", worker_token)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DispatchError::Spawn {
                program: self.orchestrator.display().to_string(),
                source,
            })?;
        tracing::info!(job_id, pid = child.id(), "worker started");

        let (stop_tx, stop_rx) = oneshot::channel();
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job_id.to_string(), stop_tx);
        let running = Arc::clone(&self.running);
        let store = self.store.clone();
        let events = self.events.clone();
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
            // A worker that ends without completing its job leaves it failed, never stuck.
            let error = format!(
                "the worker ended ({described}) without completing the job; see {}",
                log_path.display()
            );
            let now = clock::rfc3339(clock::now());
            match store
                .finish_job(&job_id, JobStatus::Failed, Some(&error), &now)
                .await
            {
                Ok(true) => {
                    tracing::warn!(job_id, "{error}");
                    events.changed(&job_id);
                }
                Ok(false) => {}
                Err(e) => tracing::error!(job_id, error = %e, "recording the worker's end"),
            }
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
