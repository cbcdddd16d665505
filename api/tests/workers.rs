//! `POST /v1/worker/claim`: only an operator-issued worker credential claims, it gets the next
//! job the limits admit with a token for that job alone, and nothing else answers to it.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use ckrv_api::DispatcherConfig;
use reqwest::StatusCode;
use support::{RecordingDispatcher, TestApi, access};

#[tokio::test]
async fn claims_need_a_worker_credential_and_follow_the_queue_and_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let api =
        TestApi::start_configured(dir.path(), Arc::new(RecordingDispatcher::default()), |c| {
            c.dispatcher = DispatcherConfig::External;
            c.engine.admission.max_running = 1;
        })
        .await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let credential = ckrv_api::admin::add_worker(&api.store().await, "builder-1")
        .await
        .unwrap();

    // Nothing waits yet.
    let (status, _) = api
        .post("/v1/worker/claim", &credential, serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, first) = api.create_job(user).await;
    let (_, second) = api.create_job(user).await;
    assert_eq!(
        first["status"], "pending",
        "nobody runs jobs here but external workers"
    );

    // A user's token, a guess, or nothing at all claims nothing.
    for bearer in [user, "ckrv_wk_guessed", ""] {
        let (status, error) = api
            .post("/v1/worker/claim", bearer, serde_json::Value::Null)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer:?}: {error}");
    }

    let (status, claim) = api
        .post("/v1/worker/claim", &credential, serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{claim}");
    assert_eq!(claim["job_id"], first["id"], "oldest first");
    let token = claim["token"].as_str().unwrap();
    // The job token acts on its job, and not on another.
    let (status, work) = api
        .get(
            &format!("/v1/worker/jobs/{}", first["id"].as_str().unwrap()),
            token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{work}");
    let (status, _) = api
        .get(
            &format!("/v1/worker/jobs/{}", second["id"].as_str().unwrap()),
            token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The credential itself is not a job token.
    let (status, _) = api
        .get(
            &format!("/v1/worker/jobs/{}", first["id"].as_str().unwrap()),
            &credential,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // One may run at a time here: the second waits until the first ends.
    let (status, _) = api
        .post("/v1/worker/claim", &credential, serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api
        .post(
            &format!("/v1/worker/jobs/{}/complete", first["id"].as_str().unwrap()),
            token,
            serde_json::json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, claim) = api
        .post("/v1/worker/claim", &credential, serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claim["job_id"], second["id"]);

    // Revoked: refused at once.
    ckrv_api::admin::remove_worker(&api.store().await, "builder-1")
        .await
        .unwrap();
    let (status, error) = api
        .post("/v1/worker/claim", &credential, serde_json::Value::Null)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("ckrv-api workers add")
    );
}
