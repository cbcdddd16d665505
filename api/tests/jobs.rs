//! A job's life over real HTTP: created by a user, worked by its worker (played by the test
//! with the token the dispatcher received), read back by the user.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use ckrv_api::DispatcherConfig;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{RecordingDispatcher, TestApi, access, job_request, line};

const DIFF: &str = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-draft\n+final\n";

#[tokio::test]
async fn a_job_goes_from_pending_to_succeeded_with_its_log_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);

    let (status, job) = api.create_job(user).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["status"], "pending");
    assert_eq!(job["phase"], "queued");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["feature_branch"], format!("ckrv/{}", &id[..8]));
    assert_eq!(job["repo_url"], "https://git.example.com/sample.git");
    let worker = api.dispatcher.token_for(&id);
    let wbase = format!("/v1/worker/jobs/{id}");

    // Before the worker is done there is no diff, and the description says why.
    let (status, error) = api
        .get(&format!("/v1/jobs/{}/artifacts/diff", &id[..8]), user)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("not finished"),
        "{error}"
    );

    let (status, work) = api.get(&wbase, &worker).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert!(work["spec"].as_str().unwrap().contains("agent: script"));
    assert_eq!(work["job"]["status"], "running");
    let (status, _) = api
        .post(
            &format!("{wbase}/phase"),
            &worker,
            json!({"phase": "agent", "agent": "script"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for batch in [vec!["one", "two"], vec!["three"]] {
        let lines: Vec<Value> = batch.into_iter().map(line).collect();
        let (status, body) = api
            .post(&format!("{wbase}/logs"), &worker, json!({"lines": lines}))
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (status, job) = api.get(&format!("/v1/jobs/{}", &id[..6]), user).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "running");
    assert_eq!(job["phase"], "agent");
    assert_eq!(job["agent"], "script");
    assert!(job["started_at"].is_string());

    // Pages read on from a cursor with dense sequences.
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs?limit=2"), user).await;
    let seqs: Vec<u64> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(page["next_after"], 2);
    assert_eq!(page["job_status"], "running");
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs?after=2"), user).await;
    assert_eq!(page["entries"][0]["message"], "three");
    assert_eq!(page["entries"][0]["sequence"], 3);

    let response = api
        .http
        .put(format!("{}{wbase}/artifacts/diff", api.url))
        .bearer_auth(&worker)
        .body(DIFF)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let summary = json!({"files_changed": 1, "insertions": 1, "deletions": 1,
        "files": [{"path": "README.md", "insertions": 1, "deletions": 1, "binary": false}]});
    let (status, _) = api.post(&format!("{wbase}/result"), &worker, summary).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .post(
            &format!("{wbase}/complete"),
            &worker,
            json!({"status": "succeeded", "error": null}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["phase"], "finished");
    assert_eq!(job["result"]["files"][0]["path"], "README.md");
    assert!(job["finished_at"].is_string());
    let diff = api
        .http
        .get(format!("{}/v1/jobs/{id}/artifacts/diff", api.url))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    assert_eq!(diff.status(), StatusCode::OK);
    assert!(
        diff.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/x-diff")
    );
    assert_eq!(diff.text().await.unwrap(), DIFF);

    // An ended job takes no more results, but late log lines are kept.
    let (status, error) = api
        .post(
            &format!("{wbase}/complete"),
            &worker,
            json!({"status": "failed", "error": "late"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error"], "conflict");
    let (status, _) = api
        .post(
            &format!("{wbase}/logs"),
            &worker,
            json!({"lines": [line("bye")]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs?after=3"), user).await;
    assert_eq!(page["entries"][0]["sequence"], 4);
    assert_eq!(page["job_status"], "succeeded");
}

#[tokio::test]
async fn bad_job_requests_get_invalid_request_errors() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let cases = [
        ("spec", json!("  "), "spec is empty"),
        ("repo_url", json!(""), "repo_url is empty"),
        ("repo_url", json!("--upload-pack=evil"), "not a clone URL"),
        ("base_branch", json!(""), "base_branch is empty"),
        ("base_branch", json!("a..b"), "not a valid branch name"),
    ];
    for (field, value, message) in cases {
        let mut request = job_request();
        request[field] = value;
        let (status, error) = api.post("/v1/jobs", user, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {error}");
        assert_eq!(error["error"], "invalid_request");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .contains(message),
            "{error}"
        );
    }
    // Malformed JSON and missing fields are JSON errors too, never plain text.
    let response = api
        .http
        .post(format!("{}/v1/jobs", api.url))
        .bearer_auth(user)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "invalid_request");
    let (status, error) = api.post("/v1/jobs", user, json!({"spec": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{error}"
    );

    let mut request = job_request();
    request["credential"] = json!("github-work");
    let (status, error) = api.post("/v1/jobs", user, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("credential 'github-work' not found")
    );

    let (status, error) = api.get("/v1/jobs/abc", user).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("at least 4")
    );
    for unknown in ["ffffffff", "zzzz%", "____"] {
        let (status, error) = api.get(&format!("/v1/jobs/{unknown}"), user).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
        assert!(
            error["error_description"]
                .as_str()
                .unwrap()
                .starts_with("job not found")
        );
    }
    let (status, _) = api.get("/v1/jobs?limit=0", user).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get("/v1/jobs?cursor=xyz", user).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing was created by any of the above.
    let (_, page) = api.get("/v1/jobs", user).await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn tenants_and_workers_see_only_their_own_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let (_, a_job) = api.create_job(access(&alice)).await;
    let (_, b_job) = api.create_job(access(&bob)).await;
    let a_id = a_job["id"].as_str().unwrap();
    let b_id = b_job["id"].as_str().unwrap();

    for path in [
        format!("/v1/jobs/{a_id}"),
        format!("/v1/jobs/{a_id}/logs"),
        format!("/v1/jobs/{a_id}/artifacts/diff"),
    ] {
        let (status, _) = api.get(&path, access(&bob)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/jobs/{a_id}/cancel"),
            Some(access(&bob)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = api.get("/v1/jobs", access(&bob)).await;
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b_id]);

    // A worker token is for its own job; it is not a user session either.
    let a_worker = api.dispatcher.token_for(a_id);
    let (status, error) = api.get(&format!("/v1/worker/jobs/{b_id}"), &a_worker).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error["error"], "forbidden");
    let (status, _) = api.get("/v1/jobs", &a_worker).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .get(&format!("/v1/worker/jobs/{a_id}"), access(&alice))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn jobs_list_newest_first_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let mut created = Vec::new();
    for _ in 0..5 {
        let (_, job) = api.create_job(user).await;
        created.push(job["id"].as_str().unwrap().to_string());
    }
    created.reverse();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api
            .get(&format!("/v1/jobs?limit=2&cursor={cursor}"), user)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, created);
}

#[tokio::test]
async fn the_monthly_quota_stops_the_hundred_and_first_job() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    for n in 0..100 {
        let (status, job) = api.create_job(user).await;
        assert_eq!(status, StatusCode::CREATED, "job {n}: {job}");
    }
    let (status, error) = api.create_job(user).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(error["error"], "quota_exceeded");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("resets at")
    );
    let (_, me) = api.get("/v1/users/me", user).await;
    assert_eq!(me["quota"]["used"], 100);
    assert_eq!(me["quota"]["remaining"], 0);
    assert_eq!(api.dispatcher.started.lock().unwrap().len(), 100);
}

#[tokio::test]
async fn cancelling_stops_the_worker_and_ends_the_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap();
    let cancel = format!("/v1/jobs/{id}/cancel");
    let (status, job) = api.call(Method::POST, &cancel, Some(user), None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["phase"], "finished");
    assert_eq!(*api.dispatcher.stopped.lock().unwrap(), [id.to_string()]);
    let (status, error) = api.call(Method::POST, &cancel, Some(user), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    // The worker, arriving late, is told the job is over.
    let worker = api.dispatcher.token_for(id);
    let (status, _) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn following_a_log_streams_lines_as_they_arrive_and_ends_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user).to_string();
    let (_, job) = api.create_job(&user).await;
    let id = job["id"].as_str().unwrap().to_string();
    let worker = api.dispatcher.token_for(&id);
    let wbase = format!("/v1/worker/jobs/{id}");
    api.post(
        &format!("{wbase}/logs"),
        &worker,
        json!({"lines": [line("before")]}),
    )
    .await;

    let response = api
        .http
        .get(format!("{}/v1/jobs/{id}/logs?follow=true", api.url))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut read_until = async |needle: &str, text: &mut String| {
        while !text.contains(needle) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .unwrap_or_else(|_| panic!("no `{needle}` in the stream: {text}"))
                .expect("stream open")
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until("before", &mut text).await;
    api.post(
        &format!("{wbase}/logs"),
        &worker,
        json!({"lines": [line("during")]}),
    )
    .await;
    read_until("during", &mut text).await;
    api.post(
        &format!("{wbase}/complete"),
        &worker,
        json!({"status": "failed", "error": "agent exited 1"}),
    )
    .await;
    read_until("event: end", &mut text).await;
    assert!(
        text.contains("id: 1\n") && text.contains("id: 2\n"),
        "{text}"
    );
    assert!(text.find("before") < text.find("during"));
    assert!(text.contains("event: end\ndata: failed"), "{text}");
}

#[tokio::test]
async fn a_worker_that_dies_without_reporting_fails_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = Arc::new(RecordingDispatcher::default());
    // A real process that exits non-zero at once, standing in for a crashed orchestrator.
    let config = DispatcherConfig::Local {
        orchestrator: "false".into(),
    };
    let api = TestApi::start_with(dir.path(), config, dispatcher).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (status, job) = api.create_job(user).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap();
    let mut job = job.clone();
    for _ in 0..100 {
        job = api.get(&format!("/v1/jobs/{id}"), user).await.1;
        if job["status"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("without completing the job"), "{error}");
    assert!(error.contains(&format!("workers/{id}.log")), "{error}");
    assert!(
        dir.path()
            .join("workers")
            .join(format!("{id}.log"))
            .exists()
    );
}

#[tokio::test]
async fn a_missing_orchestrator_is_reported_and_the_job_fails() {
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = Arc::new(RecordingDispatcher::default());
    let missing = dir.path().join("no-such-orchestrator");
    let config = DispatcherConfig::Local {
        orchestrator: missing.clone(),
    };
    let api = TestApi::start_with(dir.path(), config, dispatcher).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (status, error) = api.create_job(user).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error["error"], "unavailable");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("no-such-orchestrator")
    );
    let (_, page) = api.get("/v1/jobs", user).await;
    assert_eq!(page["jobs"][0]["status"], "failed");
}
