//! Device codes and tokens, stored only as hashes of the secrets.

use sqlx::Row;

use super::{Store, StoreError};

/// What polling a device code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// No such code, or its tokens were already issued.
    Unknown,
    Expired,
    Pending,
    /// Polled faster than the advertised interval.
    SlowDown,
    /// Approved; this poll consumed the code.
    Approved {
        account_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
    Worker,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
            Self::Worker => "worker",
        }
    }
}

/// Whom a live token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    Account(String),
    /// A worker token: it may act on this job only.
    Worker {
        job_id: String,
    },
}

impl Store {
    pub async fn create_device_code(
        &self,
        device_code_hash: &str,
        user_code: &str,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_codes (device_code_hash, user_code, expires_ms) VALUES (?, ?, ?)",
        )
        .bind(device_code_hash)
        .bind(user_code)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether `user_code` awaits approval.
    pub async fn user_code_pending(
        &self,
        user_code: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM device_codes
             WHERE user_code = ? AND account_id IS NULL AND consumed = 0 AND expires_ms > ?",
        )
        .bind(user_code)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Approves a pending, unexpired user code for `account_id`; false when there is none.
    pub async fn approve_user_code(
        &self,
        user_code: &str,
        account_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_codes SET account_id = ?
             WHERE user_code = ? AND account_id IS NULL AND consumed = 0 AND expires_ms > ?",
        )
        .bind(account_id)
        .bind(user_code)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One poll of the device flow; an approved code is consumed by the first poll that sees it.
    pub async fn poll_device_code(
        &self,
        device_code_hash: &str,
        now_ms: i64,
        min_interval_ms: i64,
    ) -> Result<DevicePoll, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT account_id, expires_ms, last_poll_ms, consumed FROM device_codes
             WHERE device_code_hash = ?",
        )
        .bind(device_code_hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(DevicePoll::Unknown);
        };
        let consumed: i64 = row.try_get("consumed")?;
        let expires_ms: i64 = row.try_get("expires_ms")?;
        let last_poll_ms: Option<i64> = row.try_get("last_poll_ms")?;
        let account_id: Option<String> = row.try_get("account_id")?;
        if consumed != 0 {
            return Ok(DevicePoll::Unknown);
        }
        if expires_ms <= now_ms {
            return Ok(DevicePoll::Expired);
        }
        sqlx::query("UPDATE device_codes SET last_poll_ms = ? WHERE device_code_hash = ?")
            .bind(now_ms)
            .bind(device_code_hash)
            .execute(&self.pool)
            .await?;
        let Some(account_id) = account_id else {
            let too_soon = last_poll_ms.is_some_and(|last| now_ms - last < min_interval_ms);
            return Ok(if too_soon {
                DevicePoll::SlowDown
            } else {
                DevicePoll::Pending
            });
        };
        let claimed = sqlx::query(
            "UPDATE device_codes SET consumed = 1 WHERE device_code_hash = ? AND consumed = 0",
        )
        .bind(device_code_hash)
        .execute(&self.pool)
        .await?;
        Ok(if claimed.rows_affected() == 1 {
            DevicePoll::Approved { account_id }
        } else {
            DevicePoll::Unknown
        })
    }

    pub async fn insert_token(
        &self,
        token_hash: &str,
        kind: TokenKind,
        owner: &TokenOwner,
        pair_hash: Option<&str>,
        expires_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let (account_id, job_id) = match owner {
            TokenOwner::Account(id) => (Some(id.as_str()), None),
            TokenOwner::Worker { job_id } => (None, Some(job_id.as_str())),
        };
        sqlx::query(
            "INSERT INTO tokens (token_hash, kind, account_id, job_id, pair_hash, expires_ms)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(account_id)
        .bind(job_id)
        .bind(pair_hash)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The owner of a live (unrevoked, unexpired) token of `kind`.
    pub async fn token_owner(
        &self,
        token_hash: &str,
        kind: TokenKind,
        now_ms: i64,
    ) -> Result<Option<TokenOwner>, StoreError> {
        let row = sqlx::query(
            "SELECT account_id, job_id FROM tokens
             WHERE token_hash = ? AND kind = ? AND revoked = 0
               AND (expires_ms IS NULL OR expires_ms > ?)",
        )
        .bind(token_hash)
        .bind(kind.as_str())
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let account_id: Option<String> = row.try_get("account_id")?;
        let job_id: Option<String> = row.try_get("job_id")?;
        Ok(match (account_id, job_id) {
            (Some(account_id), _) => Some(TokenOwner::Account(account_id)),
            (None, Some(job_id)) => Some(TokenOwner::Worker { job_id }),
            (None, None) => None,
        })
    }

    /// Revokes a live refresh token and the access token issued with it, returning the
    /// account. Used once: a second use of the same refresh token finds nothing.
    pub async fn take_refresh_token(
        &self,
        refresh_hash: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "UPDATE tokens SET revoked = 1
             WHERE token_hash = ? AND kind = 'refresh' AND revoked = 0 AND expires_ms > ?
             RETURNING account_id, pair_hash",
        )
        .bind(refresh_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let pair_hash: Option<String> = row.try_get("pair_hash")?;
        if let Some(pair_hash) = pair_hash {
            sqlx::query("UPDATE tokens SET revoked = 1 WHERE token_hash = ?")
                .bind(pair_hash)
                .execute(&self.pool)
                .await?;
        }
        Ok(row.try_get("account_id")?)
    }

    /// Revokes an access token and the refresh token issued with it.
    pub async fn revoke_session(&self, access_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE token_hash = ? OR pair_hash = ?")
            .bind(access_hash)
            .bind(access_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
