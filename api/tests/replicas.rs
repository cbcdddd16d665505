//! Two API replicas on one PostgreSQL database: a follower on one hears, through `NOTIFY`, of
//! log lines its job's worker sent to the other. Runs when `CKRV_TEST_POSTGRES` names a server
//! (CI sets it); SQLite has one replica by nature.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::json;
use support::{RecordingDispatcher, TestApi, access, line};

#[tokio::test]
async fn a_follower_on_one_replica_is_woken_by_lines_sent_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestApi::start(dir.path()).await;
    if !a.database().is_postgres() {
        eprintln!("skipped: replicas share a PostgreSQL database (set CKRV_TEST_POSTGRES)");
        return;
    }
    // Replica B never re-reads on its own within this test: only a wake-up can move it.
    let b_dir = tempfile::tempdir().unwrap();
    let b = TestApi::start_configured_on(
        b_dir.path(),
        a.database(),
        Arc::new(RecordingDispatcher::default()),
        |config| config.follow_recheck = Duration::from_secs(3600),
    )
    .await;
    let user = a.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = a.create_job(user).await;
    let id = job["id"].as_str().unwrap();
    let worker = a.dispatcher.token_for(id);

    let response = b
        .http
        .get(format!("{}/v1/jobs/{id}/logs?follow=true", b.url))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.bytes_stream();
    // Give B's follower time to make its first read and wait.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lines = json!({"first_sequence": 1, "lines": [line("written through replica A")]});
    let (status, _) = a
        .post(&format!("/v1/worker/jobs/{id}/logs"), &worker, lines)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let mut text = String::new();
    let heard = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("written through replica A") {
                return;
            }
        }
    })
    .await;
    assert!(
        heard.is_ok(),
        "replica B's follower was never woken: {text}"
    );
}
