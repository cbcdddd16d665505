//! The database a test's API runs on. By default SQLite in the test's data directory; when
//! `CKRV_TEST_POSTGRES` names a PostgreSQL server (`postgres://root@127.0.0.1:5432/postgres`),
//! a database of the test's own on it, created here and dropped when the last handle goes.

use std::path::Path;
use std::sync::Arc;

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

/// Names the PostgreSQL server the suites run against instead of SQLite.
pub const POSTGRES_ENV: &str = "CKRV_TEST_POSTGRES";

pub struct TestDatabase {
    url: String,
    /// The server's maintenance URL and this test's database on it.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh database for an API whose data directory is `data_dir`.
    pub async fn new(data_dir: &Path) -> Arc<Self> {
        let Some(server) = std::env::var(POSTGRES_ENV).ok().filter(|s| !s.is_empty()) else {
            return Arc::new(Self {
                url: format!("sqlite:{}", data_dir.join("ckrv.db").display()),
                postgres: None,
            });
        };
        let name = format!("ckrv_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={server}: cannot connect ({e})"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        Arc::new(Self {
            url: url.to_string(),
            postgres: Some((server, name)),
        })
    }

    /// What `ckrv-api --database-url` takes.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop may run inside a runtime, which cannot block on another: a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&server).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}
