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
use support::{RecordingDispatcher, TestApi, access, each, job_request, line};

const DIFF: &str = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-draft\n+final\n";

#[tokio::test]
async fn a_job_goes_from_pending_to_succeeded_with_its_log_and_diff() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();

    let (status, job) = api.create_job(user).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["status"], "pending");
    assert_eq!(job["state"], "pending");
    assert_eq!(job["phase"], "queued");
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["feature_branch_name"], format!("ckrv/{}", &id[..8]));
    assert_eq!(job["git_repo_url"], "https://git.example.com/sample.git");
    assert_eq!(job["git_base_branch"], "main");
    assert_eq!(job["spec_path"], "specs/hi/spec.md");
    // Absent values are left out rather than sent as null.
    for absent in [
        "started_at",
        "completed_at",
        "result_status",
        "error_message",
    ] {
        assert!(job.get(absent).is_none(), "{absent}: {job}");
    }
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
    assert!(
        work["spec_content"]
            .as_str()
            .unwrap()
            .contains("agent: script")
    );
    assert_eq!(work["job"]["status"], "running");
    let (status, _) = api
        .post(
            &format!("{wbase}/phase"),
            &worker,
            json!({"phase": "agent", "agent": "script"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(work["log_sequence"], 0);
    // The second batch is sent twice, as a worker retrying a lost answer would: stored once.
    for (first, batch) in [
        (1, vec!["one", "two"]),
        (3, vec!["three"]),
        (3, vec!["three"]),
    ] {
        let lines: Vec<Value> = batch.into_iter().map(line).collect();
        let body = json!({"first_sequence": first, "lines": lines});
        let (status, body) = api.post(&format!("{wbase}/logs"), &worker, body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (status, job) = api.get(&format!("/v1/jobs/{}", &id[..6]), user).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "running");
    assert_eq!(job["phase"], "agent");
    assert_eq!(job["agent"], "script");
    assert!(job["started_at"].is_string());

    // The contract's read is the whole log; pages read on from a cursor with dense sequences.
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs"), user).await;
    assert_eq!(page["logs"].as_array().unwrap().len(), 3, "{page}");
    assert_eq!(page["logs"][0]["source"], "script");
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs?limit=2"), user).await;
    let seqs: Vec<u64> = page["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(page["next_after"], 2);
    assert_eq!(page["job_state"], "running");
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs?after=2"), user).await;
    assert_eq!(page["logs"][0]["message"], "three");
    assert_eq!(page["logs"][0]["sequence"], 3);
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs?tail=2"), user).await;
    let messages = each(&page["logs"], "message");
    assert_eq!(messages, ["two", "three"]);

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
            json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result_status"], "succeeded");
    assert_eq!(
        job["result_summary"],
        "1 file changed, 1 insertion(+), 1 deletion(-)"
    );
    assert_eq!(job["phase"], "finished");
    assert_eq!(job["diff_stats"]["files"][0]["path"], "README.md");
    assert!(job["completed_at"].is_string());
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
            .starts_with("text/plain")
    );
    assert_eq!(diff.text().await.unwrap(), DIFF);

    // The job has ended, and its worker's token with it: no second completion, no late lines
    // (a process left behind cannot rewrite the job).
    let (status, error) = api
        .post(
            &format!("{wbase}/complete"),
            &worker,
            json!({"state": "failed", "error_message": "late"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"], "not_authenticated");
    let (status, _) = api
        .post(
            &format!("{wbase}/logs"),
            &worker,
            json!({"first_sequence": 4, "lines": [line("bye")]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs?after=3"), user).await;
    assert_eq!(page["logs"].as_array().unwrap().len(), 0);
    assert_eq!(page["job_state"], "succeeded");
}

#[tokio::test]
async fn bad_job_requests_get_invalid_request_errors() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();
    let cases = [
        ("spec_content", json!("  "), "spec_content is empty"),
        ("git_repo_url", json!(""), "git_repo_url is empty"),
        (
            "git_repo_url",
            json!("--upload-pack=evil"),
            "is not a repository URL",
        ),
        ("git_repo_url", json!("R"), "is not a repository URL"),
        (
            "git_repo_url",
            json!("mailto:dev@example.com"),
            "is not a repository URL",
        ),
        (
            "git_repo_url",
            json!("file:///etc"),
            "is not a repository URL",
        ),
        (
            "git_repo_url",
            json!("/srv/repos/app.git"),
            "is not a repository URL",
        ),
        (
            "git_repo_url",
            json!("ext::sh -c id"),
            "is not a repository URL",
        ),
        (
            "git_repo_url",
            json!("http://127.0.0.1/r.git"),
            "is not a repository URL",
        ),
        (
            "git_repo_url",
            json!("https://127.0.0.1/r.git"),
            "a loopback address",
        ),
        (
            "git_repo_url",
            json!("https://[::ffff:7f00:1]/r.git"),
            "a loopback address",
        ),
        (
            "git_repo_url",
            json!("https://localhost/r.git"),
            "a loopback name",
        ),
        (
            "git_repo_url",
            json!("https://x:ghp_token@127.0.0.1/r.git"),
            "ckrv cloud credentials add",
        ),
        ("git_base_branch", json!(""), "git_base_branch is empty"),
        ("git_base_branch", json!("a..b"), "not a valid branch name"),
        // PostgreSQL text cannot hold a NUL: refused on both databases alike.
        ("spec_content", json!("a\u{0}b"), "NUL character"),
        ("spec_path", json!("specs/\u{0}.md"), "NUL character"),
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
    let (status, error) = api
        .post("/v1/jobs", user, json!({"spec_content": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{error}"
    );

    let mut request = job_request();
    request["git_credential_name"] = json!("github-work");
    let (status, error) = api.post("/v1/jobs", user, request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let description = error["error_description"].as_str().unwrap();
    assert!(
        description.contains("Credential not found: 'github-work'")
            && description.contains("ckrv cloud credentials list"),
        "{error}"
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
    for query in [
        "limit=0",
        "limit=-1",
        "limit=101",
        "status=cancelled",
        "status=done",
    ] {
        let (status, error) = api.get(&format!("/v1/jobs?{query}"), user).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error["error"], "invalid_request", "{query}");
    }
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
    let ids = each(&page["jobs"], "id");
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
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();
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
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();
    for n in 0..100 {
        let (status, job) = api.create_job(user).await;
        assert_eq!(status, StatusCode::CREATED, "job {n}: {job}");
    }
    let (status, error) = api.create_job(user).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    // The contract's QuotaExceededError, plus the description every error has.
    assert_eq!(error["error"], "quota_exceeded");
    assert!(
        error["message"].as_str().unwrap().contains("resets at"),
        "{error}"
    );
    assert_eq!(error["message"], error["error_description"]);
    let (_, me) = api.get("/v1/users/me", user).await;
    assert_eq!(error["quota_resets_at"], me["billing_cycle_end"]);
    // No billing page configured: no upgrade link rather than an invented one.
    assert!(error.get("upgrade_url").is_none(), "{error}");
    assert_eq!(me["job_quota_remaining"], 0);
    assert_eq!(me["job_quota_limit"], 100);
    assert_eq!(api.dispatcher.started.lock().unwrap().len(), 100);
}

#[tokio::test]
async fn cancelling_stops_the_worker_and_ends_the_job_once() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let user = user.as_str();
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap();
    let cancel = format!("/v1/jobs/{id}/cancel");
    let (status, job) = api.call(Method::POST, &cancel, Some(user), None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    // A contract client sees a failed job; the `state` extension says why.
    assert_eq!(job["status"], "failed");
    assert_eq!(job["result_status"], "failed");
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["error_message"], "cancelled by the user");
    assert_eq!(job["phase"], "finished");
    // Filtering by the contract's `failed` finds it; `pending` no longer does.
    let (_, failed) = api.get("/v1/jobs?status=failed", user).await;
    assert_eq!(failed["jobs"][0]["id"], id);
    let (_, pending) = api.get("/v1/jobs?status=pending", user).await;
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 0);
    assert_eq!(*api.dispatcher.stopped.lock().unwrap(), [id.to_string()]);
    let (status, error) = api.call(Method::POST, &cancel, Some(user), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    // The worker, arriving late, finds its token revoked with the job.
    let worker = api.dispatcher.token_for(id);
    let (status, _) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
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
        json!({"first_sequence": 1, "lines": [line("before")]}),
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
        json!({"first_sequence": 2, "lines": [line("during")]}),
    )
    .await;
    read_until("during", &mut text).await;
    api.post(
        &format!("{wbase}/complete"),
        &worker,
        json!({"state": "failed", "error_message": "agent exited 1"}),
    )
    .await;
    read_until("event: end", &mut text).await;
    assert!(
        text.contains("id: 1\n") && text.contains("id: 2\n"),
        "{text}"
    );
    assert!(text.find("before") < text.find("during"));
    assert!(text.contains("event: end\ndata: failed"), "{text}");

    // A client that reconnects with the last event id it saw resumes after it.
    let resumed = api
        .http
        .get(format!("{}/v1/jobs/{id}/logs?follow=true", api.url))
        .bearer_auth(&user)
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!resumed.contains("before"), "{resumed}");
    assert!(
        resumed.contains("during") && resumed.contains("event: end"),
        "{resumed}"
    );
}

#[tokio::test]
async fn a_long_poll_answers_when_a_line_arrives_or_the_job_ends() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user).to_string();
    let (_, job) = api.create_job(&user).await;
    let id = job["id"].as_str().unwrap().to_string();
    let worker = api.dispatcher.token_for(&id);
    let wbase = format!("/v1/worker/jobs/{id}");
    let poll = |after: u64| {
        let request = api
            .http
            .get(format!(
                "{}/v1/jobs/{id}/logs?after={after}&wait_ms=30000",
                api.url
            ))
            .bearer_auth(&user);
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<serde_json::Value>().await.unwrap()
        })
    };

    // Nothing yet: the answer waits for the worker's line, then carries it.
    let waiting = poll(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "an empty page of a running job waits"
    );
    api.post(
        &format!("{wbase}/logs"),
        &worker,
        json!({"first_sequence": 1, "lines": [line("arrived")]}),
    )
    .await;
    let page = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the line ends the wait")
        .unwrap();
    assert_eq!(page["logs"][0]["message"], "arrived", "{page}");
    assert_eq!(page["next_after"], 1);

    // Waiting again after it: the job's end answers, with no entry.
    let waiting = poll(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    api.post(
        &format!("{wbase}/complete"),
        &worker,
        json!({"state": "failed", "error_message": "agent exited 1"}),
    )
    .await;
    let page = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the job's end ends the wait")
        .unwrap();
    assert_eq!(page["logs"], json!([]), "{page}");
    assert_eq!(page["job_state"], "failed");

    // A finished job's page is answered at once, and the bound is checked.
    let (status, page) = api
        .get(&format!("/v1/jobs/{id}/logs?after=1&wait_ms=30000"), &user)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["job_state"], "failed");
    let (status, error) = api
        .get(&format!("/v1/jobs/{id}/logs?wait_ms=30001"), &user)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("wait_ms must be between 0 and 30000"),
        "{error}"
    );
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
        if job["status"] != "pending" && job["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error_message"].as_str().unwrap();
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
    // The job was made, and failed at once with the reason; the answer is that job, so the
    // client has nothing to retry.
    let (status, job) = api.create_job(user).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap()
            .contains("no-such-orchestrator"),
        "{job}"
    );
    let (_, page) = api.get("/v1/jobs", user).await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["jobs"][0]["status"], "failed");
}

#[tokio::test]
async fn a_local_worker_gets_an_empty_environment_and_its_token_on_stdin() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    std::fs::create_dir(&seen).unwrap();
    // A stand-in orchestrator that records what it was given, then exits without working.
    let script = dir.path().join("orchestrator.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv > {0}/env\nprintf '%s\\n' \"$@\" > {0}/args\nread token\nprintf '%s' \"$token\" > {0}/token\nexec sleep 30\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = DispatcherConfig::Local {
        orchestrator: script,
    };
    let api = TestApi::start_with(
        &dir.path().join("api"),
        config,
        Arc::new(RecordingDispatcher::default()),
    )
    .await;
    let user = api.login("dev@example.com").await;
    let (_, job) = api.create_job(access(&user)).await;
    let id = job["id"].as_str().unwrap();
    let token_file = seen.join("token");
    for _ in 0..100 {
        if token_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let env = std::fs::read_to_string(seen.join("env")).unwrap();
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["HOME", "PATH"], "{env}");
    let args = std::fs::read_to_string(seen.join("args")).unwrap();
    assert!(
        !args.contains("ckrv_wt_"),
        "the token is never an argument: {args}"
    );
    // What arrived on stdin is this job's worker token.
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("ckrv_wt_"), "{token}");
    assert!(!env.contains(&token));
    let (status, work) = api.get(&format!("/v1/worker/jobs/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    assert_eq!(work["job"]["id"], id);
}

#[tokio::test]
async fn a_nul_reaches_no_database_from_a_worker_or_a_path() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let (_, job) = api.create_job(&user).await;
    let id = job["id"].as_str().unwrap();
    let worker = api.dispatcher.token_for(id);
    let (status, error) = api
        .post(
            &format!("/v1/worker/jobs/{id}/logs"),
            &worker,
            json!({"first_sequence": 1, "lines": [line("bad\u{0}line")]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error.to_string().contains("NUL character"), "{error}");
    let (status, error) = api
        .call(Method::DELETE, "/v1/credentials/a%00b", Some(&user), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
}

/// `ssh://` and scp-like URLs are held to the rules `https://` ones are: their hosts parsed as
/// hosts (so `0x7f.1` and `127.1` are loopback), and no user or host ssh would read as an
/// option. Nothing here connects: the API only parses.
#[tokio::test]
async fn ssh_and_scp_like_repository_urls_meet_the_same_host_rules() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let cases = [
        ("ssh://git@0x7f.1/org/repo.git", "is a loopback address"),
        ("ssh://git@127.1/org/repo.git", "is a loopback address"),
        ("ssh://git@2130706433/org/repo.git", "is a loopback address"),
        ("git@127.1:org/repo.git", "is a loopback address"),
        ("git@0x7f.1:org/repo.git", "is a loopback address"),
        (
            "ssh://-oProxyCommand=touch.pwned@github.com/org/repo.git",
            "user begins with '-'",
        ),
        (
            "ssh://git@-oProxyCommand=touch.pwned/org/repo.git",
            "host begins with '-'",
        ),
        (
            "git@-oProxyCommand=touch.pwned:org/repo.git",
            "host begins with '-'",
        ),
        (
            "-oProxyCommand=touch.pwned@github.com:org/repo.git",
            "user begins with '-'",
        ),
    ];
    for (url, message) in cases {
        let mut request = job_request();
        request["git_repo_url"] = json!(url);
        let (status, error) = api.post("/v1/jobs", &user, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {error}");
        assert_eq!(error["error"], "invalid_request");
        let description = error["error_description"].as_str().unwrap();
        assert!(
            description.starts_with("git_repo_url: ") && description.contains(message),
            "{url}: {error}"
        );
    }
    for url in [
        "ssh://git@github.com/org/repo.git",
        "git@github.com:org/repo.git",
    ] {
        let mut request = job_request();
        request["git_repo_url"] = json!(url);
        let (status, job) = api.post("/v1/jobs", &user, request).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {job}");
        assert_eq!(job["git_repo_url"], url);
    }
}

/// A worker's log batch whose sequences would not fit the log's 64-bit signed column is
/// refused with what to do, never a panic; ordinary numbering still works.
#[tokio::test]
async fn log_sequences_beyond_the_columns_range_are_refused() {
    let (api, user) = TestApi::signed_in("dev@example.com").await;
    let (_, job) = api.create_job(&user).await;
    let id = job["id"].as_str().unwrap();
    let worker = api.dispatcher.token_for(id);
    let logs = format!("/v1/worker/jobs/{id}/logs");
    let biggest = i64::MAX.unsigned_abs();
    for (first, count) in [
        (u64::MAX, 1),
        (u64::MAX, 2),
        (u64::MAX - 1, 3),
        (biggest + 1, 1),
        (biggest, 2),
    ] {
        let lines: Vec<Value> = (0..count).map(|n| line(&format!("line {n}"))).collect();
        let (status, error) = api
            .post(
                &logs,
                &worker,
                json!({"first_sequence": first, "lines": lines}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{first}+{count}: {error}");
        let description = error["error_description"].as_str().unwrap();
        assert!(
            description.contains(&format!("go up to {biggest}")) && description.contains("1, 2, 3"),
            "{error}"
        );
    }
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs"), &user).await;
    assert_eq!(page["logs"], json!([]), "nothing was stored");

    // The largest sequence there is (past this job's line limit, so it stands for the notice
    // that says the log was cut), and the usual numbering from 1.
    for (first, message) in [(biggest, "the last line there can be"), (1, "first")] {
        let (status, body) = api
            .post(
                &logs,
                &worker,
                json!({"first_sequence": first, "lines": [line(message)]}),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs"), &user).await;
    let messages = each(&page["logs"], "message");
    assert_eq!(messages.len(), 2, "{page}");
    assert_eq!(messages[0], "first");
    assert!(messages[1].starts_with("log truncated"), "{page}");
}
