//! `Idempotency-Key` on `POST /v1/jobs`: a retried create gets the job the first one made,
//! never a second job; the key cannot be reused for another request; concurrent duplicates
//! make one job.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use ckrv_api::DispatcherConfig;
use ckrv_api::dispatch::{DispatchError, Dispatcher, WorkerStart};
use reqwest::StatusCode;
use serde_json::Value;
use support::{RecordingDispatcher, TestApi, access, job_request};

/// A dispatcher that can never start a worker: its program vanished, or the cluster refuses.
struct Unstartable;

#[async_trait::async_trait]
impl Dispatcher for Unstartable {
    async fn start(&self, _job: &WorkerStart<'_>) -> Result<(), DispatchError> {
        Err(DispatchError::Spawn {
            program: "/opt/ckrv/bin/ckrv-orchestrator".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
    }

    async fn stop(&self, _job_id: &str) {}
}

async fn create(api: &TestApi, user: &str, key: &str, body: &Value) -> (StatusCode, bool, Value) {
    let response = api
        .http
        .post(format!("{}/v1/jobs", api.url))
        .bearer_auth(user)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    (status, replayed, response.json().await.unwrap())
}

async fn job_count(api: &TestApi, user: &str) -> usize {
    let (_, list) = api.get("/v1/jobs?limit=100", user).await;
    list["jobs"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_retried_create_gets_the_same_job_and_uses_no_more_quota() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let body = job_request();
    let (status, replayed, first) = create(&api, &user, "key-1", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed);
    let (status, replayed, again) = create(&api, &user, "key-1", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert!(replayed, "the answer says it is a replay");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(job_count(&api, &user).await, 1);
    let (_, me) = api.get("/v1/users/me", &user).await;
    assert_eq!(me["job_quota_remaining"], 99, "{me}");

    // A new key is a new job.
    let (_, _, other) = create(&api, &user, "key-2", &body).await;
    assert_ne!(other["id"], first["id"]);
    assert_eq!(job_count(&api, &user).await, 2);
}

#[tokio::test]
async fn a_worker_that_cannot_start_costs_one_job_and_one_quota_unit_however_often_retried() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_configured(
        dir.path(),
        Arc::new(RecordingDispatcher::default()),
        |config| config.dispatcher = DispatcherConfig::Custom(Arc::new(Unstartable)),
    )
    .await;
    let tokens = api.login("dev@example.com").await;
    let user = access(&tokens);
    let body = job_request();
    // The first answer is the job, already failed with the reason: nothing to retry.
    let (status, replayed, first) = create(&api, user, "key-1", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed);
    assert_eq!(first["status"], "failed", "{first}");
    let reason = first["error_message"].as_str().unwrap();
    assert!(
        reason.contains("could not start a worker") && reason.contains("ckrv-orchestrator"),
        "{reason}"
    );
    // A client that retries anyway (its answer lost, say) finds the same job, as often as it
    // tries, as the built-in plugin's four tries would.
    for _ in 0..3 {
        let (status, replayed, again) = create(&api, user, "key-1", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{again}");
        assert!(replayed, "{again}");
        assert_eq!(again["id"], first["id"]);
    }
    assert_eq!(job_count(&api, user).await, 1);
    let (_, me) = api.get("/v1/users/me", user).await;
    assert_eq!(me["job_quota_remaining"], 99, "one job, one unit: {me}");
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let (status, _, _) = create(&api, &user, "key-1", &job_request()).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut other = job_request();
    other["git_base_branch"] = "develop".into();
    let (status, _, error) = create(&api, &user, "key-1", &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"], "unprocessable_request");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{error}"
    );
    assert_eq!(job_count(&api, &user).await, 1);
}

#[tokio::test]
async fn keys_are_per_account() {
    let (api, alice) = TestApi::signed_in("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let bob = support::access(&bob);
    let (_, _, a) = create(&api, &alice, "shared", &job_request()).await;
    let (status, replayed, b) = create(&api, bob, "shared", &job_request()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!replayed, "bob's key is his own");
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn concurrent_duplicates_make_one_job() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let body = job_request();
    let tries = (0..12).map(|_| create(&api, &user, "once", &body));
    let answers = futures::future::join_all(tries).await;
    let mut ids = Vec::new();
    for (status, _, body) in &answers {
        match *status {
            StatusCode::CREATED => ids.push(body["id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT => assert_eq!(body["error"], "conflict", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(job_count(&api, &user).await, 1);
}

#[tokio::test]
async fn malformed_keys_are_bad_requests_and_make_nothing() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    for key in ["", "has space", &"k".repeat(256)] {
        let (status, _, error) = create(&api, &user, key, &job_request()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}: {error}");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .contains("Idempotency-Key")
        );
    }
    assert_eq!(job_count(&api, &user).await, 0);
    // A request refused for its body does not use up its key.
    let mut bad = job_request();
    bad["git_repo_url"] = "file:///etc".into();
    let (status, _, _) = create(&api, &user, "fresh", &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, replayed, _) = create(&api, &user, "fresh", &job_request()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(!replayed);
}
