//! Snapshots of repository setups through the real API (docs/environments.md): a running job's
//! worker saves one under a key and a later job of the same account gets it back, checked
//! against its SHA-256; another account's job never sees it; a snapshot past the operator's
//! size limit, or whose bytes do not match its digest, is refused; an account over its cap
//! loses its least recently used snapshots; a job that ended can do nothing.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use support::{RecordingDispatcher, TestApi, access};

const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const KEY_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

async fn api(dir: &std::path::Path) -> TestApi {
    TestApi::start_configured(dir, Arc::new(RecordingDispatcher::default()), |c| {
        c.engine.max_snapshot_bytes = 4000;
        c.engine.account_snapshot_bytes = 2500;
    })
    .await
}

/// A running job of `user`'s: its id and its worker's token.
async fn running_job(api: &TestApi, user: &str) -> (String, String) {
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap().to_owned();
    (id.clone(), api.dispatcher.token_for(&id))
}

fn url(api: &TestApi, id: &str, key: &str) -> String {
    format!("{}/v1/worker/jobs/{id}/snapshots/{key}", api.url)
}

async fn put(
    api: &TestApi,
    (id, token): &(String, String),
    key: &str,
    body: &[u8],
    digest: Option<&str>,
) -> (StatusCode, String) {
    let mut request = api
        .http
        .put(url(api, id, key))
        .bearer_auth(token)
        .body(body.to_vec());
    if let Some(digest) = digest {
        request = request.header("ckrv-snapshot-sha256", digest);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn save(api: &TestApi, job: &(String, String), key: &str, body: &[u8]) {
    let digest = hex::encode(Sha256::digest(body));
    let (status, text) = put(api, job, key, body, Some(&digest)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
}

async fn get(
    api: &TestApi,
    (id, token): &(String, String),
    key: &str,
) -> (StatusCode, Vec<u8>, Option<String>) {
    let response = api
        .http
        .get(url(api, id, key))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let digest = response
        .headers()
        .get("ckrv-snapshot-sha256")
        .map(|v| v.to_str().unwrap().to_string());
    (
        response.status(),
        response.bytes().await.unwrap().to_vec(),
        digest,
    )
}

#[tokio::test]
async fn a_snapshot_comes_back_to_its_accounts_next_job_and_to_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let dev = api.login("dev@example.com").await;
    let dev = access(&dev);
    let other = api.login("other@example.com").await;
    let other = access(&other);

    let first = running_job(&api, dev).await;
    assert_eq!(get(&api, &first, KEY_A).await.0, StatusCode::NOT_FOUND);
    let body = b"a tar.zst as the worker packed it".to_vec();
    save(&api, &first, KEY_A, &body).await;

    let next = running_job(&api, dev).await;
    let (status, bytes, digest) = get(&api, &next, KEY_A).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, body);
    assert_eq!(digest.unwrap(), hex::encode(Sha256::digest(&body)));

    // Another account's job asks for the same key: there is none for it.
    let theirs = running_job(&api, other).await;
    assert_eq!(get(&api, &theirs, KEY_A).await.0, StatusCode::NOT_FOUND);

    // A job that ended reaches nothing.
    let (status, _) = api
        .post(&format!("/v1/jobs/{}/cancel", next.0), dev, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(get(&api, &next, KEY_A).await.0.is_client_error());
    let (status, _) = put(
        &api,
        &next,
        KEY_B,
        b"late",
        Some(&hex::encode(Sha256::digest(b"late"))),
    )
    .await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(get(&api, &first, KEY_B).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_keys_digests_and_sizes_are_refused_and_keep_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let dev = api.login("dev@example.com").await;
    let job = running_job(&api, access(&dev)).await;
    let body = b"0123456789".to_vec();
    let digest = hex::encode(Sha256::digest(&body));
    for (key, digest, status, says) in [
        (
            "..%2F..%2Fetc",
            Some(digest.as_str()),
            StatusCode::BAD_REQUEST,
            "64 lower-case hex digits",
        ),
        (
            "ABCD",
            Some(digest.as_str()),
            StatusCode::BAD_REQUEST,
            "64 lower-case hex digits",
        ),
        (KEY_A, None, StatusCode::BAD_REQUEST, "ckrv-snapshot-sha256"),
        (
            KEY_A,
            Some(KEY_B),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not bbbb",
        ),
    ] {
        let (got, text) = put(&api, &job, key, &body, digest).await;
        assert_eq!(got, status, "{key}: {text}");
        assert!(text.contains(says), "{key}: {text}");
    }
    let big = vec![7u8; 4001];
    let (status, text) = put(
        &api,
        &job,
        KEY_A,
        &big,
        Some(&hex::encode(Sha256::digest(&big))),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(text.contains("--max-snapshot-mb"), "{text}");
    assert_eq!(get(&api, &job, KEY_A).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_account_over_its_cap_loses_its_least_recently_used_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let dev = api.login("dev@example.com").await;
    let job = running_job(&api, access(&dev)).await;
    let thousand = vec![1u8; 1000];
    save(&api, &job, KEY_A, &thousand).await;
    save(&api, &job, KEY_B, &thousand).await;
    // A is used again, so B is now the least recently used.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(get(&api, &job, KEY_A).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    save(&api, &job, KEY_C, &thousand).await;
    assert_eq!(get(&api, &job, KEY_A).await.0, StatusCode::OK);
    assert_eq!(get(&api, &job, KEY_B).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&api, &job, KEY_C).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_snapshot_no_job_used_for_the_retention_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let api =
        TestApi::start_configured(dir.path(), Arc::new(RecordingDispatcher::default()), |c| {
            c.retention = std::time::Duration::from_secs(1);
        })
        .await;
    let dev = api.login("dev@example.com").await;
    let job = running_job(&api, access(&dev)).await;
    save(&api, &job, KEY_A, b"old").await;
    let archive = |key: &str| {
        let accounts = dir.path().join("artifacts/snapshots");
        std::fs::read_dir(&accounts)
            .into_iter()
            .flatten()
            .flatten()
            .any(|account| account.path().join(format!("{key}.tar.zst")).exists())
    };
    assert!(archive(KEY_A));
    for _ in 0..200 {
        if !archive(KEY_A) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!archive(KEY_A), "the unused snapshot's archive is removed");
    assert_eq!(get(&api, &job, KEY_A).await.0, StatusCode::NOT_FOUND);
}
