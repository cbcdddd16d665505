//! The model gateway's records: which running job a model token stands for, and what each
//! job's agent spent.

use ckrv_wit::types::{ModelUsage, SubscriptionTier};
use sqlx::Row;

use super::{Store, StoreError};

/// The running job a model token stands for.
#[derive(Debug, Clone)]
pub struct ModelGrant {
    pub job_id: String,
    pub account_id: String,
    /// Its account's tier, which the operator's budgets go by.
    pub tier: SubscriptionTier,
    /// The job's spec: its agent declares the routes the token may use.
    pub spec: String,
    /// What the job's agent has spent so far.
    pub spent: SpentUsage,
    /// The egress policy of the job's phase when it is not the job's own: while in `setup`,
    /// the one its setup runs under; while `verifying`, `none` (docs/verification.md).
    pub setup_egress: Option<String>,
    /// The job is in phase `verifying`: its check has no model access.
    pub verifying: bool,
}

/// Usage in the units the store keeps: whole micro-dollars, so sums are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpentUsage {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

impl SpentUsage {
    /// As the API shows it: `None` before the first request.
    pub fn shown(self) -> Option<ModelUsage> {
        (self.requests > 0).then(|| ModelUsage {
            requests: self.requests,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_usd: self.cost_micros as f64 / 1_000_000.0,
        })
    }
}

/// A counter column, never negative, as the store keeps it.
fn counter(row: &sqlx::any::AnyRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} = {value}")))
}

fn spent_from_row(row: &sqlx::any::AnyRow) -> Result<SpentUsage, StoreError> {
    Ok(SpentUsage {
        requests: counter(row, "model_requests")?,
        input_tokens: counter(row, "input_tokens")?,
        output_tokens: counter(row, "output_tokens")?,
        cost_micros: counter(row, "cost_micros")?,
    })
}

/// A job row's usage, as [`ckrv_wit::types::Job::usage`] shows it.
pub(super) fn usage_from_row(row: &sqlx::any::AnyRow) -> Result<Option<ModelUsage>, StoreError> {
    Ok(spent_from_row(row)?.shown())
}

/// A job row's count of refused connections, as [`ckrv_wit::types::Job::egress_refusals`]
/// shows it: `None` while there is none.
pub(super) fn refusals_from_row(row: &sqlx::any::AnyRow) -> Result<Option<u64>, StoreError> {
    Ok(Some(counter(row, "egress_refusals")?).filter(|n| *n > 0))
}

/// A counter's value as the store binds it: past `i64::MAX`, it stays there.
fn bound(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// The job a model token (by its hash) stands for, while it runs under the claim the
    /// token came with; `None` otherwise (unknown, ended, or claimed again since).
    pub async fn model_grant(&self, token_hash: &str) -> Result<Option<ModelGrant>, StoreError> {
        let row = sqlx::query(
            "SELECT j.id, j.account_id, a.tier, j.spec, j.model_requests, j.input_tokens,
                    j.output_tokens, j.cost_micros,
                    CASE WHEN j.phase = 'setup' THEN j.setup_egress
                         WHEN j.phase = 'verifying' THEN 'none' END AS setup_egress,
                    CASE WHEN j.phase = 'verifying' THEN 1 ELSE 0 END AS verifying
             FROM model_tokens m JOIN jobs j ON j.id = m.job_id
             JOIN accounts a ON a.id = j.account_id
             WHERE m.token_hash = $1 AND j.state = 'running'
               AND j.lease_generation = m.lease_generation",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(ModelGrant {
                job_id: row.try_get("id")?,
                account_id: row.try_get("account_id")?,
                tier: super::parse_enum("tier", row.try_get("tier")?)?,
                spec: row.try_get("spec")?,
                spent: spent_from_row(&row)?,
                setup_egress: row.try_get("setup_egress")?,
                verifying: row.try_get::<i32, _>("verifying")? != 0,
            })
        })
        .transpose()
    }

    /// What the account's jobs created since `since_ms` spent on models, in micro-dollars.
    pub async fn model_cost_since(
        &self,
        account_id: &str,
        since_ms: i64,
    ) -> Result<u64, StoreError> {
        // SUM of a BIGINT is NUMERIC on PostgreSQL: cast back to the one integer both read.
        let micros: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM jobs
             WHERE account_id = $1 AND created_ms >= $2",
        )
        .bind(account_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(micros).unwrap_or(0))
    }

    /// Adds one answered request's usage to its job's.
    pub async fn add_model_usage(
        &self,
        job_id: &str,
        usage: &SpentUsage,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET model_requests = model_requests + $1,
                             input_tokens = input_tokens + $2,
                             output_tokens = output_tokens + $3,
                             cost_micros = cost_micros + $4
             WHERE id = $5",
        )
        .bind(bound(usage.requests))
        .bind(bound(usage.input_tokens))
        .bind(bound(usage.output_tokens))
        .bind(bound(usage.cost_micros))
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps a connection the API's egress proxy refused the job's agent, for its worker to
    /// take ([`Store::take_egress_notices`]). At most [`MAX_EGRESS_NOTICES`] wait per job: an
    /// agent refused without end cannot fill the database while its worker is away.
    pub async fn add_egress_notice(&self, job_id: &str, message: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO egress_notices (job_id, message)
             SELECT $1, $2
             WHERE (SELECT COUNT(*) FROM egress_notices WHERE job_id = $1) < $3",
        )
        .bind(job_id)
        .bind(message)
        .bind(MAX_EGRESS_NOTICES)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The job's waiting notices, oldest first, removed as they are read.
    pub async fn take_egress_notices(&self, job_id: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, message FROM egress_notices WHERE job_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(job_id)
        .bind(MAX_EGRESS_NOTICES)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(Vec::new());
        };
        let last: i64 = last.try_get("id")?;
        sqlx::query("DELETE FROM egress_notices WHERE job_id = $1 AND id <= $2")
            .bind(job_id)
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(|row| Ok(row.try_get("message")?)).collect()
    }
}

/// The most refusal notices one job keeps waiting for its worker.
pub const MAX_EGRESS_NOTICES: i64 = 1000;
