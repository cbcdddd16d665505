//! What a worker runs a job with: its step runner, its directories, its token and where its
//! agent runs. The same for a job from the API (`job`) and a local run (`local`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ckrv_agents::pod::PodRun;
use ckrv_agents::{ExitStatus, RunRequest, SandboxUnavailable};

use crate::logs::JobLog;
use crate::place::{self, AgentPlace};
use crate::step_host::StepRunner;
use crate::warm::WarmSnapshots;

/// How to run the job.
pub struct JobOptions {
    /// Runs the pipeline's steps; shared by a worker's jobs, so each component compiles once.
    pub steps: Arc<StepRunner>,
    /// Parent of the job's temporary directory (the workspace, the host's git state); the
    /// system temp dir when absent.
    pub work_dir: Option<PathBuf>,
    /// An existing empty directory to use as the workspace instead of one in the job's
    /// directory (a job pod's volume, which the agent's container mounts too). It is left as
    /// it is at the end.
    pub workspace: Option<PathBuf>,
    pub token: String,
    /// Local paths and internal hosts may be cloned (development only).
    pub allow_local_repos: bool,
    /// Where the agent runs.
    pub agent: AgentPlace,
    /// Agent programs installed outside the system's directories.
    pub agent_bin: Option<PathBuf>,
    /// The `ckrv-egress-bridge` program a sandbox with egress runs its agent under; the one
    /// beside this program when `None`.
    pub egress_bridge: Option<PathBuf>,
    /// The worker's unpacked copies of snapshots (`--snapshot-cache`), on the disk of
    /// `work_dir`, so a job on a hit moves its cache paths into place.
    pub warm: Option<Arc<WarmSnapshots>>,
}

impl JobOptions {
    /// Runs `request` where this job's agent runs, its output to `log` under `name`
    /// ([`place::run_where_the_agent_runs`]).
    pub(crate) async fn run_where_the_agent_runs(
        &self,
        log: &JobLog,
        name: &str,
        run: PodRun,
        request: &RunRequest,
    ) -> Result<(std::io::Result<ExitStatus>, Vec<String>), SandboxUnavailable> {
        place::run_where_the_agent_runs(
            &self.agent,
            self.egress_bridge.as_deref(),
            log,
            name,
            run,
            request,
        )
        .await
    }
}

/// A fresh directory under `work_dir` (the system's temporary directory when `None`), the
/// worker's alone (0700), removed when dropped.
pub(crate) fn work_tempdir(
    work_dir: Option<&Path>,
    prefix: &str,
) -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    match work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
}
