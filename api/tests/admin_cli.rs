//! `ckrv-api users …` as an administrator runs it: the real binary on a data directory.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use ckrv_test_support::TestDatabase;

/// A data directory and the database `ckrv-api users` works on.
struct Data {
    dir: tempfile::TempDir,
    database: Arc<TestDatabase>,
}

impl Data {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let database = runtime.block_on(TestDatabase::new(dir.path()));
        Self { dir, database }
    }
}

fn users(data: &Data, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckrv-api"))
        .arg("users")
        .args(args)
        .arg("--data-dir")
        .arg(data.dir.path())
        .env("DATABASE_URL", data.database.url())
        .env_remove("CKRV_API_PUBLIC_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(data: &Data, args: &[&str], stdin: Option<&str>) -> String {
    let out = users(data, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(data: &Data, args: &[&str], stdin: Option<&str>) -> String {
    let out = users(data, args, stdin);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn an_administrator_manages_accounts_and_tokens_from_the_command_line() {
    let data = &Data::new();
    let out = ok(
        data,
        &[
            "add",
            "Lead@Example.com",
            "--admin",
            "--tier",
            "enterprise",
            "--password-stdin",
        ],
        Some("correct horse battery staple\n"),
    );
    assert_eq!(
        out.trim(),
        "added lead@example.com (lead, enterprise, admin)"
    );
    // No password and no known public URL: nothing is created, and the message says why.
    let err = fails(data, &["add", "dev@example.com"], None);
    assert!(err.contains("pass --public-url"), "{err}");
    let out = ok(
        data,
        &[
            "add",
            "dev@example.com",
            "--name",
            "Dev",
            "--public-url",
            "https://ckrv.example.com/",
        ],
        None,
    );
    assert!(out.contains("added dev@example.com (Dev, free)"), "{out}");
    assert!(
        out.contains("https://ckrv.example.com/setup?token=ckrv_setup_"),
        "{out}"
    );

    let list: serde_json::Value =
        serde_json::from_str(&ok(data, &["list", "--json"], None)).unwrap();
    assert_eq!(list[0]["email"], "lead@example.com");
    assert_eq!(list[0]["admin"], true);
    assert_eq!(list[0]["password_set"], true);
    assert_eq!(list[1]["password_set"], false);
    let table = ok(data, &["list"], None);
    assert!(
        table.lines().next().unwrap().starts_with("EMAIL"),
        "{table}"
    );

    assert!(ok(data, &["set-tier", "dev@example.com", "pro"], None).contains("pro"));
    assert!(ok(data, &["disable", "dev@example.com"], None).contains("disabled dev@example.com"));
    let list: serde_json::Value =
        serde_json::from_str(&ok(data, &["list", "--json"], None)).unwrap();
    assert_eq!(list[1]["disabled"], true);
    assert_eq!(list[1]["subscription_tier"], "pro");
    ok(data, &["enable", "dev@example.com"], None);

    // The token is alone on stdout, so a script can capture it; it is listed by id, never shown again.
    let out = users(
        data,
        &[
            "token",
            "dev@example.com",
            "--name",
            "ci",
            "--expires",
            "30d",
        ],
        None,
    );
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(
        token.trim().starts_with("ckrv_pat_") && token.lines().count() == 1,
        "{token}"
    );
    let listed = ok(data, &["tokens", "dev@example.com", "--json"], None);
    assert!(!listed.contains(token.trim()), "{listed}");
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let id = rows[0]["id"].as_str().unwrap().to_string();
    assert_eq!(rows[0]["name"], "ci");
    assert_eq!(rows[0]["revoked"], false);
    assert!(rows[0]["expires_at"].is_string());
    ok(data, &["revoke-token", "dev@example.com", &id], None);
    let rows: serde_json::Value =
        serde_json::from_str(&ok(data, &["tokens", "dev@example.com", "--json"], None)).unwrap();
    assert_eq!(rows[0]["revoked"], true);

    let out = ok(
        data,
        &[
            "reset-password",
            "dev@example.com",
            "--public-url",
            "https://ckrv.example.com",
        ],
        None,
    );
    assert!(out.contains("/setup?token=ckrv_setup_"), "{out}");
}

#[test]
fn bad_input_is_refused_with_what_to_do() {
    let data = &Data::new();
    ok(
        data,
        &["add", "dev@example.com", "--password-stdin"],
        Some("correct horse battery staple"),
    );
    let cases: &[(&[&str], Option<&str>, &str)] = &[
        (
            &["add", "dev@example.com", "--password-stdin"],
            Some("another long password"),
            "already exists",
        ),
        (
            &["add", "not-an-email", "--password-stdin"],
            Some("another long password"),
            "is not an email address",
        ),
        (
            &["add", "x@example.com", "--password-stdin"],
            Some("short\n"),
            "at least 10 characters",
        ),
        (
            &["set-tier", "nobody@example.com", "pro"],
            None,
            "users add nobody@example.com",
        ),
        (
            &["disable", "nobody@example.com"],
            None,
            "no account for nobody@example.com",
        ),
        (&["token", "nobody@example.com"], None, "no account"),
        (
            &["revoke-token", "dev@example.com", "pat_nope"],
            None,
            "no token pat_nope",
        ),
    ];
    for (args, stdin, message) in cases {
        let err = fails(data, args, *stdin);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    // Usage errors are exit 2 with the choices.
    let out = users(data, &["set-tier", "dev@example.com", "gold"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("free, pro, enterprise"));
    let out = users(
        data,
        &["token", "dev@example.com", "--expires", "soon"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    // The failed adds left nothing behind.
    let list: serde_json::Value =
        serde_json::from_str(&ok(data, &["list", "--json"], None)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// Runs `statement` on the data's database: how a test makes a stored token's time pass.
fn sql(data: &Data, statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(data.database.url()).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    });
}

#[test]
fn token_lists_say_which_tokens_work_and_lifetimes_are_at_least_a_minute() {
    let data = &Data::new();
    ok(
        data,
        &["add", "dev@example.com", "--password-stdin"],
        Some("correct horse battery staple"),
    );
    // A token that would be dead on arrival is refused, naming the flag and what it takes.
    for lifetime in ["0s", "59s", "500ms"] {
        let out = users(
            data,
            &["token", "dev@example.com", "--expires", lifetime],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "--expires {lifetime}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--expires") && err.contains("at least 1m") && err.contains("never"),
            "{err}"
        );
    }
    let listed: serde_json::Value =
        serde_json::from_str(&ok(data, &["tokens", "dev@example.com", "--json"], None)).unwrap();
    assert_eq!(listed, serde_json::json!([]), "nothing was issued");

    for (name, lifetime) in [
        ("live", "1m"),
        ("forever", "never"),
        ("old", "30d"),
        ("gone", "90d"),
    ] {
        ok(
            data,
            &[
                "token",
                "dev@example.com",
                "--name",
                name,
                "--expires",
                lifetime,
            ],
            None,
        );
    }
    // Time passes for `old`; `gone` is revoked.
    sql(
        data,
        "UPDATE tokens SET expires_ms = created_ms - 1 WHERE name = 'old'",
    );
    let rows: serde_json::Value =
        serde_json::from_str(&ok(data, &["tokens", "dev@example.com", "--json"], None)).unwrap();
    let gone = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gone")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    ok(data, &["revoke-token", "dev@example.com", &gone], None);

    let rows: serde_json::Value =
        serde_json::from_str(&ok(data, &["tokens", "dev@example.com", "--json"], None)).unwrap();
    let status = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no token {name} in {rows}"))["status"]
            .clone()
    };
    assert_eq!(status("live"), "active");
    assert_eq!(status("forever"), "active");
    assert_eq!(status("old"), "expired");
    assert_eq!(status("gone"), "revoked");
    let table = ok(data, &["tokens", "dev@example.com"], None);
    let row = |name: &str| {
        table
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in {table}"))
            .split_whitespace()
            .last()
            .unwrap()
            .to_string()
    };
    assert_eq!(row("live"), "active", "{table}");
    assert_eq!(row("old"), "expired", "{table}");
    assert_eq!(row("gone"), "revoked", "{table}");
}
