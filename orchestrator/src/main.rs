//! `ckrv-orchestrator run --api-url URL --job-id ID`: runs one job (see docs/protocol.md). The
//! job's worker token is the first line of standard input.

use anyhow::Context;
use ckrv_orchestrator::api_client::ApiClient;
use ckrv_orchestrator::job::{JobOptions, run_job};
use ckrv_orchestrator::pipeline::Pipeline;
use ckrv_wit::types::{JobCompletion, JobState};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
        /// Pipeline definition (TOML); the built-in default when absent.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// Where the job's temporary workspace is created.
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
    },
}

/// The worker token: the first line of standard input.
fn read_token() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the worker token from standard input")?;
    let token = line.trim().to_string();
    if token.is_empty() {
        anyhow::bail!(
            "no worker token on standard input: the dispatcher writes the job's token there"
        );
    }
    Ok(token)
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
    let Command::Run {
        api_url,
        job_id,
        pipeline,
        work_dir,
        allow_local_repos,
        insecure_no_sandbox,
    } = Cli::parse().command;
    // The token arrives on standard input, never in the environment or the arguments, where
    // other processes of the same user could read it. Read once, never logged.
    let token = read_token()?;
    let api = ApiClient::new(&api_url, &job_id, &token)?;
    let pipeline = match pipeline {
        Some(path) => Pipeline::load(&path),
        None => Pipeline::default_pipeline(),
    };
    let pipeline = match pipeline {
        Ok(p) => p,
        Err(error) => {
            // The job must not stay `running` because the worker was misconfigured.
            let completion = JobCompletion {
                state: JobState::Failed,
                error_message: Some(error.to_string()),
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
            pipeline,
            work_dir,
            token,
            allow_local_repos,
            sandbox: !insecure_no_sandbox,
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
