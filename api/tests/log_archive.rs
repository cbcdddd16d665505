//! A finished job's log moves to the artifact store as JSON lines and reads the same from there:
//! pages, cursors, `tail`, the SSE stream. The database keeps no rows of it afterwards; a
//! running job's log stays in the database.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use ckrv_api::jobs::log_archive::ArchiveSettings;
use reqwest::StatusCode;
use serde_json::json;
use support::{RecordingDispatcher, TestApi, access, each};

async fn archiving_api(dir: &std::path::Path) -> TestApi {
    TestApi::start_configured(dir, Arc::new(RecordingDispatcher::default()), |c| {
        c.log_archive = ArchiveSettings {
            period: Duration::from_millis(50),
            keep_rows: Duration::ZERO,
        };
    })
    .await
}

/// Waits until the archiver has marked the job's log archived and dropped its rows. The file
/// appears before the mark, and reads come from the rows until the mark; under a whole suite
/// on PostgreSQL a pass can take seconds, so this waits up to 30 s and then fails saying so.
async fn archived(store: &ckrv_api::store::Store, id: &str) {
    for _ in 0..600 {
        let marked = store
            .job(id)
            .await
            .unwrap()
            .unwrap()
            .logs_archived_at
            .is_some();
        if marked && store.last_log_sequence(id).await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id}'s log was not archived, with its rows dropped, within 30 s");
}

#[tokio::test]
async fn a_finished_jobs_log_is_archived_and_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let api = archiving_api(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let messages: Vec<String> = (1..=25).map(|n| format!("line {n} ünïcode")).collect();
    let lines: Vec<&str> = messages.iter().map(String::as_str).collect();
    let (_, done) = api.create_job(user).await;
    let done = done["id"].as_str().unwrap().to_owned();
    let (_, before) = api.get(&format!("/v1/jobs/{done}/logs"), user).await;
    api.work_job(
        &done,
        &lines,
        None,
        Some(json!({"state": "failed", "error_message": "x"})),
    )
    .await;
    let (_, running) = api.create_job(user).await;
    let running = running["id"].as_str().unwrap().to_owned();
    api.work_job(&running, &["still going"], None, None).await;
    let (_, from_rows) = api.get(&format!("/v1/jobs/{done}/logs"), user).await;
    assert_eq!(before["logs"], json!([]));

    let archive = dir
        .path()
        .join("artifacts/jobs")
        .join(&done)
        .join("log.jsonl");
    let store = api.store().await;
    archived(&store, &done).await;
    assert_eq!(
        store.last_log_sequence(&done).await.unwrap(),
        0,
        "the database keeps no rows of an archived log"
    );
    let text = std::fs::read_to_string(&archive).unwrap();
    assert_eq!(text.lines().count(), 25);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["message"], "line 1 ünïcode");

    // The same answers as from the rows.
    let (status, page) = api.get(&format!("/v1/jobs/{done}/logs"), user).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, from_rows);
    assert_eq!(each(&page["logs"], "message"), lines);
    assert_eq!(page["job_state"], "failed");
    let (_, page) = api
        .get(&format!("/v1/jobs/{done}/logs?after=20&limit=3"), user)
        .await;
    assert_eq!(each(&page["logs"], "message"), &lines[20..23]);
    assert_eq!(page["next_after"], 23);
    let (_, page) = api.get(&format!("/v1/jobs/{done}/logs?tail=2"), user).await;
    assert_eq!(each(&page["logs"], "message"), &lines[23..]);

    // Followed: every line, then the end.
    let response = api
        .http
        .get(format!("{}/v1/jobs/{done}/logs?follow=true", api.url))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    // The stream ends after its `end` event.
    let body = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body.matches("event: log").count(), 25, "{body}");
    assert!(body.contains("id: 25\n"), "{body}");
    assert!(body.contains("event: end\ndata: failed"), "{body}");

    // A running job's log stays where it is.
    assert_eq!(store.last_log_sequence(&running).await.unwrap(), 1);
    assert!(
        !dir.path()
            .join("artifacts/jobs")
            .join(&running)
            .join("log.jsonl")
            .exists()
    );
}

#[tokio::test]
async fn a_damaged_archive_is_an_error_that_names_nothing_inside() {
    let dir = tempfile::tempdir().unwrap();
    let api = archiving_api(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap().to_owned();
    api.work_job(
        &id,
        &["secret-ish line"],
        None,
        Some(json!({"state": "succeeded"})),
    )
    .await;
    let archive = dir
        .path()
        .join("artifacts/jobs")
        .join(&id)
        .join("log.jsonl");
    let store = api.store().await;
    archived(&store, &id).await;
    std::fs::write(&archive, b"{\"sequence\": 1, not json\n").unwrap();
    let (status, error) = api.get(&format!("/v1/jobs/{id}/logs"), user).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{error}");
    assert_eq!(error["error"], "internal");
    assert!(!error.to_string().contains("not json"), "{error}");
}

#[tokio::test]
async fn an_archive_changed_in_storage_is_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let api = archiving_api(dir.path()).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, job) = api.create_job(user).await;
        let id = job["id"].as_str().unwrap().to_owned();
        api.work_job(
            &id,
            &["cloning", "rm -rf build", "done"],
            None,
            Some(json!({"state": "succeeded"})),
        )
        .await;
        ids.push(id);
    }
    let store = api.store().await;
    for id in &ids {
        archived(&store, id).await;
    }
    let (tampered, intact) = (&ids[0], &ids[1]);
    let (status, page) = api.get(&format!("/v1/jobs/{tampered}/logs"), user).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        each(&page["logs"], "message"),
        ["cloning", "rm -rf build", "done"]
    );

    // Someone with the artifact directory rewrites a line: still valid JSON, a different log.
    let archive = dir
        .path()
        .join("artifacts/jobs")
        .join(tampered)
        .join("log.jsonl");
    let text = std::fs::read_to_string(&archive).unwrap();
    std::fs::write(&archive, text.replace("rm -rf build", "all tests passed")).unwrap();
    for path in [
        format!("/v1/jobs/{tampered}/logs"),
        format!("/v1/jobs/{tampered}/logs?after=2&limit=1"),
        format!("/v1/jobs/{tampered}/logs?tail=1"),
    ] {
        let (status, error) = api.get(&path, user).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {error}");
        let description = error["error_description"].as_str().unwrap();
        assert!(
            description.contains("changed in storage") && description.contains("not served"),
            "{error}"
        );
        assert!(!error.to_string().contains("tests passed"), "{error}");
    }
    let response = api
        .http
        .get(format!("{}/v1/jobs/{tampered}/logs?follow=true", api.url))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    assert!(!body.contains("event: log"), "{body}");
    assert!(
        body.contains("event: error") && body.contains("changed in storage"),
        "{body}"
    );

    // The other job's archive, untouched, reads as before.
    let (status, page) = api.get(&format!("/v1/jobs/{intact}/logs"), user).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        each(&page["logs"], "message"),
        ["cloning", "rm -rf build", "done"]
    );
    let (_, page) = api
        .get(&format!("/v1/jobs/{intact}/logs?tail=1"), user)
        .await;
    assert_eq!(each(&page["logs"], "message"), ["done"]);
}
