//! Publishing as the API sees it (docs/publish.md), on both databases: how a job's mode is
//! chosen (request, spec front matter, operator default), that publishing needs the credential
//! it pushes with, the worker's report of where the result went, checked against the job, and
//! the `job.published` webhook it sends in the same transaction. The push and the pull request
//! themselves run through the real binaries in tests/e2e/tests/publish.rs.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::response::IntoResponse;
use ckrv_test_support::FakeEndpoint;
use ckrv_wit::types::PublishMode;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{RecordingDispatcher, TestApi, access, job_request};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// An API whose operator publishes branches unless a job says otherwise, and whose webhooks
/// may go to loopback.
async fn api(dir: &std::path::Path) -> TestApi {
    TestApi::start_configured(dir, Arc::new(RecordingDispatcher::default()), |c| {
        c.allow_local_repos = true;
        c.default_publish = PublishMode::Branch;
    })
    .await
}

fn request(spec: &str, publish: Option<&str>, credential: Option<&str>) -> Value {
    let mut request = job_request();
    request["spec_content"] = spec.into();
    request["git_credential_name"] = credential.into();
    if let Some(publish) = publish {
        request["publish"] = publish.into();
    }
    request
}

const SPEC: &str = "---\nagent: script\nrun: echo hi\n---\n# Hi\n";

async fn put(api: &TestApi, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    api.call(Method::PUT, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn a_jobs_mode_comes_from_the_request_the_spec_or_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let token = access(&api.login("dev@example.com").await).to_string();

    // The operator publishes by default, and a push needs the job's credential.
    let (status, body) = api
        .post("/v1/jobs", &token, request(SPEC, None, None))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error_description"].as_str().unwrap();
    assert!(
        message.contains("publish: branch") && message.contains("git_credential_name"),
        "{message}"
    );
    let (status, body) = api
        .post("/v1/jobs", &token, request(SPEC, Some("none"), None))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["publish"], "none");

    let (status, credential) = api
        .post(
            "/v1/credentials",
            &token,
            json!({"name": "forge", "provider": "github", "credential_type": "pat", "value": "tok"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{credential}");
    let (_, job) = api
        .post("/v1/jobs", &token, request(SPEC, None, Some("forge")))
        .await;
    assert_eq!(job["publish"], "branch", "the operator's default");
    let fronted = "---\nagent: script\nrun: echo hi\npublish: draft-pr\n---\n# Hi\n";
    let (_, job) = api
        .post("/v1/jobs", &token, request(fronted, None, Some("forge")))
        .await;
    assert_eq!(job["publish"], "draft_pr", "the spec's front matter");
    let (_, job) = api
        .post(
            "/v1/jobs",
            &token,
            request(fronted, Some("pr"), Some("forge")),
        )
        .await;
    assert_eq!(job["publish"], "pr", "the request's");

    // Bad modes are refused naming where they were.
    let bad = "---\nagent: script\nrun: echo hi\npublish: sometimes\n---\n# Hi\n";
    let (status, body) = api
        .post("/v1/jobs", &token, request(bad, None, Some("forge")))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("front-matter key `publish`: `sometimes` is not a way to publish"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/v1/jobs",
            &token,
            request(SPEC, Some("sometimes"), Some("forge")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
}

#[tokio::test]
async fn the_workers_report_is_checked_recorded_and_sent_as_job_published() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let token = access(&api.login("dev@example.com").await).to_string();
    let receiver = FakeEndpoint::start(|_| async { StatusCode::NO_CONTENT.into_response() }).await;
    let (status, hook) = api
        .post(
            "/v1/webhooks",
            &token,
            json!({"url": format!("{}/hook", receiver.url), "events": ["job.published"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    api.post(
        "/v1/credentials",
        &token,
        json!({"name": "forge", "provider": "github", "credential_type": "pat", "value": "tok"}),
    )
    .await;
    let (_, job) = api
        .post("/v1/jobs", &token, request(SPEC, Some("pr"), Some("forge")))
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let branch = job["feature_branch_name"].as_str().unwrap().to_owned();
    let worker = api.dispatcher.token_for(&id);
    let (_, work) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(work["publish"], "pr", "{work}");

    let path = format!("/v1/worker/jobs/{id}/publication");
    let good = json!({"mode": "pr", "branch": branch, "commit": COMMIT,
                      "pull_request_url": "http://127.0.0.1:1/acme/app/pull/7"});
    for (change, why) in [
        (json!({"branch": "main"}), "its own branch"),
        (json!({"mode": "branch"}), "the job publishes pr"),
        (json!({"commit": "abc"}), "a full commit id"),
        (json!({"commit": format!("{COMMIT}00")}), "a full commit id"),
        (
            json!({"pull_request_url": "ftp://x/pr/1"}),
            "an http(s) URL",
        ),
    ] {
        let mut bad = good.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let (status, body) = put(&api, &path, &worker, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change}: {body}");
        assert!(
            body["error_description"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    // Only the job's own worker reports.
    let (status, _) = put(&api, &path, &token, good.clone()).await;
    assert!(status.is_client_error(), "{status}");
    let (status, body) = put(&api, &path, &worker, good.clone()).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["publication"]["branch"], branch.as_str());
    assert_eq!(job["publication"]["commit"], COMMIT);
    assert_eq!(
        job["publication"]["pull_request_url"],
        "http://127.0.0.1:1/acme/app/pull/7"
    );
    let mut requests = receiver.requests();
    for _ in 0..200 {
        if !requests.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        requests = receiver.requests();
    }
    assert_eq!(requests.len(), 1, "one job.published, no other event");
    let event: Value = requests[0].json();
    assert_eq!(event["type"], "job.published");
    assert_eq!(event["data"]["job"]["id"], id.as_str());
    assert_eq!(event["data"]["job"]["publication"]["commit"], COMMIT);

    // Once the job has ended, its worker reports nothing more.
    let (status, body) = api
        .post(
            &format!("/v1/worker/jobs/{id}/complete"),
            &worker,
            json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = put(&api, &path, &worker, good).await;
    assert!(status.is_client_error(), "{status}");
}
