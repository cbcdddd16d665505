//! What the operators' page reads across every account: the jobs waiting and running, and each
//! account's use this month.

use sqlx::Row;

use super::{Store, StoreError};

/// A job waiting or running, as an operator sees it.
#[derive(Debug, Clone)]
pub struct ActiveJob {
    pub id: String,
    pub account_id: String,
    pub state: String,
    pub phase: Option<String>,
    pub agent: Option<String>,
    /// The worker holding it, once claimed.
    pub worker: Option<String>,
    /// Until when its worker's lease runs; each heartbeat renews it.
    pub lease_expires_ms: Option<i64>,
    pub created_at: String,
}

/// An account's jobs and model spending since a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUsage {
    pub account_id: String,
    pub jobs: i64,
    pub cost_micros: i64,
}

impl Store {
    /// Up to `limit` jobs waiting or running in every account, oldest first.
    pub async fn active_jobs(&self, limit: u32) -> Result<Vec<ActiveJob>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, state, phase, agent, worker, lease_expires_ms, created_at
             FROM jobs WHERE state IN ('pending', 'running') ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ActiveJob {
                    id: row.try_get("id")?,
                    account_id: row.try_get("account_id")?,
                    state: row.try_get("state")?,
                    phase: row.try_get("phase")?,
                    agent: row.try_get("agent")?,
                    worker: row.try_get("worker")?,
                    lease_expires_ms: row.try_get("lease_expires_ms")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Each account's jobs created since `since_ms` and what their agents spent.
    pub async fn usage_since(&self, since_ms: i64) -> Result<Vec<AccountUsage>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, COUNT(*) AS jobs, CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost
             FROM jobs WHERE created_ms >= $1 GROUP BY account_id ORDER BY account_id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AccountUsage {
                    account_id: row.try_get("account_id")?,
                    jobs: row.try_get("jobs")?,
                    cost_micros: row.try_get("cost")?,
                })
            })
            .collect()
    }
}
