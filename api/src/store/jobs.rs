//! Jobs: created by a user within their quota, advanced by their worker.

use ckrv_wit::types::{Job, JobPhase, JobStatus, ResultSummary};
use sqlx::Row;

use super::{Store, StoreError, parse_enum};

/// SQL condition true while a job can still change.
const LIVE: &str = "status NOT IN ('succeeded', 'failed', 'timeout', 'cancelled')";

const COLUMNS: &str = "seq, id, account_id, spec, spec_path, repo_url, base_branch, status, \
     phase, agent, feature_branch, result_json, error, has_diff, created_at, updated_at, \
     started_at, finished_at";

/// A job with what only the API sees.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub job: Job,
    pub seq: i64,
    pub account_id: String,
    pub spec: String,
    pub has_diff: bool,
}

/// A job about to be created.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub spec: &'a str,
    pub spec_path: &'a str,
    pub repo_url: &'a str,
    pub base_branch: &'a str,
    pub credential: Option<&'a str>,
    pub feature_branch: &'a str,
    pub created_ms: i64,
    pub created_at: &'a str,
}

/// What a job id (or prefix) names.
#[derive(Debug)]
pub enum JobLookup {
    Found(Box<JobRow>),
    NotFound,
    /// The prefix matches more than one job.
    Ambiguous,
}

impl Store {
    /// Creates the job only if the account has created fewer than `limit` jobs since
    /// `cycle_start_ms`; one statement, so concurrent requests cannot both take the last slot.
    /// `None` means the quota is used up.
    pub async fn insert_job_within_quota(
        &self,
        new: &NewJob<'_>,
        limit: u32,
        cycle_start_ms: i64,
    ) -> Result<Option<JobRow>, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, account_id, spec, spec_path, repo_url, base_branch, credential,
                               status, phase, feature_branch, created_ms, created_at, updated_at)
             SELECT ?, ?, ?, ?, ?, ?, ?, 'pending', 'queued', ?, ?, ?, ?
             WHERE (SELECT COUNT(*) FROM jobs WHERE account_id = ? AND created_ms >= ?) < ?",
        )
        .bind(new.id)
        .bind(new.account_id)
        .bind(new.spec)
        .bind(new.spec_path)
        .bind(new.repo_url)
        .bind(new.base_branch)
        .bind(new.credential)
        .bind(new.feature_branch)
        .bind(new.created_ms)
        .bind(new.created_at)
        .bind(new.created_at)
        .bind(new.account_id)
        .bind(cycle_start_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        self.job(new.id).await
    }

    pub async fn jobs_created_since(
        &self,
        account_id: &str,
        since_ms: i64,
    ) -> Result<u32, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE account_id = ? AND created_ms >= ?",
        )
        .bind(account_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// A job by its full id, whoever owns it.
    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// One of the account's jobs by id or unique id prefix. `prefix` must hold only id
    /// characters (the caller checks), so it cannot carry LIKE wildcards.
    pub async fn find_job(&self, account_id: &str, prefix: &str) -> Result<JobLookup, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE account_id = ? AND id LIKE ? || '%' LIMIT 2"
        ))
        .bind(account_id)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        Ok(match rows.as_slice() {
            [] => JobLookup::NotFound,
            [row] => JobLookup::Found(Box::new(job_from_row(row)?)),
            _ => JobLookup::Ambiguous,
        })
    }

    /// The account's jobs, newest first, older than `before_seq` when given.
    pub async fn list_jobs(
        &self,
        account_id: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE account_id = ? AND seq < ?
             ORDER BY seq DESC LIMIT ?"
        ))
        .bind(account_id)
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Marks a pending job running (the worker has picked it up).
    pub async fn start_job(&self, id: &str, now: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ?
             WHERE id = ? AND status = 'pending'",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the phase of a live job; false if the job is already terminal.
    pub async fn set_phase(
        &self,
        id: &str,
        phase: JobPhase,
        agent: Option<&str>,
        now: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE jobs SET phase = ?, agent = COALESCE(?, agent), updated_at = ?
             WHERE id = ? AND {LIVE}"
        ))
        .bind(phase.as_str())
        .bind(agent)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the result summary of a live job; false if the job is already terminal.
    pub async fn set_result(
        &self,
        id: &str,
        summary: &ResultSummary,
        now: &str,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(summary)
            .map_err(|e| StoreError::Corrupt(format!("result summary: {e}")))?;
        let done = sqlx::query(&format!(
            "UPDATE jobs SET result_json = ?, updated_at = ? WHERE id = ? AND {LIVE}"
        ))
        .bind(json)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that the job's diff is in the artifact store.
    pub async fn set_has_diff(&self, id: &str, now: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE jobs SET has_diff = 1, updated_at = ? WHERE id = ? AND {LIVE}"
        ))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a live job with a terminal `status`; false if it had already ended.
    pub async fn finish_job(
        &self,
        id: &str,
        status: JobStatus,
        error: Option<&str>,
        now: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE jobs SET status = ?, phase = 'finished', error = ?, finished_at = ?,
                             updated_at = ?
             WHERE id = ? AND {LIVE}"
        ))
        .bind(status.as_str())
        .bind(error)
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn job_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<JobRow, StoreError> {
    let result_json: Option<String> = row.try_get("result_json")?;
    let result = result_json
        .map(|json| {
            serde_json::from_str::<ResultSummary>(&json)
                .map_err(|e| StoreError::Corrupt(format!("result_json: {e}")))
        })
        .transpose()?;
    let has_diff: i64 = row.try_get("has_diff")?;
    Ok(JobRow {
        seq: row.try_get("seq")?,
        account_id: row.try_get("account_id")?,
        spec: row.try_get("spec")?,
        has_diff: has_diff != 0,
        job: Job {
            id: row.try_get("id")?,
            status: parse_enum("status", row.try_get("status")?)?,
            phase: parse_enum("phase", row.try_get("phase")?)?,
            agent: row.try_get("agent")?,
            spec_path: row.try_get("spec_path")?,
            repo_url: row.try_get("repo_url")?,
            base_branch: row.try_get("base_branch")?,
            feature_branch: row.try_get("feature_branch")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            result,
            error: row.try_get("error")?,
        },
    })
}
