//! Git credentials over real HTTP: stored per account, sealed at rest, never returned.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{TestApi, access, each, job_request};

const SECRET: &str = "ghp_s3cretTokenValue0123456789";

fn pat(name: &str) -> serde_json::Value {
    json!({"name": name, "provider": "github", "credential_type": "pat", "value": format!("{SECRET}\n")})
}

#[tokio::test]
async fn credentials_are_added_listed_and_removed_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let alice = api.login("alice@example.com").await;
    let alice = access(&alice);
    let bob = api.login("bob@example.com").await;
    let bob = access(&bob);

    let (status, created) = api.post("/v1/credentials", alice, pat("github-work")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "github-work");
    assert_eq!(created["provider"], "github");
    assert_eq!(created["credential_type"], "pat");
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(created.get("last_used_at").is_none(), "{created}");
    assert!(!created.to_string().contains(SECRET));

    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";
    let deploy = json!({"name": "deploy", "provider": "gitlab", "credential_type": "deploy_key", "value": key});
    let (status, body) = api.post("/v1/credentials", alice, deploy).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A name is unique per account, not across accounts.
    let (status, error) = api.post("/v1/credentials", alice, pat("github-work")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("ckrv cloud credentials add --name github-work --force"),
        "{error}"
    );
    let (status, _) = api.post("/v1/credentials", bob, pat("github-work")).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, list) = api.get("/v1/credentials", alice).await;
    assert_eq!(status, StatusCode::OK);
    let names = each(&list["credentials"], "name");
    assert_eq!(names, ["deploy", "github-work"]);
    assert_eq!(list["credentials"][0]["credential_type"], "deploy_key");
    assert!(!list.to_string().contains(SECRET) && !list.to_string().contains("BEGIN"));

    // Bob removes his; Alice's stays. Removing twice is not found.
    let path = "/v1/credentials/github-work";
    let (status, body) = api.call(Method::DELETE, path, Some(bob), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, error) = api.call(Method::DELETE, path, Some(bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"], "not_found");
    let (_, list) = api.get("/v1/credentials", alice).await;
    assert_eq!(list["credentials"].as_array().unwrap().len(), 2);
    let (_, list) = api.get("/v1/credentials", bob).await;
    assert_eq!(list["credentials"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn bad_credentials_are_refused_with_what_was_wrong() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();
    let cases = [
        (
            json!({"name": "GitHub", "provider": "github", "credential_type": "pat", "value": "x"}),
            "lowercase letters",
        ),
        (
            json!({"name": "", "provider": "github", "credential_type": "pat", "value": "x"}),
            "lowercase letters",
        ),
        (
            json!({"name": "a", "provider": "github", "credential_type": "pat", "value": " \n"}),
            "value is empty",
        ),
        (
            json!({"name": "a", "provider": "github", "credential_type": "pat", "value": "two words"}),
            "one word",
        ),
        (
            json!({"name": "a", "provider": "github", "credential_type": "deploy_key", "value": "ssh-ed25519 AAAA"}),
            "private key",
        ),
        (
            json!({"name": "a", "provider": "sourceforge", "credential_type": "pat", "value": "x"}),
            "unknown variant",
        ),
        (
            json!({"name": "a", "provider": "github", "credential_type": "pat"}),
            "missing field `value`",
        ),
        (
            json!({"name": "a", "provider": "generic", "credential_type": "pat", "value": "x", "username": "a:b"}),
            "without ':'",
        ),
        (
            json!({"name": "a", "provider": "generic", "credential_type": "deploy_key", "value": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----", "username": "git"}),
            "username goes with an access token",
        ),
    ];
    for (body, message) in cases {
        let (status, error) = api.post("/v1/credentials", user, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"], "invalid_request");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .contains(message),
            "{body}: {error}"
        );
    }
    let (status, _) = api.call(Method::GET, "/v1/credentials", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, list) = api.get("/v1/credentials", user).await;
    assert_eq!(list["credentials"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn values_are_sealed_at_rest_and_handed_only_to_the_worker_of_a_job_that_names_them() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();
    let (status, _) = api.post("/v1/credentials", user, pat("github-work")).await;
    assert_eq!(status, StatusCode::CREATED);

    // Nowhere in the database (its files and WAL, or PostgreSQL's dump) is the value in the clear.
    assert_no_secret_in_the_database(&api);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(api.data_dir().join("secrets.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A job names the credential; its worker gets it opened, once per claim, and the value
    // is nowhere else: not in the job, not in any response but the worker's.
    let mut request = job_request();
    request["git_credential_name"] = json!("github-work");
    let (status, job) = api.post("/v1/jobs", user, request).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert!(!job.to_string().contains(SECRET));
    let id = job["id"].as_str().unwrap();
    let worker = api.dispatcher.token_for(id);
    let (status, work) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert_eq!(
        work["git_credential"],
        json!({"provider": "github", "credential_type": "pat", "value": SECRET})
    );
    // A credential with a user name hands it to the worker with the token.
    let mut named = pat("named");
    named["username"] = json!("build-bot");
    let (status, _) = api.post("/v1/credentials", user, named).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut request = job_request();
    request["git_credential_name"] = json!("named");
    let (_, named_job) = api.post("/v1/jobs", user, request).await;
    let named_id = named_job["id"].as_str().unwrap();
    let (_, named_work) = api
        .get(
            &format!("/v1/worker/jobs/{named_id}"),
            &api.dispatcher.token_for(named_id),
        )
        .await;
    assert_eq!(named_work["git_credential"]["username"], "build-bot");
    let (status, again) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(!again.to_string().contains(SECRET));
    let (_, list) = api.get("/v1/credentials", user).await;
    assert!(list["credentials"][0]["last_used_at"].is_string(), "{list}");
    assert_no_secret_in_the_database(&api);

    // Another account cannot name it; a job whose credential was removed gets no worker secret.
    let other = api.login("eve@example.com").await;
    let mut request = job_request();
    request["git_credential_name"] = json!("github-work");
    let (status, error) = api.post("/v1/jobs", access(&other), request.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    let (status, job) = api.post("/v1/jobs", user, request).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .call(
            Method::DELETE,
            "/v1/credentials/github-work",
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = job["id"].as_str().unwrap();
    let (status, error) = api
        .get(
            &format!("/v1/worker/jobs/{id}"),
            &api.dispatcher.token_for(id),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("'github-work' was removed after the job was created"),
        "{error}"
    );
}

/// `ckrv-api keys ARGS` on the test API's data directory and database.
fn keys_command(api: &TestApi, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ckrv-api"))
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(api.data_dir())
        .env("DATABASE_URL", api.database().url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn key_ids(api: &TestApi) -> Vec<(String, String, String)> {
    let out = keys_command(api, &["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (
                cells[0].to_string(),
                cells[1].to_string(),
                cells[2].to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_re_encrypts_every_credential_and_a_running_server_follows() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();
    for name in ["github-work", "second"] {
        let (status, body) = api.post("/v1/credentials", user, pat(name)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // A webhook's secret is sealed under the same keys (an event no job here has, so nothing
    // is sent).
    let hook = json!({"url": "https://hooks.example.com/ckrv", "events": ["job.published"]});
    let (status, body) = api.post("/v1/webhooks", user, hook).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = key_ids(&api);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].1.as_str(), first[0].2.as_str()), ("active", "3"));
    let old = first[0].0.clone();

    // The active key cannot be retired; nor can one that still seals credentials.
    let out = keys_command(&api, &["retire", &old]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the active key"));
    let key_file = api.data_dir().join("secrets.key");
    let unused = ckrv_api::credentials::secrets::SecretKeys::add_key(&key_file).unwrap();
    let out = keys_command(&api, &["retire", &old]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "key {old} still seals 3 secret(s): run `ckrv-api keys rotate`"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = keys_command(&api, &["rotate"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("(now active); re-encrypted 3 secret(s)"),
        "{printed}"
    );
    let keys = key_ids(&api);
    assert_eq!(keys.len(), 3);
    let new = keys[2].0.clone();
    assert_eq!((keys[2].1.as_str(), keys[2].2.as_str()), ("active", "3"));
    assert_eq!(keys[0].2, "0");

    // The running server opens the re-encrypted credential without a restart, and seals new
    // ones with the new key.
    let mut request = job_request();
    request["git_credential_name"] = json!("github-work");
    let (_, job) = api.post("/v1/jobs", user, request).await;
    let id = job["id"].as_str().unwrap();
    let (status, work) = api
        .get(
            &format!("/v1/worker/jobs/{id}"),
            &api.dispatcher.token_for(id),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert_eq!(work["git_credential"]["value"], SECRET);
    for old in [&old, &unused] {
        let out = keys_command(&api, &["retire", old]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (status, _) = api.post("/v1/credentials", user, pat("third")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        key_ids(&api),
        [(new, "active".to_string(), "4".to_string())]
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn an_operators_key_file_is_used_only_when_private_and_present() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let database = ckrv_test_support::TestDatabase::new(dir.path()).await;
    let key_file = dir.path().join("operator.key");
    let bind = |file: &std::path::Path| {
        let mut config = support::test_config(dir.path(), &database);
        config.secrets_key_file = Some(file.to_path_buf());
        ckrv_api::Server::bind(config)
    };
    let missing = bind(&key_file).await.err().unwrap().to_string();
    assert!(
        missing.contains(&format!("the secrets key file {}", key_file.display())),
        "{missing}"
    );
    std::fs::write(&key_file, format!("k1 {}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = bind(&key_file).await.err().unwrap().to_string();
    assert!(
        exposed.contains("can be read by other users (mode 644); run `chmod 600"),
        "{exposed}"
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(bind(&key_file).await.is_ok());
    // The data directory's own key file is not made when the operator names one.
    assert!(!dir.path().join("secrets.key").exists());
}

/// The whole database, as `pg_dump` writes it (PostgreSQL) or as its files hold it (SQLite,
/// the WAL included), does not contain the secret's bytes.
fn assert_no_secret_in_the_database(api: &TestApi) {
    let database = api.database();
    if database.is_postgres() {
        let dump = std::process::Command::new("pg_dump")
            .args(["--data-only", database.url()])
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        assert!(!dump.stdout.is_empty());
        assert!(
            !dump
                .stdout
                .windows(SECRET.len())
                .any(|w| w == SECRET.as_bytes()),
            "the PostgreSQL database holds the secret"
        );
        return;
    }
    for entry in std::fs::read_dir(api.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{} holds the secret",
                path.display()
            );
        }
    }
}
