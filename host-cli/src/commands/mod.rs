//! One module per command.

mod credentials;
mod login;
mod logout;
mod logs;
mod pull;
mod run;
mod status;
mod whoami;

use crate::cli::{Cli, CloudCommand, Command};
use crate::cloud::Cloud;
use crate::config::Config;

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.api_url, cli.insecure_storage)?;
    match cli.command {
        Command::Run(args) => run::run(&config, args).await,
        Command::Status(args) => status::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Logs(args) => logs::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Pull(args) => pull::run(&mut Cloud::connect(&config).await?, args).await,
        Command::Cloud(CloudCommand::Login { with_token }) => {
            let mut cloud = Cloud::connect(&config).await?;
            if with_token {
                login::with_token(&mut cloud).await
            } else {
                login::run(&mut cloud).await
            }
        }
        Command::Cloud(CloudCommand::Logout) => {
            logout::run(&mut Cloud::connect(&config).await?).await
        }
        Command::Cloud(CloudCommand::Whoami { json }) => {
            whoami::run(&mut Cloud::connect(&config).await?, json).await
        }
        Command::Cloud(CloudCommand::Credentials(command)) => {
            credentials::run(&mut Cloud::connect(&config).await?, command).await
        }
    }
}
