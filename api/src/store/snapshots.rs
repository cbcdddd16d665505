//! Snapshots of repositories' setups: which account holds which key, its digest and size, and
//! when it was last used (the least recently used go first when an account is over its cap).

use sqlx::Row;

use super::{Store, StoreError};

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub key: String,
    /// The repository whose setup it holds.
    pub repository: String,
    /// The job that saved it.
    pub job_id: String,
    pub sha256: String,
    pub bytes: u64,
    pub created_ms: i64,
    pub used_ms: i64,
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Snapshot, StoreError> {
    let bytes: i64 = row.try_get("bytes")?;
    Ok(Snapshot {
        key: row.try_get("snapshot_key")?,
        repository: row.try_get("repository")?,
        job_id: row.try_get("job_id")?,
        sha256: row.try_get("sha256")?,
        bytes: u64::try_from(bytes).map_err(|_| StoreError::Corrupt(format!("bytes = {bytes}")))?,
        created_ms: row.try_get("created_ms")?,
        used_ms: row.try_get("used_ms")?,
    })
}

const COLUMNS: &str = "snapshot_key, repository, job_id, sha256, bytes, created_ms, used_ms";

/// A snapshot as it is saved.
#[derive(Debug, Clone, Copy)]
pub struct NewSnapshot<'a> {
    pub account_id: &'a str,
    pub key: &'a str,
    pub repository: &'a str,
    pub job_id: &'a str,
    pub sha256: &'a str,
    pub bytes: u64,
    pub now_ms: i64,
}

impl Store {
    /// The account's snapshot under `key`, marked used at `now_ms`.
    pub async fn use_snapshot(
        &self,
        account_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<Snapshot>, StoreError> {
        sqlx::query(
            "UPDATE snapshots SET used_ms = $1 WHERE account_id = $2 AND snapshot_key = $3",
        )
        .bind(now_ms)
        .bind(account_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE account_id = $1 AND snapshot_key = $2"
        ))
        .bind(account_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Records (or replaces) the account's snapshot under its key.
    pub async fn put_snapshot(&self, new: &NewSnapshot<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO snapshots
                 (account_id, snapshot_key, repository, job_id, sha256, bytes, created_ms, used_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (account_id, snapshot_key)
             DO UPDATE SET repository = $3, job_id = $4, sha256 = $5, bytes = $6,
                           created_ms = $7, used_ms = $7",
        )
        .bind(new.account_id)
        .bind(new.key)
        .bind(new.repository)
        .bind(new.job_id)
        .bind(new.sha256)
        .bind(i64::try_from(new.bytes).unwrap_or(i64::MAX))
        .bind(new.now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The account's snapshots, most recently used first.
    pub async fn snapshots(&self, account_id: &str) -> Result<Vec<Snapshot>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE account_id = $1 ORDER BY used_ms DESC, snapshot_key"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Up to `limit` snapshots (account, key) last used before `before_ms`.
    pub async fn unused_snapshots(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, snapshot_key FROM snapshots WHERE used_ms < $1
             ORDER BY used_ms LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("account_id")?, row.try_get("snapshot_key")?)))
            .collect()
    }

    /// Forgets the account's snapshot under `key`; whether there was one.
    pub async fn delete_snapshot(&self, account_id: &str, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM snapshots WHERE account_id = $1 AND snapshot_key = $2")
            .bind(account_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// The keys to drop, least recently used first, so that `snapshots` (most recently used
/// first) hold at most `cap` bytes together; `keep` (the one just saved) is never dropped.
pub fn over_cap<'a>(snapshots: &'a [Snapshot], cap: u64, keep: &str) -> Vec<&'a str> {
    let mut total: u64 = 0;
    let mut drop = Vec::new();
    for snapshot in snapshots {
        total = total.saturating_add(snapshot.bytes);
        if total > cap && snapshot.key != keep {
            drop.push(snapshot.key.as_str());
            total = total.saturating_sub(snapshot.bytes);
        }
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(key: &str, bytes: u64) -> Snapshot {
        Snapshot {
            key: key.into(),
            repository: String::new(),
            job_id: String::new(),
            sha256: String::new(),
            bytes,
            created_ms: 0,
            used_ms: 0,
        }
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_new_one_stays() {
        let all = [
            snapshot("new", 50),
            snapshot("b", 30),
            snapshot("c", 30),
            snapshot("d", 10),
        ];
        assert_eq!(over_cap(&all, 100, "new"), ["c"]);
        assert_eq!(over_cap(&all, 60, "new"), ["b", "c"]);
        assert!(over_cap(&all, 1000, "new").is_empty());
        // Even alone past the cap, the one just saved is kept.
        assert_eq!(over_cap(&all, 10, "new"), ["b", "c", "d"]);
    }
}
