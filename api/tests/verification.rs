//! Verification as the API sees it (docs/verification.md), on both databases: the worker's
//! report comes with phase `verifying`, is checked, and becomes the job's `verification` and
//! `verified`; the operator's `--verify-timeout` reaches the worker. The check itself runs
//! through the real binaries in tests/e2e/tests/verification.rs.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{RecordingDispatcher, TestApi, access, job_request};

fn phase(verification: Option<Value>, phase: &str) -> Value {
    json!({"phase": phase, "agent": "script", "verification": verification})
}

fn found(verdict: &str, exit_code: Option<i32>) -> Value {
    json!({"command": "sh check.sh", "verdict": verdict, "exit_code": exit_code,
           "duration_ms": 1200, "last_lines": ["sum: FAILED"],
           "tests": {"passed": 1, "failed": 1, "skipped": 0}})
}

#[tokio::test]
async fn the_workers_verification_is_checked_and_becomes_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let api =
        TestApi::start_configured(dir.path(), Arc::new(RecordingDispatcher::default()), |c| {
            c.engine.verify_timeout = Duration::from_secs(42);
        })
        .await;
    let token = access(&api.login("dev@example.com").await).to_string();
    let (status, job) = api.post("/v1/jobs", &token, job_request()).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert!(job["verification"].is_null() && job["verified"].is_null());
    let id = job["id"].as_str().unwrap().to_owned();
    let worker = api.dispatcher.token_for(&id);
    let (_, work) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(work["verify_timeout_s"], 42, "{work}");

    let path = format!("/v1/worker/jobs/{id}/phase");
    let mut chatty = found("failed", Some(3));
    chatty["last_lines"] = json!(vec!["line"; 51]);
    for (update, says) in [
        (
            phase(Some(found("failed", Some(3))), "diffing"),
            "verification goes with phase `verifying`, not `diffing`",
        ),
        (phase(Some(chatty), "verifying"), "quotes too much"),
    ] {
        let (status, body) = api.post(&path, &worker, update).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let said = body["error_description"].as_str().unwrap();
        assert!(said.contains(says), "{said}");
    }
    let (status, body) = api
        .post(
            &path,
            &worker,
            phase(Some(json!({"verdict": "maybe"})), "verifying"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Only the job's own worker reports it.
    let (status, _) = api
        .call(
            Method::POST,
            &path,
            Some(&token),
            Some(phase(Some(found("passed", Some(0))), "verifying")),
        )
        .await;
    assert!(status.is_client_error(), "{status}");

    let (status, body) = api.post(&path, &worker, phase(None, "verifying")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["phase"], "verifying");
    assert!(job["verification"].is_null(), "not before it ran");
    let (status, body) = api
        .post(
            &path,
            &worker,
            phase(Some(found("failed", Some(3))), "verifying"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["verified"], false, "{job}");
    assert_eq!(job["verification"]["verdict"], "failed");
    assert_eq!(job["verification"]["exit_code"], 3);
    assert_eq!(job["verification"]["tests"]["failed"], 1);
    assert_eq!(job["verification"]["last_lines"], json!(["sum: FAILED"]));

    // A failed check does not fail the job, and the record stays after its end.
    let (status, body) = api
        .post(
            &format!("/v1/worker/jobs/{id}/complete"),
            &worker,
            json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["verified"], false);
    let (_, listed) = api.get("/v1/jobs", &token).await;
    assert_eq!(listed["jobs"][0]["verification"]["command"], "sh check.sh");

    // A check that could not run says nothing of the change.
    let (_, second) = api.post("/v1/jobs", &token, job_request()).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let worker = api.dispatcher.token_for(&second_id);
    let not_run = json!({"command": "t", "verdict": "not_run", "duration_ms": 0,
                         "last_lines": [], "note": "no sandbox here"});
    let (status, body) = api
        .post(
            &format!("/v1/worker/jobs/{second_id}/phase"),
            &worker,
            phase(Some(not_run), "verifying"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, job) = api.get(&format!("/v1/jobs/{second_id}"), &token).await;
    assert!(job["verified"].is_null(), "{job}");
    assert_eq!(job["verification"]["note"], "no sandbox here");
}
