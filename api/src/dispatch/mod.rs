//! Starting and stopping the worker of a job. The embedded default runs `ckrv-orchestrator` as
//! a local child process; the Kubernetes dispatcher of the roadmap implements the same trait.

mod local;

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
}

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
