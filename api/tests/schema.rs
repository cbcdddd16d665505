//! SQLite and PostgreSQL end every migration with the same tables and columns, so one set of
//! statements serves both. Needs `CKRV_TEST_POSTGRES`; without it this prints why and passes,
//! unless `CKRV_REQUIRE_POSTGRES` is set (CI sets it).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use ckrv_api::store::{Database, Store};
use ckrv_test_support::{POSTGRES_ENV, TestDatabase};
use sqlx::Row as _;

/// (table, column, nullable) of every table the migrations made.
type Columns = BTreeSet<(String, String, bool)>;

async fn columns(url: &str, query: &str) -> Columns {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let rows = sqlx::query(query).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows.iter()
        .map(|row| {
            (
                row.get::<String, _>(0),
                row.get::<String, _>(1),
                row.get::<i64, _>(2) != 0,
            )
        })
        .filter(|(table, _, _)| !table.starts_with("_sqlx") && !table.starts_with("sqlite_"))
        .collect()
}

#[tokio::test]
async fn both_databases_have_the_same_tables_and_columns() {
    if std::env::var(POSTGRES_ENV).is_err() {
        assert!(
            std::env::var("CKRV_REQUIRE_POSTGRES").is_err(),
            "CKRV_REQUIRE_POSTGRES is set but {POSTGRES_ENV} is not"
        );
        eprintln!("skipped: set {POSTGRES_ENV}=postgres://… to compare the schemas");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("ckrv.db").display());
    Store::open(&Database::from_url(&sqlite).unwrap())
        .await
        .unwrap();
    let postgres = TestDatabase::new(dir.path()).await;
    assert!(postgres.is_postgres());
    Store::open(&Database::from_url(postgres.url()).unwrap())
        .await
        .unwrap();

    // A primary key column is NOT NULL on PostgreSQL whether or not it says so.
    let on_sqlite = columns(
        &sqlite,
        "SELECT m.name, c.name, CASE WHEN c.\"notnull\" = 0 AND c.pk = 0 THEN 1 ELSE 0 END
         FROM sqlite_master m, pragma_table_info(m.name) c WHERE m.type = 'table'",
    )
    .await;
    let on_postgres = columns(
        postgres.url(),
        "SELECT table_name::text, column_name::text,
                CASE WHEN is_nullable = 'YES' THEN 1 ELSE 0 END
         FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .await;
    assert!(on_sqlite.len() > 50, "{on_sqlite:?}");
    let only_sqlite: Vec<_> = on_sqlite.difference(&on_postgres).collect();
    let only_postgres: Vec<_> = on_postgres.difference(&on_sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the migrations differ:\n only on SQLite: {only_sqlite:?}\n only on PostgreSQL: {only_postgres:?}"
    );
}
