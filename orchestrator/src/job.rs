//! One job from start to finish: read it, run the pipeline's stages in its workspace, report.

use crate::api_client::{ApiClient, ApiClientError};
use crate::host_git::HostGit;
use crate::logs::{self, JobLog, Scrubber};
use crate::outbox::{self, Outgoing, Report};
use crate::steps::{DEFAULT_LIMITS, StepContext, StepEnv, StepRunner, builtin_component};
use ckrv_agents::{
    AgentDefinition, AgentRuntime, PodRuntime, ProcessRuntime, RunRequest, SandboxLimits,
    SandboxRuntime, Stream,
};
use ckrv_wasm_host::{Limits, Origin, OriginPolicy};
use ckrv_wit::types::{
    JobCompletion, JobState, LogLevel, PhaseUpdate, PipelineStage, StageKind, WorkerJob,
};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const SOURCE: &str = "orchestrator";

/// Where a job's stages get what the API gives a worker: the operator's components and the
/// origin steps may call with the job's token. A local run has no API.
pub(crate) enum StageSource<'a> {
    Api {
        client: &'a ApiClient,
        token: &'a str,
    },
    Local {
        pipeline: &'a ckrv_pipeline::Pipeline,
    },
}

impl StageSource<'_> {
    fn api_url(&self) -> &str {
        match self {
            Self::Api { client, .. } => client.base_url(),
            Self::Local { .. } => "",
        }
    }
}

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
}

/// Where a job's agent runs.
#[derive(Debug, Clone)]
pub enum AgentPlace {
    /// In bubblewrap, on this machine, within these limits.
    Sandbox(SandboxLimits),
    /// As a plain process with the worker's rights: only when the operator said so, insecurely.
    Unsandboxed,
    /// In its own container of the job's Kubernetes pod, which is its sandbox
    /// (docs/job-pod.md).
    Pod(PodRuntime),
}

impl AgentPlace {
    /// The sandbox within `limits`, unless `sandbox` is false.
    pub fn local(sandbox: bool, limits: SandboxLimits) -> Self {
        if sandbox {
            Self::Sandbox(limits)
        } else {
            Self::Unsandboxed
        }
    }
}

/// Runs the job and reports its end to the API. The outer error means the API could not be
/// told; the inner one is why the job failed (already reported), or why it stopped early
/// (the job ended elsewhere: cancelled, timed out, or given to another worker).
pub async fn run_job(api: ApiClient, options: JobOptions) -> anyhow::Result<Result<(), String>> {
    let job = match api.fetch_job().await {
        Ok(job) => job,
        Err(e) => {
            let error = format!("reading the job failed: {e}");
            api.complete(&JobCompletion {
                state: JobState::Failed,
                error_message: Some(error.clone()),
            })
            .await?;
            return Ok(Err(error));
        }
    };
    // Reports wait on disk while the API is away, in a directory of the worker's alone.
    let spool_dir = work_tempdir(options.work_dir.as_deref(), "ckrv-reports-")
        .map_err(|e| anyhow::anyhow!("creating the report spool failed: {e}"))?;
    let (reports, outbox_rx) = tokio::sync::mpsc::channel(outbox::BUFFER);
    let delivery = {
        let (api, spool) = (api.clone(), spool_dir.path().join("reports.jsonl"));
        tokio::spawn(async move { outbox::deliver(outbox_rx, api, &spool).await })
    };
    let scrubber = Scrubber::new(job.agent_secrets.iter().map(|s| s.value.clone()).collect());
    let (log, rx) = JobLog::scrubbing(scrubber.clone());
    let shipper = tokio::spawn(logs::ship(rx, reports.clone(), job.log_sequence + 1));
    let beat = Duration::from_millis(u64::from(job.heartbeat_ms.max(100)));
    let source = StageSource::Api {
        client: &api,
        token: &options.token,
    };
    let outcome = tokio::select! {
        outcome = run_stages(
            &source,
            &options,
            &log,
            job,
        ) => outcome.map(drop),
        ended = heartbeat(&api, beat) => {
            // Dropping the stages kills the agent and removes the workspace; the job has
            // ended, so what is left to report goes only as far as the API refusing it.
            drop(log);
            let _ = shipper.await;
            drop(reports);
            let _ = delivery.await;
            tracing::warn!(reason = %ended, "stopping: the job ended elsewhere");
            return Ok(Err(ended));
        }
    };
    if let Err(error) = &outcome {
        log.error(SOURCE, format!("Job failed: {error}"));
    } else {
        log.info(SOURCE, "Job succeeded");
    }

    // Every line goes before the completion, so followers see them all before the end.
    drop(log);

    if let Err(e) = shipper.await {
        tracing::error!(error = %e, "log shipper panicked");
    }
    let completion = match &outcome {
        Ok(()) => JobCompletion {
            state: JobState::Succeeded,
            error_message: None,
        },
        Err(error) => JobCompletion {
            state: JobState::Failed,
            error_message: Some(scrubber.scrub(error)),
        },
    };
    // Delivery ends when everything is delivered, including the completion; meanwhile the
    // lease is kept, so a long outage does not lose the job.
    let _ = reports
        .send(Outgoing::Report(Report::Complete(completion)))
        .await;
    drop(reports);
    let delivered = tokio::select! {
        delivered = delivery => delivered?,
        ended = heartbeat(&api, beat) => {
            tracing::warn!(reason = %ended, "the job ended elsewhere before its reports were delivered");
            return Ok(Err(ended));
        }
    };
    let delivered = delivered?;
    if delivered.refused > 0 {
        tracing::warn!(refused = delivered.refused, "the API refused some reports");
    }
    Ok(outcome)
}

/// A fresh directory under `work_dir` (the system's temporary directory when `None`), the
/// worker's alone (0700), removed when dropped.
fn work_tempdir(work_dir: Option<&Path>, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    match work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
}

/// Renews the job's lease every `beat` until the API says the job is no longer this worker's
/// (409: cancelled, timed out, given to another; 401: its token revoked), and returns why.
/// Failed attempts are retried: the API may be restarting.
async fn heartbeat(api: &ApiClient, beat: Duration) -> String {
    let mut ticks = tokio::time::interval(beat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match api.heartbeat().await {
            Ok(()) => {}
            Err(ApiClientError::Status {
                status: 401 | 409,
                body,
                ..
            }) => {
                return body;
            }
            Err(e) => tracing::warn!(error = %e, "renewing the job's lease failed; retrying"),
        }
    }
}

/// Runs the pipeline's stages in a fresh workspace; returns the steps' outputs (after `diff`,
/// `diff` holds the patch).
pub(crate) async fn run_stages(
    source: &StageSource<'_>,
    options: &JobOptions,
    log: &JobLog,
    job: WorkerJob,
) -> Result<Vec<(String, String)>, String> {
    let WorkerJob {
        job,
        spec_content,
        pipeline,
        agent_secrets,
        git_credential,
        ..
    } = job;
    let feature_branch = job
        .feature_branch_name
        .clone()
        .ok_or("the API named no feature branch for the job")?;
    let spec = ckrv_agents::parse_spec(&spec_content).map_err(|e| e.to_string())?;
    let invocation = ckrv_agents::resolve(&spec).map_err(|e| e.to_string())?;
    let agent = invocation.agent;
    log.info(
        SOURCE,
        format!(
            "Job {} for {} ({})",
            job.id, job.git_repo_url, job.git_base_branch
        ),
    );

    // The job's directory: the workspace the agent and steps see, and beside it the host's
    // private git state, which neither ever sees.
    let job_dir = work_tempdir(options.work_dir.as_deref(), "ckrv-job-")
        .map_err(|e| format!("creating the job directory failed: {e}"))?;
    // Others may pass through (the agent's unprivileged user reaches its workspace) but not
    // list it, and the private git state inside stays 0700.
    std::fs::set_permissions(
        job_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .map_err(|e| format!("preparing the job directory failed: {e}"))?;
    let workspace = match &options.workspace {
        Some(dir) => given_workspace(dir)?,
        None => {
            let workspace = job_dir.path().join("workspace");
            std::fs::create_dir(&workspace)
                .map_err(|e| format!("creating the workspace failed: {e}"))?;
            workspace
        }
    };
    let scratch = job_dir.path().join("agent");
    std::fs::create_dir(&scratch).map_err(|e| format!("creating the workspace failed: {e}"))?;
    std::fs::set_permissions(
        &scratch,
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .map_err(|e| format!("preparing the job directory failed: {e}"))?;
    let git = HostGit::new(
        &workspace,
        &job_dir.path().join("git"),
        options.allow_local_repos,
    )
    .map_err(|e| format!("preparing the job's git failed: {e}"))?;
    // The credential goes to the host's clone of the job's own repository, once; no step and
    // no agent ever holds it.
    let git = match git_credential {
        Some(credential) => git.with_credential(&job.git_repo_url, credential),
        None => git,
    };
    let api_origin = match source {
        StageSource::Api { client, token } => Some((
            Origin::of_url(client.base_url()).map_err(|e| e.to_string())?,
            *token,
        )),
        StageSource::Local { .. } => None,
    };
    let mut outputs: Vec<(String, String)> = Vec::new();
    if pipeline.is_empty() {
        return Err("the API sent no pipeline stages".to_string());
    }

    for stage in &pipeline {
        log.phase(PhaseUpdate {
            phase: stage.phase,
            agent: Some(agent.name.clone()),
        });
        // A step may talk to the API (upload does): it starts once the API has everything
        // before it, after an outage of any length. The agent needs no API and runs on, except
        // in a job pod: there the API narrows the pod's network to the agent's when it takes
        // the agent's phase, and the agent must not start before.
        let waits = stage.kind != StageKind::Agent || matches!(options.agent, AgentPlace::Pod(_));
        if waits && !log.delivered().await {
            return Err("the API did not come back".to_string());
        }
        if stage.kind == StageKind::Agent {
            let request = RunRequest {
                command: invocation.command.clone(),
                workspace: workspace.clone(),
                scratch: scratch.clone(),
                job_id: job.id.clone(),
                network: agent.network,
                env: agent
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                secrets: agent_secrets
                    .iter()
                    .filter(|s| agent.secrets.contains(&s.name))
                    .map(|s| (s.name.clone(), s.value.clone()))
                    .collect(),
                prompt: invocation.prompt.clone(),
                agent_bin: options.agent_bin.clone(),
            };
            run_agent(options, log, agent, &request).await?;
            git.exclude(&agent.exclude)?;
            continue;
        }
        log.info(SOURCE, starting_message(&stage.name));
        let bytes = component_of(source, stage).await?;
        let ctx = StepContext {
            job_id: job.id.clone(),
            git_repo_url: job.git_repo_url.clone(),
            git_base_branch: job.git_base_branch.clone(),
            feature_branch_name: feature_branch.clone(),
            api_url: source.api_url().to_string(),
            params: stage
                .params
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
            inputs: outputs.clone(),
        };
        let env = StepEnv {
            name: &stage.name,
            git: &git,
            log,
            policy: stage_policy(stage, api_origin.as_ref())?,
            limits: stage_limits(stage),
        };
        let output = options
            .steps
            .run(&bytes, ctx, env)
            .await
            .into_result(&stage.name)?;
        log.info(&stage.name, output.summary);
        for (key, value) in output.outputs {
            outputs.retain(|(k, _)| *k != key);
            outputs.push((key, value));
        }
    }
    if let Err(e) = job_dir.close() {
        tracing::warn!(error = %e, "removing the workspace failed");
    }
    Ok(outputs)
}

/// Runs the agent to its end, its output streamed to the job log under its name.
async fn run_agent(
    options: &JobOptions,
    log: &JobLog,
    agent: &AgentDefinition,
    request: &RunRequest,
) -> Result<(), String> {
    log.info(SOURCE, format!("Starting agent: {}", agent.name));
    let (lines, mut agent_output) = tokio::sync::mpsc::channel::<ckrv_agents::OutputLine>(256);
    let forward = async {
        while let Some(line) = agent_output.recv().await {
            let level = match line.stream {
                Stream::Stdout => LogLevel::Info,
                Stream::Stderr => LogLevel::Warn,
            };
            log.send(level, &agent.name, line.line).await;
        }
    };
    let sandbox = match &options.agent {
        AgentPlace::Sandbox(limits) => SandboxRuntime::new(*limits),
        _ => SandboxRuntime::default(),
    };
    let runtime: &dyn AgentRuntime = match &options.agent {
        AgentPlace::Sandbox(_) => {
            sandbox.probe().await.map_err(|e| e.to_string())?;
            &sandbox
        }
        AgentPlace::Unsandboxed => {
            log.warn(
                SOURCE,
                "WARNING: this agent runs without a sandbox, with the worker's rights: the server was started with --insecure-no-sandbox",
            );
            &ProcessRuntime
        }
        AgentPlace::Pod(pod) => {
            log.info(
                SOURCE,
                "The agent runs in its own container of the job's pod",
            );
            pod
        }
    };
    let run = runtime.run(request, lines);
    let (status, ()) = tokio::join!(run, forward);
    let status = status.map_err(|e| format!("starting agent {} failed: {e}", agent.name))?;
    match status.code {
        Some(0) => {
            log.info(SOURCE, format!("Agent {} finished", agent.name));
            Ok(())
        }
        Some(code) => Err(format!("agent exited with status {code}")),
        None => Err("agent was killed by a signal".to_string()),
    }
}

/// The workspace `--workspace` named: it must be an empty directory, as a fresh volume is.
fn given_workspace(dir: &Path) -> Result<PathBuf, String> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| format!("the workspace {} cannot be used: {e}", dir.display()))?;
    if entries.next().is_some() {
        return Err(format!(
            "the workspace {} is not empty; the job needs a fresh one",
            dir.display()
        ));
    }
    Ok(dir.to_path_buf())
}

fn starting_message(stage: &str) -> String {
    match stage {
        ckrv_pipeline::CLONE => "Cloning repository...".to_string(),
        ckrv_pipeline::DIFF => "Computing the diff...".to_string(),
        ckrv_pipeline::UPLOAD => "Uploading the result...".to_string(),
        other => format!("Running step {other}..."),
    }
}

/// The stage's component: built in, or the operator's, read from the API (or the local
/// pipeline) by digest.
async fn component_of(
    source_of: &StageSource<'_>,
    stage: &PipelineStage,
) -> Result<Cow<'static, [u8]>, String> {
    let source = stage.source.as_deref().unwrap_or_default();
    match stage.kind {
        StageKind::Builtin => builtin_component(source).map(Cow::Borrowed).ok_or_else(|| {
            format!(
                "stage {}: this worker has no built-in step `{source}`",
                stage.name
            )
        }),
        StageKind::Component => match source_of {
            StageSource::Api { client, .. } => client
                .fetch_component(source)
                .await
                .map(Cow::Owned)
                .map_err(|e| format!("stage {}: reading its component failed: {e}", stage.name)),
            StageSource::Local { pipeline } => pipeline
                .component(source)
                .map(|bytes| Cow::Owned(bytes.to_vec()))
                .ok_or_else(|| {
                    format!("stage {}: its component is not in the pipeline", stage.name)
                }),
        },
        StageKind::Agent => Err(format!("stage {} is the agent, not a step", stage.name)),
    }
}

/// Where the stage's step may connect: the API, if there is one (the host adds the job's
/// token), and the stage's allowed hosts.
fn stage_policy(
    stage: &PipelineStage,
    api: Option<&(Origin, &str)>,
) -> Result<OriginPolicy, String> {
    let mut policy = match api {
        Some((origin, token)) => OriginPolicy::deny_all().allow_with_bearer(origin.clone(), token),
        None => OriginPolicy::deny_all(),
    };
    for host in &stage.allowed_hosts {
        let origin =
            Origin::parse(host).map_err(|e| format!("stage {}: allowed_hosts: {e}", stage.name))?;
        policy = policy.allow(origin);
    }
    Ok(policy)
}

/// The stage's bounds: its own, else the worker's defaults.
fn stage_limits(stage: &PipelineStage) -> Limits {
    Limits {
        memory_bytes: stage
            .memory_mb
            .map_or(DEFAULT_LIMITS.memory_bytes, |mb| mb as usize * 1024 * 1024),
        timeout: stage.timeout_s.map_or(DEFAULT_LIMITS.timeout, |s| {
            Duration::from_secs(u64::from(s))
        }),
    }
}
