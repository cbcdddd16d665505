//! One module per command.

mod cancel;
mod credentials;
mod diff;
mod env;
mod list;
mod login;
mod logout;
mod logs;
mod plugin;
mod plugin_check;
mod pull;
mod run;
mod status;
mod wait;
mod webhooks;
mod whoami;

use clap::CommandFactory as _;

use crate::cli::{Cli, CloudCommand, Command};
use crate::cloud::Cloud;
use crate::config::Config;

pub async fn dispatch(mut cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(
        cli.provider.clone(),
        cli.api_url.clone(),
        cli.insecure_storage,
    )?;
    if credentials::host_from_provider(&mut cli, &config)? {
        // `--provider` named the git host: the plugin is the configured one.
        config = Config::load(None, cli.api_url.clone(), cli.insecure_storage)?;
    }
    match cli.command {
        Command::Run(args) => run::run(&config, args).await,
        Command::Status(args) => status::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Logs(args) => logs::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Pull(args) => pull::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Diff(args) => diff::run(&mut Cloud::connect(&config).await?, args).await,
        Command::List(args) => list::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Cancel(args) => cancel::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Wait(args) => wait::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Plugin(command) => plugin::run(&config, command).await,
        Command::Env(command) => env::run(&mut Cloud::connect(&config).await?, command).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ckrv", &mut std::io::stdout());
            Ok(())
        }
        Command::Cloud(CloudCommand::Login {
            with_token,
            no_browser,
        }) => {
            let mut cloud = Cloud::connect(&config).await?;
            if with_token {
                login::with_token(&mut cloud).await
            } else {
                login::run(&mut cloud, !no_browser).await
            }
        }
        Command::Cloud(CloudCommand::Logout { revoke }) => {
            logout::run(&mut Cloud::connect(&config).await?, revoke).await
        }
        Command::Cloud(CloudCommand::Whoami { json }) => {
            whoami::run(&mut Cloud::connect(&config).await?, json).await
        }
        Command::Cloud(CloudCommand::Credentials(command)) => {
            credentials::run(&mut Cloud::connect(&config).await?, command).await
        }
        Command::Cloud(CloudCommand::Webhooks(command)) => {
            webhooks::run(&mut Cloud::connect(&config).await?, command).await
        }
    }
}
