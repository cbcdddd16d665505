//! `ckrv-orchestrator run --api-url URL --job-id ID`: runs one job (see docs/protocol.md).

use anyhow::Context;
use ckrv_orchestrator::api_client::ApiClient;
use ckrv_orchestrator::job::{JobOptions, run_job};
use ckrv_orchestrator::pipeline::Pipeline;
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
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Run {
        api_url,
        job_id,
        pipeline,
        work_dir,
    } = Cli::parse().command;
    // Read once and never logged: it only goes into the Authorization header.
    let token = std::env::var("CKRV_WORKER_TOKEN")
        .context("CKRV_WORKER_TOKEN is not set: the dispatcher passes the job's worker token")?;
    let pipeline = match pipeline {
        Some(path) => Pipeline::load(&path)?,
        None => Pipeline::default_pipeline()?,
    };
    let api = ApiClient::new(&api_url, &job_id, &token)?;
    let outcome = run_job(
        api,
        JobOptions {
            pipeline,
            work_dir,
            token,
        },
    )
    .await?;
    match outcome {
        Ok(()) => {
            tracing::info!(job_id, "job succeeded");
            Ok(())
        }
        Err(error) => {
            tracing::warn!(job_id, %error, "job failed");
            std::process::exit(1)
        }
    }
}
