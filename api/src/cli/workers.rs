//! `ckrv-api workers …`: the credentials of external workers.

use ckrv_api::identity::admin;
use clap::Subcommand;

use super::data_dir::{DataDir, open};

#[derive(Subcommand)]
pub(crate) enum WorkersCommand {
    /// Issue a credential for a worker; it is printed once, alone on stdout
    Add {
        /// What to call the worker (letters, digits, '-', '_', '.')
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// List the workers' credentials: name, when issued, when last used to claim
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Revoke a worker's credential at once, and the tokens of the jobs it is running (the
    /// server re-queues each, or fails it if it got past cloning)
    Remove {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
}

pub(crate) async fn workers(command: WorkersCommand) -> anyhow::Result<()> {
    match command {
        WorkersCommand::Add { name, data } => {
            let secret = admin::add_worker(&open(&data).await?, &name).await?;
            eprintln!(
                "issued a credential for worker {name}; it is shown only now. Give it to the \
                 worker on its standard input: ckrv-orchestrator work --api-url URL < FILE"
            );
            println!("{secret}");
        }
        WorkersCommand::List { json, data } => {
            let workers = open(&data).await?.worker_credentials().await?;
            let when = |ms: Option<i64>| {
                ms.and_then(|ms| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
                })
                .map_or_else(|| "never".to_owned(), ckrv_api::clock::rfc3339)
            };
            if json {
                let rows: Vec<serde_json::Value> = workers
                    .iter()
                    .map(|w| {
                        serde_json::json!({
                            "name": w.name,
                            "created_at": when(Some(w.created_ms)),
                            "last_claim_at": w.last_claim_ms.map(|ms| when(Some(ms))),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<32} {:<22} LAST CLAIM", "NAME", "ISSUED");
                for w in &workers {
                    println!(
                        "{:<32} {:<22} {}",
                        w.name,
                        when(Some(w.created_ms)),
                        when(w.last_claim_ms)
                    );
                }
            }
        }
        WorkersCommand::Remove { name, data } => {
            let jobs = admin::remove_worker(&open(&data).await?, &name).await?;
            println!("removed worker {name}; its credential no longer claims jobs");
            if !jobs.is_empty() {
                println!(
                    "revoked its hold on {} running job(s): {}; the server queues each again, \
                     or fails it if it got past cloning",
                    jobs.len(),
                    jobs.join(", ")
                );
            }
        }
    }
    Ok(())
}
