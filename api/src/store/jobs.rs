//! Jobs: created by a user within their quota, advanced by their worker.

use ckrv_wit::types::{
    DiffStats, Job, JobState, JobStatus, Publication, PublishMode, Verification,
};
use sqlx::Row;

use ckrv_wit::protocol::webhook_events;

use super::{Store, StoreError, parse_enum, webhooks};

pub(super) const COLUMNS: &str = "seq, id, account_id, spec, spec_path, git_repo_url, git_base_branch, \
     state, phase, agent, feature_branch_name, diff_stats_json, error_message, has_diff, diff_sha256, \
     created_at, updated_at, started_at, completed_at, lease_generation, started_ms, expired_at, logs_archived_at, logs_sha256, git_credential_name, \
     model_requests, input_tokens, output_tokens, cost_micros, egress_refusals, setup_json, no_snapshot, publish, publication_json, parent_id, verification_json, group_id, attempt";

/// A job id's length: a UUID in its hyphenated form.
pub(super) const FULL_ID_LEN: usize = 36;

/// A job with what only the API sees.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub job: Job,
    /// The full state (the job's `status` is its contract reading).
    pub state: JobState,
    pub seq: i64,
    pub account_id: String,
    pub spec: String,
    pub has_diff: bool,
    /// The current worker's claim: writes from an older one are refused.
    pub generation: i64,
    /// When a worker first started the job (deadlines count from it).
    pub started_ms: Option<i64>,
    /// When its diff and log were removed under the retention rule.
    pub expired_at: Option<String>,
    /// When its log was archived to the artifact store, which readers then use.
    pub logs_archived_at: Option<String>,
    /// The SHA-256 (hex) of the archived log as it was written; every read checks it. `None`
    /// for a log archived before digests were recorded.
    pub logs_sha256: Option<String>,
    /// The stored git credential it clones with.
    pub credential_name: Option<String>,
    /// Its setup runs afresh, restoring no snapshot.
    pub no_snapshot: bool,
}

/// A job about to be created.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub spec: &'a str,
    pub spec_path: Option<&'a str>,
    pub git_repo_url: &'a str,
    pub git_base_branch: &'a str,
    pub git_credential_name: Option<&'a str>,
    pub feature_branch_name: &'a str,
    pub created_ms: i64,
    pub created_at: &'a str,
    /// The request's `Idempotency-Key`, claimed beforehand: it comes to stand for this job in
    /// the same transaction that makes the job, so no retry can make a second one.
    pub idempotency_key: Option<&'a str>,
    /// Its setup runs afresh, restoring no snapshot.
    pub no_snapshot: bool,
    /// Where its result goes once uploaded.
    pub publish: PublishMode,
    /// The job it follows up.
    pub parent_id: Option<&'a str>,
    /// The attempt group it is one attempt of, and which.
    pub group: Option<(&'a str, u32)>,
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
    /// The job's idempotency key, if any, is bound to it in the same transaction. `None` means
    /// the quota is used up.
    pub async fn insert_job_within_quota(
        &self,
        new: &NewJob<'_>,
        limit: u32,
        cycle_start_ms: i64,
    ) -> Result<Option<JobRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, account_id, spec, spec_path, git_repo_url, git_base_branch,
                               git_credential_name, state, phase, feature_branch_name,
                               created_ms, created_at, updated_at, no_snapshot, publish, parent_id,
                               group_id, attempt)
             SELECT $1, $2, $3, $4, $5, $6, $7, 'pending', 'queued', $8, $9, $10, $11, $15, $16, $17,
                    $18, $19
             WHERE (SELECT COUNT(*) FROM jobs WHERE account_id = $12 AND created_ms >= $13) < $14",
        )
        .bind(new.id)
        .bind(new.account_id)
        .bind(new.spec)
        .bind(new.spec_path)
        .bind(new.git_repo_url)
        .bind(new.git_base_branch)
        .bind(new.git_credential_name)
        .bind(new.feature_branch_name)
        .bind(new.created_ms)
        .bind(new.created_at)
        .bind(new.created_at)
        .bind(new.account_id)
        .bind(cycle_start_ms)
        .bind(i64::from(limit))
        .bind(i32::from(new.no_snapshot))
        .bind(new.publish.as_str())
        .bind(new.parent_id)
        .bind(new.group.map(|(group, _)| group))
        .bind(new.group.map(|(_, attempt)| i32::try_from(attempt).unwrap_or(i32::MAX)))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(key) = new.idempotency_key {
            sqlx::query(
                "UPDATE idempotency_keys SET job_id = $1
                 WHERE account_id = $2 AND idempotency_key = $3",
            )
            .bind(new.id)
            .bind(new.account_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        webhooks::enqueue_event(&mut tx, new.id, webhook_events::QUEUED, new.created_ms).await?;
        tx.commit().await?;
        self.job(new.id).await
    }

    pub async fn jobs_created_since(
        &self,
        account_id: &str,
        since_ms: i64,
    ) -> Result<u32, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE account_id = $1 AND created_ms >= $2",
        )
        .bind(account_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Up to `limit` ended jobs completed before `completed_before` whose results are still
    /// kept.
    pub async fn expirable_jobs(
        &self,
        completed_before: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        // completed_at is always `clock::rfc3339`: UTC, whole seconds, so text order is time order.
        let ids = sqlx::query_scalar(
            "SELECT id FROM jobs
             WHERE completed_at IS NOT NULL AND completed_at < $1 AND expired_at IS NULL
             ORDER BY seq LIMIT $2",
        )
        .bind(completed_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Removes the job's log and notes that its results expired.
    pub async fn expire_job(&self, job_id: &str, now: &str) -> Result<(), StoreError> {
        self.delete_log_rows(job_id, "expired_at", now).await
    }

    /// Finished jobs whose log is still only in the database, oldest first.
    pub async fn logs_to_archive(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM jobs
             WHERE completed_at IS NOT NULL AND logs_archived_at IS NULL AND expired_at IS NULL
             ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// From now on the job's log is read from its archive, whose bytes have this SHA-256.
    pub async fn mark_logs_archived(
        &self,
        job_id: &str,
        now: &str,
        sha256: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET logs_archived_at = $1, logs_sha256 = $2
             WHERE id = $3 AND logs_archived_at IS NULL",
        )
        .bind(now)
        .bind(sha256)
        .bind(job_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Jobs archived before `archived_before` whose rows are still here.
    pub async fn log_rows_to_purge(
        &self,
        archived_before: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM jobs
             WHERE logs_archived_at IS NOT NULL AND log_rows_purged_at IS NULL
               AND logs_archived_at < $1
             ORDER BY logs_archived_at LIMIT $2",
        )
        .bind(archived_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Drops an archived job's rows: its archive holds the log now.
    pub async fn purge_log_rows(&self, job_id: &str, now: &str) -> Result<(), StoreError> {
        self.delete_log_rows(job_id, "log_rows_purged_at", now)
            .await
    }

    /// Deletes the job's log rows and stamps `column` in the same transaction.
    async fn delete_log_rows(
        &self,
        job_id: &str,
        column: &'static str,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Refusals no worker took are not logged any more.
        for table in ["logs", "egress_notices"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE job_id = $1"))
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(&format!("UPDATE jobs SET {column} = $1 WHERE id = $2"))
            .bind(now)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// How many jobs are in each state, for `/metrics`.
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    parse_enum("state", row.try_get("state")?)?,
                    row.try_get("n")?,
                ))
            })
            .collect()
    }

    /// `NOTIFY channel, payload` (PostgreSQL only): a wake-up for the other replicas.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// A job by its full id, whoever owns it.
    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// One of the account's jobs by id or unique id prefix. `prefix` must hold only id
    /// characters (the caller checks), so it cannot carry LIKE wildcards.
    pub async fn find_job(&self, account_id: &str, prefix: &str) -> Result<JobLookup, StoreError> {
        // A whole id is one look-up in the id index; a prefix (a person typing `ckrv status
        // 3f2a`) is matched among the account's jobs.
        let lookup = if prefix.len() == FULL_ID_LEN {
            "SELECT {COLUMNS} FROM jobs WHERE id = $2 AND account_id = $1"
        } else {
            "SELECT {COLUMNS} FROM jobs WHERE account_id = $1 AND id LIKE $2 || '%' LIMIT 2"
        };
        let rows = sqlx::query(&lookup.replace("{COLUMNS}", COLUMNS))
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

    /// The account's jobs, newest first, older than `before_seq` when given, only those whose
    /// contract status is `status` when given.
    pub async fn list_jobs(
        &self,
        account_id: &str,
        status: Option<JobStatus>,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JobRow>, StoreError> {
        let filter = JobFilter {
            states: status.map(|status| JobState::with_status(status).collect()),
            ..JobFilter::default()
        };
        self.find_jobs(account_id, &filter, before_seq, limit).await
    }

    /// The account's jobs that `filter` lets through, newest first, older than `before_seq`
    /// when given.
    pub async fn find_jobs(
        &self,
        account_id: &str,
        filter: &JobFilter<'_>,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JobRow>, StoreError> {
        let states = filter
            .states
            .clone()
            .unwrap_or_else(|| JobState::ALL.to_vec());
        // $1 account, $2 before, then one placeholder per state, then the optional filters.
        let mut next = 3;
        let mut placeholder = || {
            next += 1;
            format!("${}", next - 1)
        };
        let in_states: Vec<String> = states.iter().map(|_| placeholder()).collect();
        let mut sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE account_id = $1 AND seq < $2 AND state IN ({})",
            in_states.join(", ")
        );
        if filter.agent.is_some() {
            sql.push_str(&format!(" AND agent = {}", placeholder()));
        }
        if filter.repo.is_some() {
            sql.push_str(&format!(
                " AND git_repo_url LIKE {} ESCAPE '\\'",
                placeholder()
            ));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", placeholder()));
        let mut query = sqlx::query(&sql)
            .bind(account_id)
            .bind(before_seq.unwrap_or(i64::MAX));
        for state in states {
            query = query.bind(state.as_str());
        }
        if let Some(agent) = filter.agent {
            query = query.bind(agent);
        }
        if let Some(repo) = filter.repo {
            query = query.bind(format!("%{}%", like_escaped(repo)));
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }
}

/// Which of an account's jobs a list shows.
#[derive(Debug, Default, Clone)]
pub struct JobFilter<'a> {
    /// Only jobs in one of these states; every state when `None`.
    pub states: Option<Vec<JobState>>,
    /// Only jobs of this agent.
    pub agent: Option<&'a str>,
    /// Only jobs whose repository URL contains this.
    pub repo: Option<&'a str>,
}

/// `text` for a `LIKE … ESCAPE '\'` pattern: its wildcards match only themselves.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Store {
    /// The ids of the jobs that follow `job_id` up, oldest first.
    pub async fn follow_ups(&self, job_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM jobs WHERE parent_id = $1 ORDER BY seq")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("id").map_err(StoreError::from))
            .collect()
    }
}

pub(super) fn job_from_row(row: &sqlx::any::AnyRow) -> Result<JobRow, StoreError> {
    let stats_json: Option<String> = row.try_get("diff_stats_json")?;
    let diff_stats = stats_json
        .map(|json| {
            serde_json::from_str::<DiffStats>(&json)
                .map_err(|e| StoreError::Corrupt(format!("diff_stats_json: {e}")))
        })
        .transpose()?;
    let has_diff: i64 = row.try_get("has_diff")?;
    let state: JobState = parse_enum("state", row.try_get("state")?)?;
    let verification = row
        .try_get::<Option<String>, _>("verification_json")?
        .map(|json| {
            serde_json::from_str::<Verification>(&json)
                .map_err(|e| StoreError::Corrupt(format!("verification: {e}")))
        })
        .transpose()?;
    // The one-line summary is the contract's; it describes a job that succeeded.
    let result_summary = diff_stats
        .as_ref()
        .filter(|_| state == JobState::Succeeded)
        .map(DiffStats::summary_line);
    Ok(JobRow {
        seq: row.try_get("seq")?,
        account_id: row.try_get("account_id")?,
        spec: row.try_get("spec")?,
        has_diff: has_diff != 0,
        generation: row.try_get("lease_generation")?,
        started_ms: row.try_get("started_ms")?,
        expired_at: row.try_get("expired_at")?,
        logs_archived_at: row.try_get("logs_archived_at")?,
        logs_sha256: row.try_get("logs_sha256")?,
        credential_name: row.try_get("git_credential_name")?,
        no_snapshot: row.try_get::<i32, _>("no_snapshot")? != 0,
        state,
        job: Job {
            id: row.try_get("id")?,
            status: state.status(),
            git_repo_url: row.try_get("git_repo_url")?,
            git_base_branch: row.try_get("git_base_branch")?,
            feature_branch_name: row.try_get("feature_branch_name")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            completed_at: row.try_get("completed_at")?,
            result_status: state.result_status(),
            result_summary,
            error_message: row.try_get("error_message")?,
            state: Some(state),
            phase: Some(parse_enum("phase", row.try_get("phase")?)?),
            agent: row.try_get("agent")?,
            spec_path: row.try_get("spec_path")?,
            updated_at: row.try_get("updated_at")?,
            diff_stats,
            diff_sha256: row.try_get("diff_sha256")?,
            usage: super::gateway::usage_from_row(row)?,
            egress_refusals: super::gateway::refusals_from_row(row)?,
            setup: row
                .try_get::<Option<String>, _>("setup_json")?
                .map(|json| {
                    serde_json::from_str(&json)
                        .map_err(|e| StoreError::Corrupt(format!("setup summary: {e}")))
                })
                .transpose()?,
            publish: Some(parse_enum::<PublishMode>(
                "publish",
                row.try_get("publish")?,
            )?),
            publication: row
                .try_get::<Option<String>, _>("publication_json")?
                .map(|json| {
                    serde_json::from_str::<Publication>(&json)
                        .map_err(|e| StoreError::Corrupt(format!("publication: {e}")))
                })
                .transpose()?,
            parent_id: row.try_get("parent_id")?,
            follow_ups: None,
            verified: verification.as_ref().and_then(Verification::verified),
            verification,
            group_id: row.try_get("group_id")?,
            attempt: row
                .try_get::<Option<i32>, _>("attempt")?
                .and_then(|n| u32::try_from(n).ok()),
        },
    })
}
