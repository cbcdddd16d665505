//! `ckrv-api users …`: accounts, their tiers and their personal access tokens.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;
use ckrv_api::identity::accounts::NewUser;
use ckrv_api::identity::admin;
use ckrv_api::store::Account;
use ckrv_wit::types::SubscriptionTier;
use clap::Subcommand;
use zeroize::Zeroizing;

use super::data_dir::{DataDir, LinkBase, open};

#[derive(Subcommand)]
pub(crate) enum UsersCommand {
    /// Add an account; without --password-stdin it prints a one-time link to set a password
    Add {
        email: String,
        /// How the person is addressed [default: the email's local part]
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "free", value_parser = tier)]
        tier: SubscriptionTier,
        /// May administer the service
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (never pass it as an argument)
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        link: LinkBase,
        #[command(flatten)]
        data: DataDir,
    },
    /// List every account
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Change an account's subscription tier (it sets the monthly quota)
    SetTier {
        email: String,
        #[arg(value_parser = tier)]
        tier: SubscriptionTier,
        #[command(flatten)]
        data: DataDir,
    },
    /// Disable an account: its tokens are revoked and its web sessions end at once (enabling
    /// it again does not bring them back)
    Disable {
        email: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Enable a disabled account again; it signs in anew and gets new tokens
    Enable {
        email: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Print a one-time link at which the account sets a new password
    ResetPassword {
        email: String,
        #[command(flatten)]
        link: LinkBase,
        #[command(flatten)]
        data: DataDir,
    },
    /// Issue a personal access token for CI; prints the token alone on standard output
    Token {
        email: String,
        /// What the token is for
        #[arg(long, default_value = "ci")]
        name: String,
        /// How long it lives, at least a minute: e.g. `90d`, `12h`, or `never`
        #[arg(long, default_value = "90d", value_parser = lifetime)]
        expires: Lifetime,
        #[command(flatten)]
        data: DataDir,
    },
    /// List an account's personal access tokens (never the secrets), each active, expired or
    /// revoked
    Tokens {
        email: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Revoke a personal access token by its id (`pat_…`)
    RevokeToken {
        email: String,
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Clone, Copy)]
pub(crate) struct Lifetime(Option<Duration>);

/// The shortest lifetime `users token --expires` takes: a token that expires before anyone can
/// use it is a mistake, not a choice.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// `--expires`: a duration of at least [`MIN_TOKEN_LIFETIME`], or `never`.
pub(crate) fn lifetime(text: &str) -> Result<Lifetime, String> {
    if text == "never" {
        return Ok(Lifetime(None));
    }
    match humantime::parse_duration(text) {
        Ok(d) if d >= MIN_TOKEN_LIFETIME => Ok(Lifetime(Some(d))),
        Ok(_) => Err(format!(
            "--expires must be at least {}: give e.g. 90d, 12h or 30m, or `never`",
            humantime::format_duration(MIN_TOKEN_LIFETIME)
        )),
        Err(e) => Err(format!(
            "{e}; give --expires a duration such as 90d or 12h, or `never`"
        )),
    }
}

pub(crate) fn tier(text: &str) -> Result<SubscriptionTier, String> {
    text.parse().map_err(|_| {
        let all: Vec<&str> = SubscriptionTier::ALL.map(SubscriptionTier::as_str).into();
        format!("one of {}", all.join(", "))
    })
}

pub(crate) async fn users(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add {
            email,
            name,
            tier,
            admin,
            password_stdin,
            link,
            data,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let user = NewUser {
                email,
                name,
                tier,
                admin,
                password,
            };
            let store = open(&data).await?;
            let (account, link) = admin::add_user(&store, user, link.public_url.as_deref()).await?;
            println!("added {}", describe(&account));
            if let Some(link) = link {
                println!("the person sets a password at (once, within 7 days): {link}");
            }
        }
        UsersCommand::List { json, data } => {
            let accounts = open(&data).await?.accounts().await?;
            if json {
                let rows: Vec<serde_json::Value> = accounts.iter().map(account_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<32} {:<16} {:<10} {:<6} {:<9} PASSWORD",
                    "EMAIL", "NAME", "TIER", "ADMIN", "STATUS"
                );
                for a in &accounts {
                    println!(
                        "{:<32} {:<16} {:<10} {:<6} {:<9} {}",
                        a.email,
                        a.name,
                        a.tier,
                        if a.is_admin { "yes" } else { "no" },
                        if a.disabled { "disabled" } else { "enabled" },
                        if a.has_password { "set" } else { "not set" },
                    );
                }
            }
        }
        UsersCommand::SetTier { email, tier, data } => {
            let account = admin::set_tier(&open(&data).await?, &email, tier).await?;
            println!("{}", describe(&account));
        }
        UsersCommand::Disable { email, data } => {
            let account = admin::set_disabled(&open(&data).await?, &email, true).await?;
            println!(
                "disabled {}: its tokens are revoked and its sessions ended",
                account.email
            );
        }
        UsersCommand::Enable { email, data } => {
            let account = admin::set_disabled(&open(&data).await?, &email, false).await?;
            println!(
                "enabled {}: it signs in anew (its old tokens stay revoked)",
                account.email
            );
        }
        UsersCommand::ResetPassword { email, link, data } => {
            let link =
                admin::reset_password(&open(&data).await?, &email, link.public_url.as_deref())
                    .await?;
            println!("{email} sets a new password at (once, within 7 days): {link}");
        }
        UsersCommand::Token {
            email,
            name,
            expires,
            data,
        } => {
            let (id, token) =
                admin::issue_token(&open(&data).await?, &email, &name, expires.0).await?;
            eprintln!("issued {id} for {email}; it is shown once:");
            println!("{token}");
        }
        UsersCommand::Tokens { email, json, data } => {
            let tokens = admin::tokens(&open(&data).await?, &email).await?;
            let when = |ms: i64| ckrv_api::clock::rfc3339(ckrv_api::clock::from_millis(ms));
            let now = ckrv_api::clock::millis(ckrv_api::clock::now());
            if json {
                let rows: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({"id": t.id, "name": t.name, "created_at": when(t.created_ms),
                            "expires_at": t.expires_ms.map(when), "revoked": t.revoked,
                            "status": t.status(now).as_str()})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<18} {:<16} {:<21} {:<21} STATUS",
                    "ID", "NAME", "CREATED", "EXPIRES"
                );
                for t in &tokens {
                    println!(
                        "{:<18} {:<16} {:<21} {:<21} {}",
                        t.id,
                        t.name,
                        when(t.created_ms),
                        t.expires_ms.map_or_else(|| "never".to_string(), when),
                        t.status(now).as_str()
                    );
                }
            }
        }
        UsersCommand::RevokeToken { email, id, data } => {
            admin::revoke_token(&open(&data).await?, &email, &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// The password from standard input, without the line end a pipe or a terminal adds.
pub(crate) fn read_password() -> anyhow::Result<Zeroizing<String>> {
    let mut input = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(Zeroizing::new(password.to_string()))
}

pub(crate) fn describe(account: &Account) -> String {
    format!(
        "{} ({}, {}{})",
        account.email,
        account.name,
        account.tier,
        if account.is_admin { ", admin" } else { "" }
    )
}

pub(crate) fn account_json(account: &Account) -> serde_json::Value {
    serde_json::json!({
        "id": account.id, "email": account.email, "name": account.name,
        "subscription_tier": account.tier, "admin": account.is_admin,
        "disabled": account.disabled, "password_set": account.has_password,
    })
}
