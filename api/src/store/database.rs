//! Where the rows live: a SQLite file (the embedded default) or a PostgreSQL server named by a
//! URL. The URL may carry a password, so it is shown only through [`Database::describe`].

use std::path::PathBuf;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::ConnectOptions as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;

use super::StoreError;

/// The database kinds statements may need to tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database to open.
#[derive(Clone)]
pub enum Database {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL server: `postgres://user:password@host:port/database?sslmode=…`.
    Postgres(url::Url),
}

impl Database {
    /// Reads `--database-url`: `postgres://…` (or `postgresql://…`), or `sqlite:PATH`.
    pub fn from_url(text: &str) -> Result<Self, StoreError> {
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(StoreError::Location(
                    "the database URL names no SQLite file; use sqlite:/path/to/ckrv.db".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        let url = url::Url::parse(text).map_err(|e| {
            StoreError::Location(format!(
                "the database URL is not a URL ({e}); use postgres://user@host/database"
            ))
        })?;
        match url.scheme() {
            "postgres" | "postgresql" if url.has_host() => Ok(Self::Postgres(url)),
            "postgres" | "postgresql" => Err(StoreError::Location(
                "the database URL names no host; use postgres://user@host/database".into(),
            )),
            other => Err(StoreError::Location(format!(
                "databases of kind `{other}` are not supported; use postgres://… or sqlite:PATH"
            ))),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether the URL itself carries a password (better kept in `PGPASSWORD` or `~/.pgpass`).
    pub fn has_password(&self) -> bool {
        matches!(self, Self::Postgres(url) if url.password().is_some())
    }

    /// The database without its password, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("SQLite {}", path.display()),
            Self::Postgres(url) => {
                let mut shown = url.clone();
                if shown.password().is_some() {
                    let _ = shown.set_password(Some("***"));
                }
                shown.set_query(None);
                format!("PostgreSQL {shown}")
            }
        }
    }

    pub(super) async fn connect(&self) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, pool) = match self {
            Self::Sqlite(path) => {
                let url = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .to_url_lossy();
                // SQLite runs one writer at a time; a few readers beside it are plenty.
                let pool = AnyPoolOptions::new()
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    });
                (url, pool)
            }
            Self::Postgres(url) => (
                url.clone(),
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10)),
            ),
        };
        let options = AnyConnectOptions::from_url(&url)?;
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Location(format!("opening {}: {e}", self.describe())))?;
        if let Self::Sqlite(_) = self {
            // Readers do not wait for the writer; the setting stays with the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        Ok(pool)
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_database_and_passwords_are_never_shown() {
        let pg = Database::from_url("postgres://ckrv:s3cret@db.internal:5432/ckrv?sslmode=require")
            .unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        let shown = format!("{} {pg:?}", pg.describe());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.internal:5432/ckrv"), "{shown}");
        assert_eq!(
            Database::from_url("sqlite:/srv/ckrv.db").unwrap().backend(),
            Backend::Sqlite
        );
        for (bad, says) in [
            ("mysql://db/ckrv", "not supported"),
            ("postgres:///ckrv", "names no host"),
            ("sqlite:", "names no SQLite file"),
            ("db.internal", "not a URL"),
        ] {
            let err = Database::from_url(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
