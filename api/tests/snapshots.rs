//! Snapshots of repository setups through the real API (docs/environments.md): a running job's
//! worker saves one under a key and a later job of the same account gets it back, checked
//! against its SHA-256; another account's job never sees it; a snapshot past the operator's
//! size limit, or whose bytes do not match its digest, is refused; an account over its cap
//! loses its least recently used snapshots; a job that ended can do nothing. Its people list
//! their own snapshots and drop them (`GET /v1/snapshots`, `DELETE /v1/snapshots/{key}`).

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

/// The access tokens of two accounts, dev's and another's.
async fn two_accounts(api: &TestApi) -> (String, String) {
    let dev = api.login("dev@example.com").await;
    let other = api.login("other@example.com").await;
    (access(&dev).to_string(), access(&other).to_string())
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
    let (dev, other) = two_accounts(&api).await;
    let (dev, other) = (dev.as_str(), other.as_str());

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

#[tokio::test]
async fn people_list_and_drop_their_own_snapshots_and_no_one_elses() {
    let dir = tempfile::tempdir().unwrap();
    let api = api(dir.path()).await;
    let (dev, other) = two_accounts(&api).await;
    let (dev, other) = (dev.as_str(), other.as_str());
    let (status, list) = api.get("/v1/snapshots", dev).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["snapshots"], serde_json::json!([]));

    let job = running_job(&api, dev).await;
    save(&api, &job, KEY_A, b"first").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    save(&api, &job, KEY_B, b"second!").await;
    let (_, list) = api.get("/v1/snapshots", dev).await;
    let listed = list["snapshots"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{list}");
    // Most recently used first, with where each came from.
    assert_eq!(listed[0]["key"], KEY_B);
    assert_eq!(listed[0]["bytes"], 7);
    assert_eq!(listed[0]["job_id"], job.0.as_str());
    let (_, created) = api.get(&format!("/v1/jobs/{}", job.0), dev).await;
    assert_eq!(listed[0]["repository"], created["git_repo_url"]);
    assert_eq!(listed[1]["key"], KEY_A);
    assert!(listed[1]["last_used_at"].as_str().unwrap().ends_with('Z'));

    // Another account sees none of them and can drop none of them.
    let (_, theirs) = api.get("/v1/snapshots", other).await;
    assert_eq!(theirs["snapshots"], serde_json::json!([]));
    let delete = async |token: &str, key: &str| {
        api.call(
            reqwest::Method::DELETE,
            &format!("/v1/snapshots/{key}"),
            Some(token),
            None,
        )
        .await
    };
    let (status, body) = delete(other, KEY_A).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(get(&api, &job, KEY_A).await.0, StatusCode::OK);

    // Bad keys say what a key is; a prefix of several is a conflict.
    for bad in ["aaaa", "not-hex-at-all", &"a".repeat(65)] {
        let (status, body) = delete(dev, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("hex digits"),
            "{body}"
        );
    }
    let twins = [
        format!("abababab{}", "0".repeat(56)),
        format!("abababab{}", "1".repeat(56)),
    ];
    save(&api, &job, &twins[0], b"x").await;
    save(&api, &job, &twins[1], b"y").await;
    let (status, body) = delete(dev, "abababab").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("2 snapshots"),
        "{body}"
    );
    for twin in &twins {
        let (status, body) = delete(dev, &twin[..9]).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    // A unique prefix drops it: gone from the list, the store, and the next job's restore.
    let (status, _) = delete(dev, &KEY_A[..8].to_ascii_uppercase()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(get(&api, &job, KEY_A).await.0, StatusCode::NOT_FOUND);
    let (_, list) = api.get("/v1/snapshots", dev).await;
    let keys: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [KEY_B]);
    let (status, _) = delete(dev, KEY_A).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Without a token, nothing.
    let (status, _) = api
        .call(reqwest::Method::GET, "/v1/snapshots", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
