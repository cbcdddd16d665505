//! Retention: a finished job's diff and log are removed once it is older than the retention;
//! the job stays listed and asking for them says they expired. Running jobs keep everything.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{RecordingDispatcher, TestApi, access};

const DIFF: &str = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-draft\n+final\n";

#[tokio::test]
async fn an_old_jobs_diff_and_log_expire_and_the_api_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let api =
        TestApi::start_configured(dir.path(), Arc::new(RecordingDispatcher::default()), |c| {
            // Long enough that the log is archived (every 20 ms) well before it expires.
            c.retention = Duration::from_secs(3);
            c.log_archive.period = Duration::from_millis(20);
        })
        .await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, done) = api.create_job(user).await;
    let done = done["id"].as_str().unwrap().to_owned();
    let stats = json!({"files_changed": 1, "insertions": 1, "deletions": 1,
        "files": [{"path": "README.md", "insertions": 1, "deletions": 1, "binary": false}]});
    api.work_job(
        &done,
        &["a line"],
        Some((DIFF, stats)),
        Some(json!({"state": "succeeded"})),
    )
    .await;
    let (_, running) = api.create_job(user).await;
    let running = running["id"].as_str().unwrap().to_owned();
    api.work_job(&running, &["still going"], None, None).await;
    let diff_file = dir
        .path()
        .join("artifacts/jobs")
        .join(&done)
        .join("diff.patch");
    assert!(diff_file.exists());
    let log_file = diff_file.with_file_name("log.jsonl");
    for _ in 0..190 {
        if log_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(log_file.exists(), "the finished job's log is archived");

    // Just finished: all there. Past the retention: gone, and said so.
    let (status, _) = api.get(&format!("/v1/jobs/{done}/logs"), user).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = diff(&api, user, &done).await;
    assert_eq!(status, StatusCode::OK);
    let mut answer = (StatusCode::OK, String::new());
    for _ in 0..300 {
        answer = diff(&api, user, &done).await;
        if answer.0 == StatusCode::GONE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, error) = answer;
    let error: serde_json::Value = serde_json::from_str(&error).unwrap();
    assert_eq!(status, StatusCode::GONE, "{error}");
    assert_eq!(error["error"], "gone");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{error}"
    );
    let (status, _) = api.get(&format!("/v1/jobs/{done}/logs"), user).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        !diff_file.exists(),
        "the diff is removed from the artifact store"
    );
    assert!(!log_file.exists(), "so is the archived log");
    let (status, job) = api.get(&format!("/v1/jobs/{done}"), user).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(job["status"], "succeeded", "the job itself stays");

    // A job still running keeps its log whatever its age.
    let (status, page) = api.get(&format!("/v1/jobs/{running}/logs"), user).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["logs"][0]["message"], "still going");
}

/// The job's diff as the CLI fetches it: status and body.
async fn diff(api: &TestApi, user: &str, id: &str) -> (StatusCode, String) {
    let response = api
        .http
        .get(format!("{}/v1/jobs/{id}/artifacts/diff", api.url))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}
