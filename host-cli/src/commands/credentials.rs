//! `ckrv cloud credentials add|list|remove`: git credentials for private repositories. The
//! secret goes to the service once, never through the command line, and never comes back.

use std::io::{IsTerminal as _, Read as _};

use anyhow::{Context as _, bail};
use ckrv_wit::types::{CredentialCreate, CredentialType, ErrorKind, GitProvider};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cli::{Cli, CloudCommand, Command, CredentialAddArgs, CredentialsCommand};
use crate::cloud::Cloud;
use crate::config::Config;
use crate::exit::Exit;
use crate::output;
use crate::plugins::Registry;

pub async fn run(cloud: &mut Cloud, command: CredentialsCommand) -> anyhow::Result<()> {
    match command {
        CredentialsCommand::Add(args) => add(cloud, args).await,
        CredentialsCommand::List { json } => list(cloud, json).await,
        CredentialsCommand::Remove { name } => {
            let ctx_name = name.clone();
            cloud
                .call(async |p, ctx| p.credentials_remove(ctx, &ctx_name).await)
                .await?;
            output::ok(format!("Credential '{name}' removed"));
            Ok(())
        }
    }
}

/// The quickstart's `ckrv cloud credentials add --name github-work --provider github`: where
/// `credentials add` has no `--host`, a git host's name given to `--provider` is the host,
/// unless a provider plugin of that name is installed. True when it took `--provider` so (the
/// plugin is then the configured one); a usage error when no host is given at all.
pub fn host_from_provider(cli: &mut Cli, config: &Config) -> anyhow::Result<bool> {
    let Command::Cloud(CloudCommand::Credentials(CredentialsCommand::Add(args))) = &mut cli.command
    else {
        return Ok(false);
    };
    if args.provider.is_some() {
        return Ok(false);
    }
    let forge = cli
        .provider
        .as_deref()
        .filter(|name| name.parse::<GitProvider>().is_ok())
        .filter(|name| !Registry::new(&config.config_dir).is_installed(name));
    let Some(forge) = forge else {
        let hosts: Vec<&str> = GitProvider::ALL.map(GitProvider::as_str).into();
        return Err(Exit::new(
            2,
            format!(
                "credentials add needs --host HOST, where the repository is hosted: one of {}",
                hosts.join(", ")
            ),
        )
        .into());
    };
    args.provider = Some(forge.to_string());
    cli.provider = None;
    Ok(true)
}

async fn add(cloud: &mut Cloud, args: CredentialAddArgs) -> anyhow::Result<()> {
    let provider: GitProvider = args
        .provider
        .as_deref()
        .context("credentials add needs --host HOST")?
        .parse()?;
    let credential_type: CredentialType = args.credential_type.replace('-', "_").parse()?;
    let value = read_secret(&args, credential_type)?;
    if args.force {
        let name = args.name.clone();
        match cloud
            .call_raw(async |p, ctx| p.credentials_remove(ctx, &name).await)
            .await?
        {
            Ok(()) => {}
            Err(e) if e.error == ErrorKind::NotFound => {}
            Err(e) => return Err(crate::cloud::describe(e)),
        }
    }
    let request = CredentialCreate {
        name: args.name.clone(),
        provider,
        credential_type,
        value: value.to_string(),
        username: args.username.clone(),
    };
    let saved = cloud
        .call(async |p, ctx| p.credentials_add(ctx, &request).await)
        .await?;
    output::ok(format!("Credential '{}' saved", saved.name));
    Ok(())
}

/// The secret: from `--from-file`, else a hidden prompt at a terminal, else standard input.
fn read_secret(
    args: &CredentialAddArgs,
    kind: CredentialType,
) -> anyhow::Result<Zeroizing<String>> {
    let what = match kind {
        CredentialType::Pat => "access token",
        CredentialType::DeployKey => "deploy key (the private key file's contents)",
    };
    let value = if let Some(path) = &args.from_file {
        Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the {what} from {}", path.display()))?,
        )
    } else if std::io::stdin().is_terminal() {
        if kind == CredentialType::DeployKey {
            bail!("a deploy key spans several lines: give it with --from-file PATH");
        }
        Zeroizing::new(
            rpassword::prompt_password(format!("Paste the {what} (hidden): "))
                .context("reading the secret at the terminal")?,
        )
    } else {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("reading the {what} from standard input"))?;
        text
    };
    if value.trim().is_empty() {
        bail!(
            "no {what} given: paste it at the prompt, pipe it to standard input, or use --from-file"
        );
    }
    Ok(value)
}

async fn list(cloud: &mut Cloud, json: bool) -> anyhow::Result<()> {
    let credentials = cloud
        .call(async |p, ctx| p.credentials_list(ctx).await)
        .await?;
    if json {
        return output::json(&credentials);
    }
    if credentials.is_empty() {
        output::line(
            "No credentials. Add one with `ckrv cloud credentials add --name NAME --provider github`",
        );
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    output::emit(format!(
        "{:<24} {:<10} {:<11} {:<16} {}",
        "NAME", "PROVIDER", "TYPE", "CREATED", "LAST USED"
    ));
    for c in credentials {
        output::emit(output::printable(&format!(
            "{:<24} {:<10} {:<11} {:<16} {}",
            c.name,
            c.provider.as_str(),
            c.credential_type.as_str().replace('_', "-"),
            output::relative(&c.created_at, now),
            c.last_used_at
                .as_deref()
                .map_or_else(|| "never".to_string(), |t| output::relative(t, now)),
        )));
    }
    Ok(())
}
