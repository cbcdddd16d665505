//! Persistence. One SQLite file on the embedded default; every query is plain SQL so the
//! PostgreSQL backend of the roadmap can follow the same statements.

mod accounts;
mod jobs;
mod logs;
mod sessions;

pub use accounts::Account;
pub use jobs::{JobLookup, JobRow, NewJob};
pub use sessions::{DevicePoll, TokenKind, TokenOwner};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value this build cannot read (e.g. an unknown enum case).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Reads a WIT enum stored by its string name.
fn parse_enum<T: FromStr>(column: &str, value: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{column} = {value:?}")))
}
