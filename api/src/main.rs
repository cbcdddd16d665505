//! `ckrv-api`: the control plane's command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ckrv-api", version, about = "The Chakravarti control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (prints `listening on URL` once ready).
    Serve {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, env = "CKRV_API_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory for the SQLite database, artifacts and worker logs.
        #[arg(long, env = "CKRV_API_DATA_DIR", default_value = "ckrv-data")]
        data_dir: PathBuf,
        /// The `ckrv-orchestrator` binary started for each job.
        #[arg(long, env = "CKRV_ORCHESTRATOR", default_value = "ckrv-orchestrator")]
        orchestrator: PathBuf,
        /// Start no workers: jobs wait for workers started elsewhere.
        #[arg(long, conflicts_with = "orchestrator")]
        external_workers: bool,
        /// Base URL people use to reach this API (for the activation link).
        #[arg(long, env = "CKRV_API_PUBLIC_URL")]
        public_url: Option<String>,
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve {
            listen,
            data_dir,
            orchestrator,
            external_workers,
            public_url,
        } => {
            let dispatcher = if external_workers {
                ckrv_api::DispatcherConfig::External
            } else {
                ckrv_api::DispatcherConfig::Local { orchestrator }
            };
            let server = ckrv_api::Server::bind(ckrv_api::Config {
                listen,
                data_dir,
                dispatcher,
                public_url,
            })
            .await?;
            println!("listening on {}", server.url());
            server
                .run_until(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
        }
    }
}
