//! `ckrv-egress-bridge`: the first process of an agent's sandbox when its job allows egress.
//! It gives the agent a proxy on the sandbox's loopback, relayed to the worker's egress proxy
//! on a Unix socket, runs the agent and exits as it did (see `ckrv_agents::egress::bridge`).
//! Its own messages go to standard error, so they reach the job log with the agent's.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = ckrv_agents::egress::BRIDGE_PROGRAM,
    version,
    about = "Runs a command with a TCP proxy address relayed to an egress proxy's Unix socket"
)]
struct Cli {
    /// The address to listen on, inside the sandbox (its loopback)
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The egress proxy's Unix socket
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// A loopback address of the worker's to answer on here too, tunnelled to the same
    /// address there (repeatable)
    #[arg(long = "forward", value_name = "ADDR")]
    forwards: Vec<SocketAddr>,
    /// The command to run, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| {
            let config = ckrv_agents::egress::BridgeConfig {
                listen: cli.listen,
                socket: cli.socket,
                forwards: cli.forwards,
            };
            runtime.block_on(ckrv_agents::egress::run_bridge(config, &cli.command))
        });
    match outcome {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("{}: {error}", ckrv_agents::egress::BRIDGE_PROGRAM);
            // As a shell says a command could not be run.
            ExitCode::from(127)
        }
    }
}
