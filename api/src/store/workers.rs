//! Credentials of external workers: a name, and the hash of the secret the worker presents.

use sqlx::Row;

use super::{Store, StoreError};

/// An external worker's credential, as `ckrv-api workers list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCredential {
    pub name: String,
    pub created_ms: i64,
    pub last_claim_ms: Option<i64>,
}

impl Store {
    /// Stores a new credential; false when the name is taken.
    pub async fn add_worker_credential(
        &self,
        name: &str,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO worker_credentials (name, token_hash, created_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(token_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The worker a credential belongs to, noting that it claimed now.
    pub async fn worker_by_credential(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let name = sqlx::query_scalar(
            "UPDATE worker_credentials SET last_claim_ms = $1 WHERE token_hash = $2 RETURNING name",
        )
        .bind(now_ms)
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(name)
    }

    pub async fn worker_credentials(&self) -> Result<Vec<WorkerCredential>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, created_ms, last_claim_ms FROM worker_credentials ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WorkerCredential {
                    name: row.try_get("name")?,
                    created_ms: row.try_get("created_ms")?,
                    last_claim_ms: row.try_get("last_claim_ms")?,
                })
            })
            .collect()
    }

    /// Removes a credential at once; false when there is none of that name.
    pub async fn remove_worker_credential(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM worker_credentials WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
