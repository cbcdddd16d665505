//! `ckrv-api keys …`: the keys that seal stored git credentials.

use clap::Subcommand;

use super::data_dir::{DataDir, open};

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Add a new active key and re-encrypt every stored credential under it (restart
    /// `serve` afterwards so it seals new credentials with it too)
    Rotate {
        #[command(flatten)]
        data: DataDir,
    },
    /// List the keys, oldest first: id, whether active, how many credentials each seals
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Remove an old key from the file, once no credential is sealed under it
    Retire {
        /// The key's id (see `ckrv-api keys list`)
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

pub(crate) async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate { data } => {
            let rotation =
                ckrv_api::credentials::keys::rotate_keys(&open(&data).await?, &data.key_file())
                    .await?;
            println!(
                "added key {} (now active); re-encrypted {} secret(s) under it",
                rotation.new_key, rotation.resealed
            );
            if !rotation.older.is_empty() {
                println!(
                    "older keys stay readable until retired: {} (`ckrv-api keys retire ID`)",
                    rotation.older.join(", ")
                );
            }
            eprintln!("restart `ckrv-api serve` so it seals new credentials with the new key");
        }
        KeysCommand::List { data } => {
            for (id, active, count) in
                ckrv_api::credentials::keys::key_usage(&open(&data).await?, &data.key_file())
                    .await?
            {
                let state = if active { "active" } else { "old" };
                println!("{id}  {state:<6}  {count} secret(s)");
            }
        }
        KeysCommand::Retire { id, data } => {
            ckrv_api::credentials::keys::retire_key(&open(&data).await?, &data.key_file(), &id)
                .await?;
            println!("retired key {id}");
        }
    }
    Ok(())
}
