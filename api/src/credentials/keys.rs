//! `ckrv-api keys …`: rotating the keys that seal git credentials at rest, on the same data
//! directory as `serve`. A new key seals everything again; an old one is retired once it seals
//! nothing.

use std::path::Path;

use super::secrets::{self, SecretKeys};
use crate::store::{Sealed, Store};

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    #[error(
        "key {id} still seals {count} secret(s): run `ckrv-api keys rotate` (which re-encrypts them) first"
    )]
    KeyInUse { id: String, count: i64 },
}

/// What `ckrv-api keys rotate` did.
#[derive(Debug)]
pub struct Rotation {
    pub new_key: String,
    pub resealed: usize,
    /// Older keys, still in the file until retired.
    pub older: Vec<String>,
}

/// Adds a new active key to `key_file` and re-encrypts every credential under it.
pub async fn rotate_keys(store: &Store, key_file: &Path) -> Result<Rotation, KeysError> {
    let new_key = SecretKeys::add_key(key_file)?;
    let resealed = reseal_all(store, key_file).await?;
    let keys = SecretKeys::load(key_file)?;
    Ok(Rotation {
        older: keys
            .ids()
            .into_iter()
            .filter(|id| *id != new_key)
            .map(String::from)
            .collect(),
        new_key,
        resealed,
    })
}

/// Re-encrypts every credential not under the active key; how many it did.
async fn reseal_all(store: &Store, key_file: &Path) -> Result<usize, KeysError> {
    let keys = SecretKeys::load(key_file)?;
    let mut resealed = 0;
    for (account, name, old) in store.credentials_not_under(keys.active()).await? {
        let binding = secrets::credential_binding(&account, &name);
        let value = keys.open(&old, &binding)?;
        let new = keys.seal(&binding, &value)?;
        if store.reseal_credential(&account, &name, &old, &new).await? {
            resealed += 1;
        }
    }
    for webhook in store.webhooks_not_under(keys.active()).await? {
        let binding = secrets::webhook_binding(&webhook.id);
        let reseal = |sealed: &Sealed| -> Result<Sealed, KeysError> {
            Ok(keys.seal(&binding, &keys.open(sealed, &binding)?)?)
        };
        let current = reseal(&webhook.secret)?;
        let previous = webhook
            .previous
            .as_ref()
            .map(|(sealed, _)| reseal(sealed))
            .transpose()?;
        if store
            .reseal_webhook(&webhook.id, &webhook.secret, &current, previous.as_ref())
            .await?
        {
            resealed += 1;
        }
    }
    Ok(resealed)
}

/// Each key of `key_file`, oldest first: its id, whether it is active, and how many credentials
/// it seals.
pub async fn key_usage(
    store: &Store,
    key_file: &Path,
) -> Result<Vec<(String, bool, i64)>, KeysError> {
    let keys = SecretKeys::load(key_file)?;
    let counts = store.credentials_per_key().await?;
    Ok(keys
        .ids()
        .into_iter()
        .map(|id| {
            let count = counts.iter().find(|(k, _)| k == id).map_or(0, |(_, n)| *n);
            (id.to_string(), id == keys.active(), count)
        })
        .collect())
}

/// Removes key `id` from `key_file`, once no credential is sealed under it.
pub async fn retire_key(store: &Store, key_file: &Path, id: &str) -> Result<(), KeysError> {
    if SecretKeys::load(key_file)?.active() == id {
        return Err(secrets::SecretsError::Active(id.to_string()).into());
    }
    let count = store
        .credentials_per_key()
        .await?
        .into_iter()
        .find(|(k, _)| k == id)
        .map_or(0, |(_, n)| n);
    if count > 0 {
        return Err(KeysError::KeyInUse {
            id: id.to_string(),
            count,
        });
    }
    Ok(SecretKeys::remove_key(key_file, id)?)
}
