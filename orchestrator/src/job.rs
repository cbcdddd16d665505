//! One job from start to finish: read it, run the pipeline's stages in its workspace, report.

use crate::api_client::ApiClient;
use crate::logs::{self, JobLog};
use crate::pipeline::{Pipeline, StageKind};
use crate::steps::{ApiAccess, Limits, StepContext, StepEnv, StepError, StepRunner};
use ckrv_agents::{AgentRuntime, ProcessRuntime, RunRequest, Stream};
use ckrv_wit::types::{JobCompletion, JobStatus, LogLevel, PhaseUpdate, WorkerJob};
use std::path::PathBuf;

const SOURCE: &str = "orchestrator";

/// How to run the job.
pub struct JobOptions {
    pub pipeline: Pipeline,
    /// Parent of the temporary workspace; the system temp dir when absent.
    pub work_dir: Option<PathBuf>,
    pub token: String,
}

/// Runs the job and reports its end to the API. The outer error means the API could not be
/// told; the inner one is why the job failed (already reported).
pub async fn run_job(api: ApiClient, options: JobOptions) -> anyhow::Result<Result<(), String>> {
    let (log, rx) = JobLog::channel();
    let shipper = tokio::spawn(logs::ship(rx, api.clone()));
    let outcome = run_stages(&api, &options, &log).await;
    if let Err(error) = &outcome {
        log.error(SOURCE, format!("Job failed: {error}"));
    } else {
        log.info(SOURCE, "Job succeeded");
    }
    // Every line reaches the API before the job turns terminal, so followers see them all.
    drop(log);
    if let Err(e) = shipper.await {
        tracing::error!(error = %e, "log shipper panicked");
    }
    let completion = match &outcome {
        Ok(()) => JobCompletion {
            status: JobStatus::Succeeded,
            error: None,
        },
        Err(error) => JobCompletion {
            status: JobStatus::Failed,
            error: Some(error.clone()),
        },
    };
    api.complete(&completion).await?;
    Ok(outcome)
}

async fn run_stages(api: &ApiClient, options: &JobOptions, log: &JobLog) -> Result<(), String> {
    let WorkerJob { job, spec } = api
        .fetch_job()
        .await
        .map_err(|e| format!("reading the job failed: {e}"))?;
    let front = ckrv_agents::parse_front_matter(&spec).map_err(|e| e.to_string())?;
    let (agent, command) = ckrv_agents::resolve(&front).map_err(|e| e.to_string())?;
    log.info(
        SOURCE,
        format!("Job {} for {} ({})", job.id, job.repo_url, job.base_branch),
    );

    let mut builder = tempfile::Builder::new();
    builder.prefix("ckrv-job-");
    let workspace = match &options.work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| format!("creating the workspace failed: {e}"))?;
    let runner = StepRunner::new(Limits::default()).map_err(|e| e.to_string())?;
    let access = ApiAccess::new(api.base_url(), &options.token);
    let mut outputs: Vec<(String, String)> = Vec::new();

    for stage in &options.pipeline.stages {
        api.phase(&PhaseUpdate {
            phase: stage.phase,
            agent: Some(agent.name.clone()),
        })
        .await
        .map_err(|e| format!("reporting phase {} failed: {e}", stage.phase))?;
        if stage.kind == StageKind::Agent {
            log.info(SOURCE, format!("Starting agent: {}", agent.name));
            let request = RunRequest {
                command: command.clone(),
                workspace: workspace.path().to_path_buf(),
                job_id: job.id.clone(),
            };
            let source = agent.name.clone();
            let mut on_line = |line: ckrv_agents::OutputLine| {
                let level = match line.stream {
                    Stream::Stdout => LogLevel::Info,
                    Stream::Stderr => LogLevel::Warn,
                };
                log.write(level, &source, line.line);
            };
            let status = ProcessRuntime
                .run(&request, &mut on_line)
                .await
                .map_err(|e| format!("starting agent {} failed: {e}", agent.name))?;
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
            repo_url: job.repo_url.clone(),
            base_branch: job.base_branch.clone(),
            feature_branch: job.feature_branch.clone(),
            api_url: api.base_url().to_string(),
            params: stage.params.clone(),
            inputs: outputs.clone(),
        };
        let env = StepEnv {
            name: &stage.name,
            workspace: workspace.path(),
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
    if let Err(e) = workspace.close() {
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
