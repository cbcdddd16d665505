//! One job from start to finish: read it, run the pipeline's stages (`stages`), report
//! everything to the API while keeping the job's lease.

use crate::api_client::{ApiClient, ApiClientError};
use crate::logs::{self, JobLog, Scrubber};
use crate::options::{JobOptions, work_tempdir};
use crate::outbox::{self, Outgoing, Report};
use crate::stages::{StageSource, run_stages};
use ckrv_wit::types::{HeartbeatAnswer, JobCompletion, JobState};
use std::time::Duration;

const SOURCE: &str = "orchestrator";

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
    // The model token is no key, but it spends the job's budget: the log never shows it.
    let scrubber = Scrubber::new(vec![job.model_access.token.clone()]);
    let (log, rx) = JobLog::scrubbing(scrubber.clone());
    let shipper = tokio::spawn(logs::ship(rx, reports.clone(), job.log_sequence + 1));
    let beat = Duration::from_millis(u64::from(job.heartbeat_ms.max(100)));
    let source = StageSource::Api {
        client: &api,
        token: &options.token,
    };
    let stages = async {
        let outcome = run_stages(&source, &options, &log, job).await;
        // The worker's copy of a snapshot for its next job, made while the agent ran, is
        // finished before the end is told: the dispatcher stops the worker then.
        if let Some(warm) = &options.warm {
            warm.settle().await;
        }
        outcome
    };
    let outcome = tokio::select! {
        outcome = stages => outcome.map(drop).map_err(|e| e.to_string()),
        ended = heartbeat(&api, beat, Some(&log)) => {
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
    // Refusals of the agent's last moments, from the API's egress proxy, before the end.
    if let Ok(answer) = api.heartbeat().await {
        log_refusals(&log, answer);
    }
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
        ended = heartbeat(&api, beat, None) => {
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

/// Each connection the API's egress proxy refused the agent: one line under the `egress`
/// source, which the API counts for `ckrv status`.
fn log_refusals(log: &JobLog, answer: HeartbeatAnswer) {
    for refusal in answer.egress_refusals {
        log.warn(ckrv_wit::protocol::EGRESS_LOG_SOURCE, refusal);
    }
}

/// Renews the job's lease every `beat` until the API says the job is no longer this worker's
/// (409: cancelled, timed out, given to another; 401: its token revoked), and returns why.
/// Failed attempts are retried: the API may be restarting. The refusals each answer carries go
/// to `log` while there is one.
async fn heartbeat(api: &ApiClient, beat: Duration, log: Option<&JobLog>) -> String {
    let mut ticks = tokio::time::interval(beat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match api.heartbeat().await {
            Ok(answer) => {
                if let Some(log) = log {
                    log_refusals(log, answer);
                }
            }
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
