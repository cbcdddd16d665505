//! Idempotency keys of job creation: which request first used a key, and the job it made.

use sqlx::Row;

use super::{Store, StoreError};

/// What an `Idempotency-Key` already stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUse {
    /// Unused until now: this request holds it and must make its job under it
    /// ([`NewJob::idempotency_key`](super::NewJob)) or let it go.
    Claimed,
    /// A request with this key is still being served.
    InFlight { same_request: bool },
    /// The key made this job.
    Made { job_id: String, same_request: bool },
}

impl Store {
    /// Claims `key` for the account's request of this digest, or says what it already stands
    /// for. One statement claims, so two concurrent requests cannot both hold the key.
    pub async fn use_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
        request_sha256: &str,
        now_ms: i64,
    ) -> Result<KeyUse, StoreError> {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idempotency_key, request_sha256, created_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (account_id, idempotency_key) DO NOTHING",
        )
        .bind(account_id)
        .bind(key)
        .bind(request_sha256)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(KeyUse::Claimed);
        }
        let row = sqlx::query(
            "SELECT request_sha256, job_id FROM idempotency_keys
             WHERE account_id = $1 AND idempotency_key = $2",
        )
        .bind(account_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // Let go between the two statements: the next try claims it.
            return Ok(KeyUse::InFlight { same_request: true });
        };
        let digest: String = row.try_get("request_sha256")?;
        let same_request = digest == request_sha256;
        let job_id: Option<String> = row.try_get("job_id")?;
        Ok(match job_id {
            Some(job_id) => KeyUse::Made {
                job_id,
                same_request,
            },
            None => KeyUse::InFlight { same_request },
        })
    }

    /// Lets go of a claimed key whose request made no job (it was refused), so that a retry
    /// is served afresh.
    pub async fn release_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys
             WHERE account_id = $1 AND idempotency_key = $2 AND job_id IS NULL",
        )
        .bind(account_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets keys first used before `before_ms`.
    pub async fn purge_idempotency_keys(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
