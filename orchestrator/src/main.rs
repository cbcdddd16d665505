//! `ckrv-orchestrator run --api-url URL --job-id ID`: runs one job (see docs/protocol.md); the
//! job's worker token is the first line of standard input, or in `--token-file`. With
//! `--agent-control DIR --agent-output DIR` it is the orchestrator of a Kubernetes job pod, whose
//! agent runs in the pod's other container (docs/job-pod.md). `ckrv-orchestrator work --api-url
//! URL`: an external worker that claims and runs jobs, its credential on standard input.
//! `ckrv-orchestrator step run STEP.wasm --workspace DIR`: runs one step against a directory,
//! without an API, for step authors.

use anyhow::Context;
use ckrv_agents::PodRuntime;
use ckrv_orchestrator::api_client::ApiClient;
use ckrv_orchestrator::job::run_job;
use ckrv_orchestrator::options::JobOptions;
use ckrv_orchestrator::place::AgentPlace;
use ckrv_orchestrator::step_host::StepRunner;
use ckrv_orchestrator::work::{WorkOptions, work};
use ckrv_wit::types::{JobCompletion, JobState};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod step_cli;

#[derive(Parser)]
#[command(name = "ckrv-orchestrator", version, about = "Runs one ckrv job")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the job: clone, agent, diff, upload, reporting to the API.
    Run {
        /// Base URL of the ckrv API.
        #[arg(long)]
        api_url: String,
        #[arg(long)]
        job_id: String,
        /// Read the job's worker token from this file (a mounted Secret) instead of standard
        /// input
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Use this existing, empty directory as the job's workspace (a job pod's volume)
        /// instead of a new one under --work-dir, where the host's git state stays
        #[arg(long, value_name = "DIR")]
        workspace: Option<PathBuf>,
        #[command(flatten)]
        pod: PodArgs,
        #[command(flatten)]
        how: JobArgs,
    },
    /// Works for the API from another machine: claims jobs with the credential an operator
    /// issued (`ckrv-api workers add NAME`, given on standard input) and runs them one after
    /// another, until stopped or the credential is revoked.
    Work {
        /// Base URL of the ckrv API.
        #[arg(long)]
        api_url: String,
        /// How long to wait before asking again when no job waits (e.g. 2s, 500ms)
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        poll: std::time::Duration,
        #[command(flatten)]
        how: JobArgs,
    },
    /// Runs one job on this machine without an API (what `ckrv run` without --cloud uses):
    /// the pipeline's stages against a local repository, the log on standard error, the change
    /// written to --out. Exits 1 when the job fails.
    Local {
        /// The spec file; its front matter chooses the agent
        #[arg(long, value_name = "FILE")]
        spec: PathBuf,
        /// The repository to clone: a path, or a URL
        #[arg(long, value_name = "PATH|URL")]
        repo: String,
        /// The branch to start from
        #[arg(long, value_name = "BRANCH", default_value = "main")]
        base_branch: String,
        /// A pipeline file as `ckrv-api serve --pipeline` takes [default: the built-in one]
        /// (stages that upload to an API are skipped)
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Where to write the change (a patch for `git apply`); `-` for standard output
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Print the log as JSON lines
        #[arg(long)]
        json_log: bool,
        #[command(flatten)]
        how: JobArgs,
    },
    /// Step authors' tools.
    #[command(subcommand)]
    Step(step_cli::StepCommand),
}

/// How jobs are run, for both commands.
#[derive(clap::Args)]
struct JobArgs {
    /// Where the job's temporary directories (its workspace, the host's git state, the report
    /// spool) are created
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Clone local paths and internal hosts too (development only; the API passes it when
    /// it was started with the same flag).
    #[arg(long)]
    allow_local_repos: bool,
    /// Run the agent without its sandbox, with this process's rights (every job's log
    /// says so); never on a shared machine
    #[arg(long)]
    insecure_no_sandbox: bool,
    /// A directory of agent programs installed outside /usr (searched first; read-only in
    /// the agent's sandbox)
    #[arg(long, value_name = "DIR")]
    agent_bin: Option<PathBuf>,
    /// The `ckrv-egress-bridge` program an agent with network access runs under in its
    /// sandbox [default: the one beside this program]
    #[arg(long, value_name = "FILE")]
    egress_bridge: Option<PathBuf>,
    /// Keep unpacked copies of the repositories' setup snapshots here (on the disk of
    /// --work-dir), so a job whose snapshot this worker has moves it into place instead of
    /// unpacking it; the two most recent are kept [default: none kept]
    #[arg(long, value_name = "DIR")]
    snapshot_cache: Option<PathBuf>,
    /// Keep compiled step components here (a directory only this user can write), so a
    /// worker started per job compiles each once [default: in memory]
    #[arg(long, value_name = "DIR")]
    compile_cache: Option<PathBuf>,
    /// The size of the agent's /tmp (its HOME) in the sandbox, and of its /dev/shm, in MiB:
    /// each is the host's memory; a write past it fails with "No space left on device"
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = ckrv_agents::DEFAULT_TMP_BYTES / MIB,
        value_parser = clap::value_parser!(u64).range(1..=ckrv_agents::MAX_TMP_MIB)
    )]
    agent_tmp_mb: u64,
}

/// Bytes in a MiB.
const MIB: u64 = 1024 * 1024;

/// The orchestrator of a Kubernetes job pod (docs/job-pod.md).
#[derive(clap::Args)]
struct PodArgs {
    /// Run the agent in the job pod's agent container, launched through this directory (the
    /// orchestrator's; read-only to the agent), instead of in bubblewrap; `done` is written
    /// here when this process ends
    #[arg(
        long,
        value_name = "DIR",
        requires = "agent_output",
        conflicts_with_all = ["insecure_no_sandbox", "agent_bin"]
    )]
    agent_control: Option<PathBuf>,
    /// The agent container's output directory (read-only here), with --agent-control
    #[arg(long, value_name = "DIR", requires = "agent_control")]
    agent_output: Option<PathBuf>,
    /// The agent container's home as mounted here, with --agent-control: the repository
    /// environment's `~/` cache paths are restored into it and packed from it
    #[arg(long, value_name = "DIR", requires = "agent_control")]
    agent_home: Option<PathBuf>,
}

impl PodArgs {
    fn runtime(self) -> Option<PodRuntime> {
        match (self.agent_control, self.agent_output) {
            (Some(control), Some(output)) => Some(PodRuntime {
                home: self.agent_home,
                ..PodRuntime::new(control, output)
            }),
            _ => None,
        }
    }
}

/// Writes a job pod's `done` when dropped, however the run ended, so an agent container still
/// waiting for its launch ends too and the pod completes.
struct DoneOnExit(PathBuf);

impl Drop for DoneOnExit {
    fn drop(&mut self) {
        match ckrv_agents::pod::write_done(&self.0) {
            Ok(()) => tracing::debug!("told the agent's container that this job is done"),
            Err(e) => tracing::warn!(error = %e, dir = %self.0.display(), "writing `done` failed"),
        }
    }
}

impl JobArgs {
    /// The worker's unpacked copies of snapshots, when it keeps them.
    fn warm(&self) -> anyhow::Result<Option<Arc<ckrv_orchestrator::warm::WarmSnapshots>>> {
        let Some(dir) = &self.snapshot_cache else {
            return Ok(None);
        };
        let warm = ckrv_orchestrator::warm::WarmSnapshots::open(
            dir,
            ckrv_orchestrator::warm::DEFAULT_KEEP,
        )
        .with_context(|| format!("--snapshot-cache {}", dir.display()))?;
        Ok(Some(Arc::new(warm)))
    }

    /// Where the agent runs: sandboxed within the operator's bounds, unless told otherwise.
    fn agent_place(&self) -> AgentPlace {
        let limits = ckrv_agents::SandboxLimits {
            tmp_bytes: self.agent_tmp_mb * MIB,
            ..ckrv_agents::SandboxLimits::default()
        };
        AgentPlace::local(!self.insecure_no_sandbox, limits)
    }

    fn step_runner(&self) -> Result<StepRunner, ckrv_orchestrator::step_host::StepError> {
        match &self.compile_cache {
            Some(dir) => StepRunner::with_cache(ckrv_wasm_host::CompileCache::disk(dir)),
            None => StepRunner::new(),
        }
    }
}

/// A secret from the first line of standard input: never from the environment or the
/// arguments, where other processes of the same user could read it. Read once, never logged.
fn read_secret(what: &str, hint: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from standard input"))?;
    let secret = line.trim().to_string();
    if secret.is_empty() {
        anyhow::bail!("no {what} on standard input: {hint}");
    }
    Ok(secret)
}

/// A secret from a file (a mounted Secret), trimmed. Read once, never logged.
fn read_secret_file(what: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} from {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        anyhow::bail!("the {what} file {} is empty", path.display());
    }
    Ok(secret.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // The dispatcher sends stderr to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let run = match Cli::parse().command {
        Command::Run {
            api_url,
            job_id,
            token_file,
            workspace,
            pod,
            how,
        } => RunArgs {
            api_url,
            job_id,
            token_file,
            workspace,
            pod: pod.runtime(),
            how,
        },
        Command::Step(command) => return step_cli::run(command).await,
        Command::Local {
            spec,
            repo,
            base_branch,
            pipeline,
            out,
            json_log,
            how,
        } => return local(spec, repo, base_branch, pipeline, out, json_log, how).await,
        Command::Work { api_url, poll, how } => {
            let credential = read_secret(
                "worker credential",
                "pass the one `ckrv-api workers add NAME` printed",
            )?;
            let agent = how.agent_place();
            let options = WorkOptions {
                steps: Arc::new(how.step_runner()?),
                warm: how.warm()?,
                work_dir: how.work_dir,
                allow_local_repos: how.allow_local_repos,
                agent,
                agent_bin: how.agent_bin,
                egress_bridge: how.egress_bridge,
                poll,
            };
            tracing::info!(api_url, "working: claiming jobs");
            return Ok(work(&api_url, &credential, &options).await?);
        }
    };
    // However the run ends, from here on, the agent's container of a job pod hears of it.
    let _done = run.pod.as_ref().map(|pod| DoneOnExit(pod.control.clone()));
    run_one(run).await
}

/// `run`'s arguments.
struct RunArgs {
    api_url: String,
    job_id: String,
    token_file: Option<PathBuf>,
    workspace: Option<PathBuf>,
    pod: Option<PodRuntime>,
    how: JobArgs,
}

/// `run`: one job, reported to the API.
async fn run_one(run: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        api_url,
        job_id,
        token_file,
        workspace,
        pod,
        how,
    } = run;
    let runner = how.step_runner();
    let local_agent = how.agent_place();
    let warm = how.warm()?;
    let JobArgs {
        work_dir,
        allow_local_repos,
        agent_bin,
        egress_bridge,
        ..
    } = how;
    let token = match &token_file {
        Some(path) => read_secret_file("worker token", path)?,
        None => read_secret(
            "worker token",
            "the dispatcher writes the job's token there",
        )?,
    };
    let api = ApiClient::new(&api_url, &job_id, &token)?;
    let steps = match runner {
        Ok(steps) => Arc::new(steps),
        Err(error) => {
            // The job must not stay `running` because the worker cannot run steps.
            let completion = JobCompletion {
                state: JobState::Failed,
                error_message: Some(format!("the worker cannot run steps: {error}")),
            };
            if let Err(e) = api.complete(&completion).await {
                tracing::error!(error = %e, "could not report the failure");
            }
            return Err(error.into());
        }
    };
    let outcome = run_job(
        api,
        JobOptions {
            steps,
            work_dir,
            workspace,
            token,
            allow_local_repos,
            agent: match pod {
                Some(pod) => AgentPlace::Pod(pod),
                None => local_agent,
            },
            agent_bin,
            egress_bridge,
            warm,
        },
    )
    .await?;
    // A failed job that was reported is a finished run: the exit status is non-zero only when
    // the API could not be told, so the dispatcher knows to mark the job itself.
    match outcome {
        Ok(()) => tracing::info!(job_id, "job succeeded"),
        Err(error) => tracing::warn!(job_id, %error, "job failed"),
    }
    Ok(())
}

/// `local`: the job runs here; its failure is this process's exit status 1.
async fn local(
    spec: PathBuf,
    repo: String,
    base_branch: String,
    pipeline: Option<PathBuf>,
    out: PathBuf,
    json_log: bool,
    how: JobArgs,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&spec)
        .with_context(|| format!("reading the spec {}", spec.display()))?;
    let pipeline = match &pipeline {
        Some(path) => ckrv_pipeline::Pipeline::load(path)?,
        None => ckrv_pipeline::Pipeline::builtin(),
    };
    let agent = how.agent_place();
    let options = JobOptions {
        steps: Arc::new(how.step_runner()?),
        work_dir: how.work_dir,
        workspace: None,
        token: String::new(),
        // The repository is the developer's own, on this machine.
        allow_local_repos: true,
        agent,
        agent_bin: how.agent_bin,
        egress_bridge: how.egress_bridge,
        // A local run keeps no snapshots.
        warm: None,
    };
    let job = ckrv_orchestrator::local::LocalJob {
        spec: text,
        spec_path: Some(spec.display().to_string()),
        repo,
        base_branch,
        pipeline,
        json_log,
    };
    match ckrv_orchestrator::local::run_local(job, &options).await {
        Ok(patch) => ckrv_orchestrator::local::write_patch(&out, &patch)
            .with_context(|| format!("writing {}", out.display())),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
