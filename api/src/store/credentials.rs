//! Git credentials: per account, unique by name, the value stored only sealed.

use ckrv_wit::types::{CredentialSummary, CredentialType, GitProvider};
use sqlx::Row;

use super::{Store, StoreError, parse_enum};

/// A value sealed by `credentials::secrets::SecretKeys::seal`, as it is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A credential about to be stored.
#[derive(Debug)]
pub struct NewCredential<'a> {
    pub account_id: &'a str,
    pub name: &'a str,
    pub provider: GitProvider,
    pub credential_type: CredentialType,
    pub username: Option<&'a str>,
    pub sealed: &'a Sealed,
    pub created_at: &'a str,
}

/// A stored credential as its job's worker gets it, still sealed.
#[derive(Debug)]
pub struct StoredCredential {
    pub provider: GitProvider,
    pub credential_type: CredentialType,
    pub username: Option<String>,
    pub sealed: Sealed,
}

impl Store {
    /// Stores the credential unless the account already has one of that name; false then.
    pub async fn insert_credential(&self, new: &NewCredential<'_>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO credentials (account_id, name, provider, credential_type, key_id, nonce,
                                      ciphertext, created_at, username)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (account_id, name) DO NOTHING",
        )
        .bind(new.account_id)
        .bind(new.name)
        .bind(new.provider.as_str())
        .bind(new.credential_type.as_str())
        .bind(&new.sealed.key_id)
        .bind(&new.sealed.nonce)
        .bind(&new.sealed.ciphertext)
        .bind(new.created_at)
        .bind(new.username)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The account's credentials by name, without their values.
    pub async fn credentials(
        &self,
        account_id: &str,
    ) -> Result<Vec<CredentialSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, provider, credential_type, created_at, last_used_at FROM credentials
             WHERE account_id = $1 ORDER BY name",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(CredentialSummary {
                    name: row.try_get("name")?,
                    provider: parse_enum("provider", row.try_get("provider")?)?,
                    credential_type: parse_enum(
                        "credential_type",
                        row.try_get("credential_type")?,
                    )?,
                    created_at: row.try_get("created_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    pub async fn credential_exists(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM credentials WHERE account_id = $1 AND name = $2")
                .bind(account_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Deletes the credential; false when the account has none of that name.
    pub async fn delete_credential(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM credentials WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks the job's credential handed to the worker of claim `generation`: true the first
    /// time for that claim, false after (or when the claim is no longer the job's).
    pub async fn take_credential_delivery(
        &self,
        job_id: &str,
        generation: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET credential_generation = $2
             WHERE id = $1 AND lease_generation = $2
               AND (credential_generation IS NULL OR credential_generation < $2)",
        )
        .bind(job_id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The sealed credential and what it is, noting its use; `None` when the account has none
    /// of that name (any more).
    pub async fn use_credential(
        &self,
        account_id: &str,
        name: &str,
        now: &str,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let row = sqlx::query(
            "UPDATE credentials SET last_used_at = $3 WHERE account_id = $1 AND name = $2
             RETURNING provider, credential_type, username, key_id, nonce, ciphertext",
        )
        .bind(account_id)
        .bind(name)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(StoredCredential {
                provider: parse_enum("provider", row.try_get("provider")?)?,
                credential_type: parse_enum("credential_type", row.try_get("credential_type")?)?,
                username: row.try_get("username")?,
                sealed: Sealed {
                    key_id: row.try_get("key_id")?,
                    nonce: row.try_get("nonce")?,
                    ciphertext: row.try_get("ciphertext")?,
                },
            })
        })
        .transpose()
    }

    /// Every credential sealed under a key other than `key_id`: (account, name, sealed).
    pub async fn credentials_not_under(
        &self,
        key_id: &str,
    ) -> Result<Vec<(String, String, Sealed)>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, name, key_id, nonce, ciphertext FROM credentials
             WHERE key_id <> $1 ORDER BY account_id, name",
        )
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("account_id")?,
                    row.try_get("name")?,
                    Sealed {
                        key_id: row.try_get("key_id")?,
                        nonce: row.try_get("nonce")?,
                        ciphertext: row.try_get("ciphertext")?,
                    },
                ))
            })
            .collect()
    }

    /// Replaces a credential's sealed value, unless it changed since `old` was read (then
    /// false: it was removed or replaced meanwhile, and is left as it is).
    pub async fn reseal_credential(
        &self,
        account_id: &str,
        name: &str,
        old: &Sealed,
        new: &Sealed,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE credentials SET key_id = $5, nonce = $6, ciphertext = $7
             WHERE account_id = $1 AND name = $2 AND key_id = $3 AND nonce = $4",
        )
        .bind(account_id)
        .bind(name)
        .bind(&old.key_id)
        .bind(&old.nonce)
        .bind(&new.key_id)
        .bind(&new.nonce)
        .bind(&new.ciphertext)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many secrets (git credentials, webhook secrets) each key seals.
    pub async fn credentials_per_key(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, COUNT(*) AS n FROM (
                 SELECT key_id FROM credentials
                 UNION ALL SELECT key_id FROM webhooks
                 UNION ALL SELECT previous_key_id AS key_id FROM webhooks
                           WHERE previous_key_id IS NOT NULL
             ) sealed GROUP BY key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key_id")?, row.try_get("n")?)))
            .collect()
    }
}
