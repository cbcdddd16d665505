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

    // Nowhere in the database files (the WAL included) is the value in the clear.
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
    let (status, again) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(!again.to_string().contains(SECRET));
    let (_, list) = api.get("/v1/credentials", user).await;
    assert!(list["credentials"][0]["last_used_at"].is_string(), "{list}");

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
