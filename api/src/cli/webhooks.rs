//! `ckrv-api webhooks …`: the operator's webhooks, which take every account's job events.

use anyhow::Context as _;
use ckrv_api::credentials::secrets::{KeyRing, SecretKeys};
use ckrv_api::store::NewWebhook;
use ckrv_api::webhooks::{self, routes::view};
use clap::Subcommand;

use super::data_dir::{DataDir, open};

#[derive(Subcommand)]
pub(crate) enum WebhooksCommand {
    /// Add a webhook for every account's job events; its secret is printed once, alone on
    /// stdout
    Add {
        /// Where events are POSTed (https:// to a public host)
        url: String,
        /// The events, comma-separated (job.queued, job.started, job.phase, job.succeeded,
        /// job.failed, job.timeout, job.cancelled, job.published), or * for all
        #[arg(long, value_delimiter = ',', default_value = "*")]
        events: Vec<String>,
        /// Allow http:// and internal hosts, as `serve --allow-local-repos` does (the server
        /// must run with it too, or deliveries are refused)
        #[arg(long)]
        allow_local_repos: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// List the operator's webhooks: id, URL, events
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Give a webhook a new secret, printed once on stdout; the old one also signs for a day
    Rotate {
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Remove a webhook and its deliveries
    Remove {
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

fn key_ring(data: &DataDir) -> anyhow::Result<KeyRing> {
    let path = data.key_file();
    let keys = SecretKeys::load(&path).with_context(|| {
        format!(
            "reading the secrets key {} (`ckrv-api serve` creates it on its first start)",
            path.display()
        )
    })?;
    Ok(KeyRing::new(path, keys))
}

pub(crate) async fn webhooks(command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::Add {
            url,
            events,
            allow_local_repos,
            data,
        } => {
            let store = open(&data).await?;
            if store.webhooks(None).await?.len() >= webhooks::MAX_WEBHOOKS {
                anyhow::bail!(
                    "the operator has {} webhooks, the most there may be; remove one first",
                    webhooks::MAX_WEBHOOKS
                );
            }
            let prepared = webhooks::prepare(&key_ring(&data)?, &url, &events, allow_local_repos)?;
            store
                .insert_webhook(&NewWebhook {
                    id: &prepared.id,
                    account_id: None,
                    url: &prepared.url,
                    events: &prepared.events,
                    secret: &prepared.sealed,
                    created_ms: ckrv_api::clock::millis(ckrv_api::clock::now()),
                })
                .await?;
            eprintln!(
                "added webhook {} for every account's {}; its signing secret (Standard \
                 Webhooks) is shown only now:",
                prepared.id,
                prepared.events.join(",")
            );
            println!("{}", *prepared.secret);
        }
        WebhooksCommand::List { json, data } => {
            let rows = open(&data).await?.webhooks(None).await?;
            let hooks: Vec<_> = rows.iter().map(view).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&hooks)?);
            } else if hooks.is_empty() {
                eprintln!("no operator webhooks; add one with `ckrv-api webhooks add URL`");
            } else {
                for hook in hooks {
                    println!("{}  {}  {}", hook.id, hook.url, hook.events.join(","));
                }
            }
        }
        WebhooksCommand::Rotate { id, data } => {
            let (secret, sealed) = webhooks::new_sealed_secret(&key_ring(&data)?, &id)?;
            let until =
                ckrv_api::clock::millis(ckrv_api::clock::now()) + webhooks::ROTATION_OVERLAP_MS;
            if !open(&data)
                .await?
                .rotate_webhook(None, &id, &sealed, until)
                .await?
            {
                anyhow::bail!("no operator webhook {id}; see them with `ckrv-api webhooks list`");
            }
            eprintln!("new secret for {id} (the old one also signs for a day):");
            println!("{}", *secret);
        }
        WebhooksCommand::Remove { id, data } => {
            if !open(&data).await?.delete_webhook(None, &id).await? {
                anyhow::bail!("no operator webhook {id}; see them with `ckrv-api webhooks list`");
            }
            println!("removed webhook {id}");
        }
    }
    Ok(())
}
