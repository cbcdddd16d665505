//! Dispatch: starting and stopping the worker of a job, and what every worker is handed
//! ([`worker_setup`]). The embedded default runs `ckrv-orchestrator` as a local child process;
//! on Kubernetes each job is a Job of its own ([`kubernetes`]).
//!
//! May call `store` only; the job engine calls it.

pub mod kubernetes;
mod local;
pub mod worker_setup;

use ckrv_wit::types::JobPhase;

pub use kubernetes::{KubernetesDispatcher, KubernetesSettings};
pub use local::{LocalProcess, LocalWorkers};

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
    #[error(
        "sandboxed agents cannot reach their workspaces under {root}: {dir} is not searchable \
         by other users; run `chmod o+x {dir}` or choose another --work-dir"
    )]
    Unreachable { root: String, dir: String },
    #[error("making the worker's directory in {path}: {source}")]
    WorkDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{action}: {problem}")]
    Kubernetes { action: String, problem: String },
    #[error("reading the job: {0}")]
    Store(String),
    #[error("the job's spec: {0}")]
    Spec(String),
}

/// A claimed job to start a worker for.
#[derive(Debug)]
pub struct WorkerStart<'a> {
    pub job_id: &'a str,
    /// The claim the worker acts under.
    pub generation: i64,
    /// The job's worker token; it goes to the worker by a private channel only.
    pub token: &'a str,
    /// The claim's model token, for a job pod's agent (a local worker reads it from the API).
    pub model_token: &'a str,
}

/// A worker that ended without completing its job: the engine fails the job, or times it out,
/// if that claim is still current.
#[derive(Debug)]
pub struct WorkerExit {
    pub job_id: String,
    pub generation: i64,
    pub reason: String,
    /// It was stopped at its deadline (the reason is then the engine's own).
    pub timed_out: bool,
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
    /// The worker of claim `generation` reported `phase`. An error stops the job: on
    /// Kubernetes this narrows the pod's network after the clone, and the agent must not
    /// start with it open.
    async fn phase_changed(
        &self,
        _job_id: &str,
        _generation: i64,
        _phase: JobPhase,
    ) -> Result<(), DispatchError> {
        Ok(())
    }
    /// Work the dispatcher does for as long as the server runs (watching the cluster).
    fn background(&self) -> Option<futures::future::BoxFuture<'static, ()>> {
        None
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
