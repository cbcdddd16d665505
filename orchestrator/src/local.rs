//! `ckrv-orchestrator local`: one job on this machine without an API. The same pipeline
//! stages, agent definitions and sandbox as a worker, against a repository on disk; the change
//! is written to a file for `ckrv run` to apply, and the log goes to standard error.

use std::io::Write as _;
use std::path::PathBuf;

use ckrv_pipeline::Pipeline;
use ckrv_wit::types::{Job, JobStatus, LogLevel, StageKind, WorkerJob};

use crate::logs::{JobLog, LogLines, Queued, Scrubber};
use crate::options::JobOptions;
use crate::stages::{StageSource, run_stages};

/// What to run.
pub struct LocalJob {
    pub spec: String,
    pub spec_path: Option<String>,
    /// The repository to clone: a path on this machine, or a URL.
    pub repo: String,
    pub base_branch: String,
    pub pipeline: Pipeline,
    /// Print the log as JSON lines instead of text.
    pub json_log: bool,
}

/// Runs the job; returns the change as a patch (empty when the agent changed nothing), or why
/// the job failed.
pub async fn run_local(job: LocalJob, options: &JobOptions) -> Result<String, String> {
    let spec = ckrv_agents::parse_spec(&job.spec).map_err(|e| e.to_string())?;
    let agent = ckrv_agents::resolve(&spec)
        .map_err(|e| e.to_string())?
        .agent;
    // The developer's own keys, from this environment, only those the agent declares.
    let keys: Vec<(String, String)> = agent
        .secrets
        .iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some((name.clone(), value))
        })
        .collect();
    // Stages that send the result to an API, or publish what the API holds, have nowhere to
    // send it: the patch comes back here instead.
    let stages = job
        .pipeline
        .stages
        .iter()
        .filter(|s| {
            !(s.kind == StageKind::Builtin
                && matches!(
                    s.source.as_deref(),
                    Some(ckrv_pipeline::UPLOAD | ckrv_pipeline::PUBLISH)
                ))
        })
        .cloned()
        .collect();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    let id = format!("local-{stamp:x}");
    let record = Job {
        feature_branch_name: Some(format!("ckrv/{id}")),
        id,
        status: JobStatus::Running,
        git_repo_url: job.repo,
        git_base_branch: job.base_branch,
        created_at: ckrv_wit::timestamp::now(),
        started_at: None,
        completed_at: None,
        result_status: None,
        result_summary: None,
        error_message: None,
        state: None,
        phase: None,
        agent: None,
        spec_path: job.spec_path,
        updated_at: None,
        diff_stats: None,
        diff_sha256: None,
        usage: None,
        egress_refusals: None,
        setup: None,
        publish: None,
        publication: None,
        parent_id: None,
        follow_ups: None,
        verified: None,
        verification: None,
        group_id: None,
        attempt: None,
    };
    let worker_job = WorkerJob {
        job: record,
        spec_content: job.spec,
        heartbeat_ms: 0,
        log_sequence: 0,
        pipeline: stages,
        model_access: ckrv_wit::types::ModelAccess {
            token: String::new(),
            keys: Vec::new(),
        },
        egress: agent.egress.to_string(),
        git_credential: None,
        setup_timeout_s: None,
        verify_timeout_s: None,
        fresh_setup: None,
        setup_egress: None,
        egress_internal: None,
        publish: None,
        start: None,
    };
    let scrubber = Scrubber::new(keys.iter().map(|(_, value)| value.clone()).collect());
    let (log, lines) = JobLog::scrubbing(scrubber.clone());
    let printer = tokio::spawn(print(lines, job.json_log));
    let source = StageSource::Local {
        pipeline: &job.pipeline,
        keys: &keys,
    };
    let outcome = run_stages(&source, options, &log, worker_job).await;
    match &outcome {
        Ok(_) => log.info("orchestrator", "Job succeeded"),
        Err(error) => log.write(
            LogLevel::Error,
            "orchestrator",
            format!("Job failed: {error}"),
        ),
    }
    drop(log);
    let _ = printer.await;
    let outputs = outcome.map_err(|e| scrubber.scrub(&e.to_string()))?;
    Ok(outputs
        .into_iter()
        .find(|(key, _)| key == "diff")
        .map(|(_, patch)| patch)
        .unwrap_or_default())
}

/// Writes each line to standard error as it comes, and opens each barrier (nothing is
/// waiting to be delivered).
async fn print(mut lines: LogLines, json: bool) {
    while let Some(queued) = lines.recv().await {
        match queued {
            Queued::Barrier(opened) => {
                let _ = opened.send(());
            }
            Queued::Phase(_) => {}
            queued => {
                let Some(line) = queued.into_line() else {
                    continue;
                };
                let text = if json {
                    serde_json::to_string(&line).unwrap_or_default()
                } else {
                    let time = line.timestamp.get(11..19).unwrap_or(&line.timestamp);
                    format!("[{time}] {}: {}", line.source, line.message)
                };
                let mut stderr = std::io::stderr().lock();
                let _ = writeln!(stderr, "{text}");
            }
        }
    }
}

/// Where `--out` writes: a file, or standard output for `-`.
pub fn write_patch(out: &PathBuf, patch: &str) -> std::io::Result<()> {
    if out.as_os_str() == "-" {
        std::io::stdout().lock().write_all(patch.as_bytes())
    } else {
        std::fs::write(out, patch)
    }
}
