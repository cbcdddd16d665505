//! Credentials of external workers: a name, and the hash of the secret the worker presents.
//! Removing one also revokes the tokens of the jobs that worker holds, in the same
//! transaction, so every API replica refuses them at once; the job engine then re-queues or
//! fails those jobs (see `Store::lapsed_leases`).

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

    /// Removes a credential at once, and revokes the worker tokens of the running jobs it
    /// claimed: the ids of those jobs, or `None` when there is no credential of that name.
    /// A claim made with the credential is serialized with this (it holds the credential's
    /// row, see `Store::claim`), so no job can be claimed by a removed worker.
    pub async fn remove_worker_credential(
        &self,
        name: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM worker_credentials WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let jobs: Vec<String> = sqlx::query_scalar(
            "UPDATE tokens SET revoked = 1
             WHERE kind = 'worker' AND revoked = 0
               AND job_id IN (SELECT id FROM jobs WHERE state = 'running' AND worker = $1)
             RETURNING job_id",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(jobs))
    }
}
