//! Persistence. The embedded default keeps one SQLite file in the data directory; a platform
//! team points every replica at one PostgreSQL server instead. Every statement is written once,
//! with numbered parameters (`$1`), integers for flags and no dialect-only functions, and runs
//! on both through sqlx's `Any` driver; the few places that must differ ask [`Store::backend`].
//!
//! May call only the clock (and the contract's types); every domain calls it.

mod accounts;
mod credentials;
mod database;
mod device_codes;
mod gateway;
mod groups;
mod idempotency;
mod jobs;
mod lifecycle;
mod logs;
mod operators;
mod snapshots;
mod tokens;
mod web;
mod webhooks;
mod workers;

pub use accounts::{Account, NewAccount};
pub use credentials::{NewCredential, Sealed};
pub use database::{Backend, Database};
pub use device_codes::{DevicePoll, NewDeviceCode, PendingRequest};
pub use gateway::{ModelGrant, SpentUsage};
pub use groups::{GroupLookup, GroupRow};
pub use idempotency::KeyUse;
pub use jobs::{JobFilter, JobLookup, JobRow, NewJob};
pub use lifecycle::{Admission, Claimed, Lease, NewClaim, Pick, Transition};
pub use logs::{MAX_LOG_SEQUENCE, log_batch_fits};
pub use operators::{AccountUsage, ActiveJob};
pub use snapshots::{NewSnapshot, Snapshot, over_cap};
pub use tokens::{NewToken, PersonalToken, RefreshUse, TokenKind, TokenOwner, TokenStatus};
pub use web::{SsoLogin, WebSession};
pub use webhooks::{
    AttemptRow, DeliveryRow, DeliveryStatus, HELD_MS, NewWebhook, Outcome, WebhookRow,
};
pub use workers::WorkerCredential;

use std::str::FromStr;

use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value this build cannot read (e.g. an unknown enum case).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL names no database this build can use.
    #[error("{0}")]
    Location(String),
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to (creating, for SQLite) and migrates the database.
    pub async fn open(database: &Database) -> Result<Self, StoreError> {
        let pool = database.connect().await?;
        match database.backend() {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend: database.backend(),
        })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Reads a WIT enum stored by its string name.
fn parse_enum<T: FromStr>(column: &str, value: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} = {value:?}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ckrv_wit::types::{JobState, JobStatus, SubscriptionTier};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    /// A data directory of the walking skeleton (only the first migration applied) opens with
    /// the contract's names and keeps its accounts and jobs.
    #[tokio::test]
    async fn a_skeleton_database_migrates_to_the_contract_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckrv.db");
        {
            let pool = SqlitePool::connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
            let mut first = sqlx::migrate!("./migrations/sqlite");
            first.migrations = std::borrow::Cow::Owned(first.migrations[..1].to_vec());
            first.run(&pool).await.unwrap();
            sqlx::query(
                "INSERT INTO accounts (id, email, tier, created_at)
                 VALUES ('a1', 'lead@example.com', 'team', '2026-11-01T00:00:00Z')",
            )
            .execute(&pool)
            .await
            .unwrap();
            for (id, spec_path, status) in
                [("j1", "specs/x.md", "cancelled"), ("j2", "", "pending")]
            {
                sqlx::query(
                    "INSERT INTO jobs (id, account_id, spec, spec_path, repo_url, base_branch,
                                       status, phase, feature_branch, error, created_ms,
                                       created_at, updated_at, finished_at)
                     VALUES ($1, 'a1', 'spec', $2, 'https://git.example.com/r.git', 'main', $3,
                             'finished', 'ckrv/j', 'stopped', 1, '2026-11-01T00:00:00Z',
                             '2026-11-01T00:00:00Z', '2026-11-01T00:01:00Z')",
                )
                .bind(id)
                .bind(spec_path)
                .bind(status)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }

        let store = Store::open(&Database::Sqlite(path.clone())).await.unwrap();
        let account = store.account("a1").await.unwrap().unwrap();
        assert_eq!(account.tier, SubscriptionTier::Enterprise);
        assert_eq!(account.name, "lead");
        let row = store.job("j1").await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Cancelled);
        assert_eq!(row.job.status, JobStatus::Failed);
        assert_eq!(row.job.git_repo_url, "https://git.example.com/r.git");
        assert_eq!(row.job.feature_branch_name.as_deref(), Some("ckrv/j"));
        assert_eq!(row.job.error_message.as_deref(), Some("stopped"));
        assert_eq!(
            row.job.completed_at.as_deref(),
            Some("2026-11-01T00:01:00Z")
        );
        assert_eq!(row.job.spec_path.as_deref(), Some("specs/x.md"));
        assert_eq!(store.job("j2").await.unwrap().unwrap().job.spec_path, None);
    }
}
