//! An external worker: claims jobs from the API with its operator-issued credential and runs
//! them one after another, until the credential stops working.

use std::time::Duration;

use crate::api_client::{ApiClient, ApiClientError};
use crate::job::run_job;
use crate::options::JobOptions;
use crate::place::AgentPlace;
use crate::step_host::StepRunner;

/// How the jobs a worker claims are run.
pub struct WorkOptions {
    /// Shared by every job, so each step component is compiled once.
    pub steps: std::sync::Arc<StepRunner>,
    pub work_dir: Option<std::path::PathBuf>,
    pub allow_local_repos: bool,
    /// Where each job's agent runs (never a job pod's container: a pod runs one job).
    pub agent: AgentPlace,
    pub agent_bin: Option<std::path::PathBuf>,
    pub egress_bridge: Option<std::path::PathBuf>,
    /// The worker's unpacked copies of snapshots, shared by its jobs.
    pub warm: Option<std::sync::Arc<crate::warm::WarmSnapshots>>,
    /// How long to wait before asking again when nothing waits.
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error(
        "the API refused this worker's credential ({0}); ask an operator for a new one (`ckrv-api workers add NAME`)"
    )]
    Refused(String),
    #[error(transparent)]
    Api(#[from] ApiClientError),
    #[error(transparent)]
    Report(#[from] anyhow::Error),
}

/// Claims and runs jobs until the API refuses the credential (then the error says so).
pub async fn work(api_url: &str, credential: &str, options: &WorkOptions) -> Result<(), WorkError> {
    let claimer = ApiClient::new(api_url, "", credential)?;
    loop {
        let claim = match claimer.claim().await {
            Ok(claim) => claim,
            Err(ApiClientError::Status {
                status: 401 | 403,
                body,
                ..
            }) => {
                return Err(WorkError::Refused(body));
            }
            Err(e) => return Err(e.into()),
        };
        let Some(claim) = claim else {
            tokio::time::sleep(options.poll).await;
            continue;
        };
        tracing::info!(job_id = claim.job_id, "claimed a job");
        let api = ApiClient::new(api_url, &claim.job_id, &claim.token)?;
        let outcome = run_job(
            api,
            JobOptions {
                steps: options.steps.clone(),
                work_dir: options.work_dir.clone(),
                workspace: None,
                token: claim.token.clone(),
                allow_local_repos: options.allow_local_repos,
                agent: options.agent.clone(),
                agent_bin: options.agent_bin.clone(),
                egress_bridge: options.egress_bridge.clone(),
                warm: options.warm.clone(),
            },
        )
        .await;
        match outcome {
            Ok(Ok(())) => tracing::info!(job_id = claim.job_id, "job succeeded"),
            Ok(Err(error)) => tracing::warn!(job_id = claim.job_id, %error, "job failed"),
            // The API could not be told: its lease will lapse and the job will be settled there.
            Err(error) => tracing::error!(job_id = claim.job_id, %error, "job not reported"),
        }
    }
}
