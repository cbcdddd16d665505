//! Job logs with dense per-job sequences from 1.

use ckrv_wit::types::{LogEntry, LogLine};
use sqlx::Row;

use super::{Store, StoreError, parse_enum};

impl Store {
    /// Appends lines in order. Each insert takes the next sequence in the same statement, and
    /// SQLite runs one writer at a time, so sequences stay dense under concurrent batches.
    pub async fn append_logs(&self, job_id: &str, lines: &[LogLine]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for line in lines {
            sqlx::query(
                "INSERT INTO logs (job_id, sequence, timestamp, level, source, message)
                 SELECT $1, COALESCE(MAX(sequence), 0) + 1, $2, $3, $4, $5 FROM logs WHERE job_id = $6",
            )
            .bind(job_id)
            .bind(&line.timestamp)
            .bind(line.level.as_str())
            .bind(&line.source)
            .bind(&line.message)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
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
