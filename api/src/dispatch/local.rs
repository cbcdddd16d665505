//! The embedded default worker: `ckrv-orchestrator run` as a child process per job, in a
//! process group and a directory of its own, so that stopping it takes everything the job
//! started (an unsandboxed agent's children too) and everything it wrote.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::sync::{mpsc, oneshot};

use super::{DispatchError, Dispatcher, WorkerExit, WorkerStart};

/// The only `PATH` a local worker gets: system tools (git, bwrap), nothing of the operator's.
const WORKER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How local workers are started.
#[derive(Debug, Clone)]
pub struct LocalWorkers {
    pub orchestrator: PathBuf,
    /// The URL the worker reaches this API at.
    pub api_url: String,
    /// Each worker's output goes to `<log_dir>/<job id>.log`.
    pub log_dir: PathBuf,
    /// Where each worker gets a directory for its job's workspace, removed when the worker
    /// ends or is stopped; the system's temporary directory when `None`.
    pub work_root: Option<PathBuf>,
    pub allow_local_repos: bool,
    pub insecure_no_sandbox: bool,
    /// Agent programs installed outside /usr, passed to each worker.
    pub agent_bin: Option<PathBuf>,
    /// The size of each agent's `/tmp` and `/dev/shm` in MiB (`--agent-tmp-mb`); the
    /// worker's default when `None`.
    pub agent_tmp_mb: Option<u64>,
    /// Where workers keep compiled step components between jobs (private to this user).
    pub compile_cache: PathBuf,
}

/// In the work root: the workers' unpacked copies of snapshots, shared by their jobs.
const SNAPSHOT_CACHE: &str = "ckrv-snapshot-cache";

impl LocalWorkers {
    /// Where workers' directories go.
    fn work_root(&self) -> PathBuf {
        self.work_root.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// The work root, made (0711: passable, not listable) if it is not there yet.
    fn prepare_root(&self) -> Result<PathBuf, DispatchError> {
        let root = self.work_root();
        if !root.exists() {
            let error = |source| DispatchError::WorkDir {
                path: root.display().to_string(),
                source,
            };
            std::fs::create_dir_all(&root).map_err(error)?;
            std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o711))
                .map_err(error)?;
        }
        Ok(root)
    }

    /// Checks, before any job runs, that a sandboxed agent will reach its workspace: run by
    /// root, the sandbox gives the agent a user of its own, which must be able to pass through
    /// every directory above the work root.
    pub fn check(&self) -> Result<(), DispatchError> {
        if self.insecure_no_sandbox || !rustix::process::geteuid().is_root() {
            return Ok(());
        }
        let root = self.prepare_root()?;
        let root = root.canonicalize().unwrap_or(root);
        for dir in root.ancestors() {
            let mode = std::fs::metadata(dir).map_or(0, |m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions())
            });
            if mode & 0o001 == 0 {
                return Err(DispatchError::Unreachable {
                    root: root.display().to_string(),
                    dir: dir.display().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Starts workers as local processes. A worker that ends without having completed its job is
/// reported on `exits` with a pointer to its log.
pub struct LocalProcess {
    settings: LocalWorkers,
    exits: mpsc::UnboundedSender<WorkerExit>,
    running: Arc<Mutex<HashMap<String, Running>>>,
}

/// A worker that runs: which claim it serves, and how to stop it.
struct Running {
    generation: i64,
    stop: oneshot::Sender<()>,
}

impl LocalProcess {
    pub fn new(settings: LocalWorkers, exits: mpsc::UnboundedSender<WorkerExit>) -> Self {
        Self {
            settings,
            exits,
            running: Arc::default(),
        }
    }

    /// A fresh directory for one worker: others may pass through it (the sandboxed agent's
    /// user reaches its workspace inside) but not list it.
    fn work_dir(&self) -> Result<tempfile::TempDir, DispatchError> {
        let root = self.settings.prepare_root()?;
        let error = |source| DispatchError::WorkDir {
            path: root.display().to_string(),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix("ckrv-worker-")
            .tempdir_in(&root)
            .map_err(error)?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .map_err(error)?;
        Ok(dir)
    }

    fn command(
        &self,
        job_id: &str,
        work_dir: &Path,
        log: &Path,
    ) -> Result<tokio::process::Command, DispatchError> {
        let log_error = |source| DispatchError::Log {
            path: log.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.settings.log_dir).map_err(log_error)?;
        let out = std::fs::File::create(log).map_err(log_error)?;
        let err = out.try_clone().map_err(log_error)?;
        // Nothing of the API's environment reaches the worker: not its configuration, not
        // whatever secrets an operator exported. The token travels on a pipe.
        let mut command = tokio::process::Command::new(&self.settings.orchestrator);
        command
            .args([
                "run",
                "--api-url",
                &self.settings.api_url,
                "--job-id",
                job_id,
            ])
            .arg("--work-dir")
            .arg(work_dir)
            // Beside the workers' directories, on their disk: a hit is a rename.
            .arg("--snapshot-cache")
            .arg(self.settings.work_root().join(SNAPSHOT_CACHE))
            .args(
                self.settings
                    .allow_local_repos
                    .then_some("--allow-local-repos"),
            )
            .args(
                self.settings
                    .insecure_no_sandbox
                    .then_some("--insecure-no-sandbox"),
            )
            .args(
                self.settings
                    .agent_bin
                    .iter()
                    .flat_map(|dir| [std::ffi::OsStr::new("--agent-bin"), dir.as_os_str()]),
            )
            .args(
                self.settings
                    .agent_tmp_mb
                    .iter()
                    .flat_map(|mb| ["--agent-tmp-mb".to_string(), mb.to_string()]),
            )
            .arg("--compile-cache")
            .arg(&self.settings.compile_cache)
            .env_clear()
            .env("PATH", WORKER_PATH)
            .env("HOME", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            // A group of its own: stopping the worker signals everything it started.
            .process_group(0)
            .kill_on_drop(true);
        if let Ok(filter) = std::env::var("RUST_LOG") {
            command.env("RUST_LOG", filter);
        }
        Ok(command)
    }
}

#[async_trait::async_trait]
impl Dispatcher for LocalProcess {
    async fn start(&self, job: &WorkerStart<'_>) -> Result<(), DispatchError> {
        let job_id = job.job_id;
        let log_path = self.settings.log_dir.join(format!("{job_id}.log"));
        let work_dir = self.work_dir()?;
        let mut child = self
            .command(job_id, work_dir.path(), &log_path)?
            .spawn()
            .map_err(|source| DispatchError::Spawn {
                program: self.settings.orchestrator.display().to_string(),
                source,
            })?;
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
        let group = child.id().and_then(|pid| Pid::from_raw(pid.cast_signed()));
        tracing::info!(job_id, pid = child.id(), "worker started");

        let (stop, stopped) = oneshot::channel();
        let generation = job.generation;
        lock(&self.running).insert(job_id.to_string(), Running { generation, stop });
        let running = Arc::clone(&self.running);
        let exits = self.exits.clone();
        let job_id = job_id.to_string();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => Some(status),
                _ = stopped => None,
            };
            // Whatever the worker left behind in its group goes with it (a sandboxed agent
            // dies with its sandbox; an unsandboxed one's children would not).
            if let Some(group) = group {
                let _ = kill_process_group(group, Signal::KILL);
            }
            if status.is_none() {
                let _ = child.wait().await;
            }
            let dir = work_dir.path().display().to_string();
            match tokio::task::spawn_blocking(move || work_dir.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(job_id, dir, %error, "removing a worker's directory")
                }
                Err(error) => tracing::error!(job_id, dir, %error, "removing a worker's directory"),
            }
            {
                let mut running = lock(&running);
                if running
                    .get(&job_id)
                    .is_some_and(|r| r.generation == generation)
                {
                    running.remove(&job_id);
                }
            }
            let Some(status) = status else {
                tracing::info!(job_id, "worker stopped");
                return;
            };
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
                timed_out: false,
            });
        });
        Ok(())
    }

    async fn stop(&self, job_id: &str) {
        if let Some(running) = lock(&self.running).remove(job_id) {
            let _ = running.stop.send(());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
