//! `ckrv`: the Chakravarti CLI. Cloud commands go through a provider plugin (a sandboxed
//! WebAssembly component) so backends can be swapped: the built-in `chakravarti`, or one
//! installed with `ckrv plugin install`.

mod browser;
mod cli;
mod cloud;
mod commands;
mod config;
mod exit;
mod git;
mod keyring_store;
mod output;
mod plugin_host;
mod plugins;
mod progress;
mod review;
mod session;
mod worktree;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The plugin's failed connections reach the user as errors naming the URL;
                // wasi-http's own warning about them would only repeat that.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,wasmtime_wasi_http=error")
                }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let exit = e.downcast_ref::<exit::Exit>();
            if let Some(exit::Exit {
                message: None,
                code,
            }) = exit
            {
                return ExitCode::from(*code);
            }
            // Errors may quote what a server or plugin said: never let it drive the terminal.
            eprintln!("error: {}", output::printable(&format!("{e:#}")));
            exit.map_or(ExitCode::FAILURE, |exit| ExitCode::from(exit.code))
        }
    }
}
