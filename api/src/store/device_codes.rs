//! RFC 8628 device codes: issued to a client, shown to a signed-in person who approves or
//! denies them, redeemed once by the client that asked. Only hashes of the codes are stored.

use sqlx::Row;

use super::{Store, StoreError};

/// What polling a device code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// No such code for this client, or its tokens were already issued.
    Unknown,
    Expired,
    Pending,
    /// Polled faster than the advertised interval.
    SlowDown,
    /// The person refused.
    Denied,
    /// Approved; this poll consumed the code.
    Approved {
        account_id: String,
    },
}

/// A device code as it is created.
#[derive(Debug)]
pub struct NewDeviceCode<'a> {
    pub device_code_hash: &'a str,
    pub user_code: &'a str,
    pub client_id: &'a str,
    /// The address the request came from, shown to the person approving it.
    pub requested_from: &'a str,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// A request awaiting a person's decision, as /activate shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub user_code: String,
    pub client_id: String,
    pub requested_from: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// The condition of a code still waiting for a decision; `now` is the parameter (such as `$2`) holding
/// the time in milliseconds.
fn awaiting(now: &str) -> String {
    format!("account_id IS NULL AND denied = 0 AND consumed = 0 AND expires_ms > {now}")
}

impl Store {
    pub async fn create_device_code(&self, new: &NewDeviceCode<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_codes (device_code_hash, user_code, client_id, requested_from,
                                       created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new.device_code_hash)
        .bind(new.user_code)
        .bind(new.client_id)
        .bind(new.requested_from)
        .bind(new.created_ms)
        .bind(new.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The request behind `user_code`, while it awaits a decision.
    pub async fn pending_request(
        &self,
        user_code: &str,
        now_ms: i64,
    ) -> Result<Option<PendingRequest>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT user_code, client_id, requested_from, created_ms, expires_ms
             FROM device_codes WHERE user_code = $1 AND {}",
            awaiting("$2")
        ))
        .bind(user_code)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(PendingRequest {
                user_code: row.try_get("user_code")?,
                client_id: row.try_get("client_id")?,
                requested_from: row.try_get("requested_from")?,
                created_ms: row.try_get("created_ms")?,
                expires_ms: row.try_get("expires_ms")?,
            })
        })
        .transpose()
    }

    /// Approves a waiting code for `account_id`; false when there is none.
    pub async fn approve_user_code(
        &self,
        user_code: &str,
        account_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE device_codes SET account_id = $1 WHERE user_code = $2 AND {}",
            awaiting("$3")
        ))
        .bind(account_id)
        .bind(user_code)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Refuses a waiting code; false when there is none.
    pub async fn deny_user_code(&self, user_code: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE device_codes SET denied = 1 WHERE user_code = $1 AND {}",
            awaiting("$2")
        ))
        .bind(user_code)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One poll of the device flow by `client_id`; an approved code is consumed by the first
    /// poll that sees it. A code issued to another client is unknown to this one.
    pub async fn poll_device_code(
        &self,
        device_code_hash: &str,
        client_id: &str,
        now_ms: i64,
        min_interval_ms: i64,
    ) -> Result<DevicePoll, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT account_id, expires_ms, last_poll_ms, consumed, denied FROM device_codes
             WHERE device_code_hash = $1 AND client_id = $2",
        )
        .bind(device_code_hash)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(DevicePoll::Unknown);
        };
        let consumed: i64 = row.try_get("consumed")?;
        let denied: i64 = row.try_get("denied")?;
        let expires_ms: i64 = row.try_get("expires_ms")?;
        let last_poll_ms: Option<i64> = row.try_get("last_poll_ms")?;
        let account_id: Option<String> = row.try_get("account_id")?;
        if consumed != 0 {
            return Ok(DevicePoll::Unknown);
        }
        if denied != 0 {
            return Ok(DevicePoll::Denied);
        }
        if expires_ms <= now_ms {
            return Ok(DevicePoll::Expired);
        }
        sqlx::query("UPDATE device_codes SET last_poll_ms = $1 WHERE device_code_hash = $2")
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
            "UPDATE device_codes SET consumed = 1 WHERE device_code_hash = $1 AND consumed = 0",
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

    /// Deletes device codes that expired before `before_ms`; returns how many.
    pub async fn purge_device_codes(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM device_codes WHERE expires_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
