//! `ckrv-api`: the control plane's command line: `serve`, and `users`, `workers`, `keys` and
//! `webhooks` for administrators (one module per command under `cli/`).

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};

use cli::keys::KeysCommand;
use cli::serve::ServeArgs;
use cli::users::UsersCommand;
use cli::webhooks::WebhooksCommand;
use cli::workers::WorkersCommand;

mod cli;

#[derive(Parser)]
#[command(name = "ckrv-api", version, about = "The Chakravarti control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (prints `listening on URL` once ready).
    Serve(Box<ServeArgs>),
    /// Manage accounts: add, list, change tier, disable, issue tokens for CI
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage the credentials of external workers (`ckrv-orchestrator work` on other machines)
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Manage the keys that seal stored git credentials: rotate, list, retire
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the operator's webhooks, which take every account's job events
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Whatever this process creates (database, artifacts, worker logs) is its user's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve(args) => cli::serve::serve(*args).await,
        Command::Users(command) => cli::users::users(command).await,
        Command::Workers(command) => cli::workers::workers(command).await,
        Command::Keys(command) => cli::keys::keys(command).await,
        Command::Webhooks(command) => cli::webhooks::webhooks(command).await,
    }
}
