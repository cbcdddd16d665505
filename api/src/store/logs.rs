//! Job logs: per-job sequences from 1, numbered by the worker so that a resent line is stored
//! once.

use ckrv_wit::types::{LogEntry, LogLevel, LogLine};
use sqlx::Row;

use ckrv_wit::protocol::EGRESS_LOG_SOURCE;

use super::{Store, StoreError, parse_enum};

/// The largest sequence a log line can have: the column is a signed 64-bit integer.
pub const MAX_LOG_SEQUENCE: u64 = i64::MAX.unsigned_abs();

/// Whether `lines` lines numbered from `first_sequence` all have a sequence from 1 to
/// [`MAX_LOG_SEQUENCE`]: what a worker's batch must satisfy before it is stored.
pub fn log_batch_fits(first_sequence: u64, lines: usize) -> bool {
    let extra = u64::try_from(lines.saturating_sub(1)).unwrap_or(u64::MAX);
    first_sequence >= 1
        && first_sequence
            .checked_add(extra)
            .is_some_and(|last| last <= MAX_LOG_SEQUENCE)
}

/// One line under its number, unless that number is taken.
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: &str,
    sequence: u64,
    line: &LogLine,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO logs (job_id, sequence, timestamp, level, source, message)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (job_id, sequence) DO NOTHING",
    )
    .bind(job_id)
    .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
    .bind(&line.timestamp)
    .bind(line.level.as_str())
    .bind(&line.source)
    .bind(&line.message)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Store {
    /// Stores the worker's lines, numbered from `first_sequence`; a line already stored under
    /// its number (a batch sent again) is kept as it was. Each stored line of the `egress`
    /// source (a connection the agent's policy refused) counts on the job. Lines past `cap` are dropped, and the
    /// first batch to reach it adds one entry saying so. True when anything was added. The
    /// caller checks the batch with [`log_batch_fits`]; numbers past [`MAX_LOG_SEQUENCE`] are
    /// never stored (nor computed: the count never overflows).
    pub async fn append_logs(
        &self,
        job_id: &str,
        first_sequence: u64,
        lines: &[LogLine],
        cap: u64,
    ) -> Result<bool, StoreError> {
        let mut added = false;
        let mut refused: i64 = 0;
        let mut tx = self.pool.begin().await?;
        for (sequence, line) in (first_sequence..=MAX_LOG_SEQUENCE).zip(lines) {
            if sequence > cap {
                let notice = LogLine {
                    timestamp: line.timestamp.clone(),
                    level: LogLevel::Warn,
                    source: "ckrv".to_string(),
                    message: format!(
                        "log truncated: this job's log reached its limit of {cap} lines; \
                         later lines were dropped"
                    ),
                };
                added |= insert(&mut tx, job_id, cap + 1, &notice).await?;
                break;
            }
            let inserted = insert(&mut tx, job_id, sequence, line).await?;
            if inserted && line.source == EGRESS_LOG_SOURCE {
                refused += 1;
            }
            added |= inserted;
        }
        if refused > 0 {
            // Counted as stored, so a batch sent again counts nothing twice.
            sqlx::query("UPDATE jobs SET egress_refusals = egress_refusals + $1 WHERE id = $2")
                .bind(refused)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Up to `limit` entries with a sequence above `after`, in order.
    pub async fn read_logs(
        &self,
        job_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT sequence, timestamp, level, source, message FROM logs
             WHERE job_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        )
        .bind(job_id)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let sequence: i64 = row.try_get("sequence")?;
                Ok(LogEntry {
                    sequence: Some(u64::try_from(sequence).unwrap_or_default()),
                    timestamp: row.try_get("timestamp")?,
                    level: parse_enum("level", row.try_get("level")?)?,
                    source: row.try_get("source")?,
                    message: row.try_get("message")?,
                })
            })
            .collect()
    }

    /// The job's last sequence; 0 while it has no log.
    pub async fn last_log_sequence(&self, job_id: &str) -> Result<u64, StoreError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(sequence) FROM logs WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(last.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_fits_only_when_each_of_its_sequences_does() {
        assert!(log_batch_fits(1, 10_000));
        assert!(log_batch_fits(MAX_LOG_SEQUENCE, 1));
        assert!(log_batch_fits(MAX_LOG_SEQUENCE - 1, 2));
        assert!(log_batch_fits(5, 0));
        assert!(!log_batch_fits(0, 1));
        assert!(!log_batch_fits(MAX_LOG_SEQUENCE, 2));
        assert!(!log_batch_fits(MAX_LOG_SEQUENCE + 1, 1));
        assert!(!log_batch_fits(u64::MAX, 1));
        assert!(!log_batch_fits(u64::MAX, 2));
        assert!(!log_batch_fits(u64::MAX - 1, usize::MAX));
    }
}
