//! One job from start to finish: read it, run the pipeline's stages in its workspace, report.

use crate::api_client::{ApiClient, ApiClientError};
use crate::host_git::HostGit;
use crate::logs::{self, JobLog};
use crate::outbox::{self, Outgoing, Report};
use crate::pipeline::{Pipeline, StageKind};
use crate::steps::{ApiAccess, Limits, StepContext, StepEnv, StepError, StepRunner};
use ckrv_agents::{AgentRuntime, ProcessRuntime, RunRequest, SandboxRuntime, Stream};
use ckrv_wit::types::{JobCompletion, JobState, LogLevel, PhaseUpdate, WorkerJob};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SOURCE: &str = "orchestrator";

/// How to run the job.
pub struct JobOptions {
    pub pipeline: Pipeline,
    /// Parent of the temporary workspace; the system temp dir when absent.
    pub work_dir: Option<PathBuf>,
    pub token: String,
    /// Local paths and internal hosts may be cloned (development only).
    pub allow_local_repos: bool,
    /// Run the agent in its sandbox; off only when the operator said so, insecurely.
    pub sandbox: bool,
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
    let (log, rx) = JobLog::channel();
    let shipper = tokio::spawn(logs::ship(rx, reports.clone(), job.log_sequence + 1));
    let beat = Duration::from_millis(u64::from(job.heartbeat_ms.max(100)));
    let outcome = tokio::select! {
        outcome = run_stages(&api, &options, &log, job) => outcome,
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
            error_message: Some(error.clone()),
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

async fn run_stages(
    api: &ApiClient,
    options: &JobOptions,
    log: &JobLog,
    job: WorkerJob,
) -> Result<(), String> {
    let WorkerJob {
        job, spec_content, ..
    } = job;
    let feature_branch = job
        .feature_branch_name
        .clone()
        .ok_or("the API named no feature branch for the job")?;
    let front = ckrv_agents::parse_front_matter(&spec_content).map_err(|e| e.to_string())?;
    let (agent, command) = ckrv_agents::resolve(&front).map_err(|e| e.to_string())?;
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
    let workspace = job_dir.path().join("workspace");
    std::fs::create_dir(&workspace).map_err(|e| format!("creating the workspace failed: {e}"))?;
    let git = HostGit::new(
        &workspace,
        &job_dir.path().join("git"),
        options.allow_local_repos,
    )
    .map_err(|e| format!("preparing the job's git failed: {e}"))?;
    let runner = StepRunner::new(Limits::default()).map_err(|e| e.to_string())?;
    let access = ApiAccess::new(api.base_url(), &options.token);
    let mut outputs: Vec<(String, String)> = Vec::new();

    for stage in &options.pipeline.stages {
        log.phase(PhaseUpdate {
            phase: stage.phase,
            agent: Some(agent.name.clone()),
        });
        // A step may talk to the API (upload does): it starts once the API has everything
        // before it, after an outage of any length. The agent needs no API and runs on.
        if stage.kind != StageKind::Agent && !log.delivered().await {
            return Err("the API did not come back".to_string());
        }
        if stage.kind == StageKind::Agent {
            log.info(SOURCE, format!("Starting agent: {}", agent.name));
            let request = RunRequest {
                command: command.clone(),
                workspace: workspace.clone(),
                job_id: job.id.clone(),
                network: agent.network,
            };
            let (lines, mut agent_output) =
                tokio::sync::mpsc::channel::<ckrv_agents::OutputLine>(256);
            let forward = async {
                while let Some(line) = agent_output.recv().await {
                    let level = match line.stream {
                        Stream::Stdout => LogLevel::Info,
                        Stream::Stderr => LogLevel::Warn,
                    };
                    log.send(level, &agent.name, line.line).await;
                }
            };
            let sandbox = SandboxRuntime::default();
            if options.sandbox {
                sandbox.probe().await.map_err(|e| e.to_string())?;
            } else {
                log.warn(
                    SOURCE,
                    "WARNING: this agent runs without a sandbox, with the worker's rights: the server was started with --insecure-no-sandbox",
                );
            }
            let run = async {
                if options.sandbox {
                    sandbox.run(&request, lines).await
                } else {
                    ProcessRuntime.run(&request, lines).await
                }
            };
            let (status, ()) = tokio::join!(run, forward);
            let status =
                status.map_err(|e| format!("starting agent {} failed: {e}", agent.name))?;
            match status.code {
                Some(0) => log.info(SOURCE, format!("Agent {} finished", agent.name)),
                Some(code) => return Err(format!("agent exited with status {code}")),
                None => return Err("agent was killed by a signal".to_string()),
            }
            continue;
        }
        log.info(SOURCE, starting_message(&stage.name));
        let ctx = StepContext {
            job_id: job.id.clone(),
            git_repo_url: job.git_repo_url.clone(),
            git_base_branch: job.git_base_branch.clone(),
            feature_branch_name: feature_branch.clone(),
            api_url: api.base_url().to_string(),
            params: stage.params.clone(),
            inputs: outputs.clone(),
        };
        let env = StepEnv {
            name: &stage.name,
            git: &git,
            log,
            api: &access,
        };
        let result = match &stage.kind {
            StageKind::Builtin(step) => runner.run_builtin(*step, ctx, env).await,
            StageKind::Component(path) => runner.run_file(path, ctx, env).await,
            StageKind::Agent => continue,
        };
        let output = result.map_err(|e| stage_error(&stage.name, &e))?;
        log.info(&stage.name, output.summary);
        for (key, value) in output.outputs {
            outputs.retain(|(k, _)| *k != key);
            outputs.push((key, value));
        }
    }
    if let Err(e) = job_dir.close() {
        tracing::warn!(error = %e, "removing the workspace failed");
    }
    Ok(())
}

fn starting_message(stage: &str) -> String {
    match stage {
        "clone" => "Cloning repository...".to_string(),
        "diff" => "Computing the diff...".to_string(),
        "upload" => "Uploading the result...".to_string(),
        other => format!("Running step {other}..."),
    }
}

fn stage_error(stage: &str, error: &StepError) -> String {
    format!("{stage} failed: {error}")
}
