//! What operators ask of a running API: liveness, readiness, metrics, request ids.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::{TestApi, line};

#[tokio::test]
async fn health_and_readiness_answer_and_say_what_they_checked() {
    let (api, _) = TestApi::signed_in("ops@example.com").await;
    let health = api
        .http
        .get(format!("{}/healthz", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok\n");
    let (status, ready) = api.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready,
        json!({"ready": true, "database": "ok", "artifacts": "ok", "stopping": false})
    );
}

#[tokio::test]
async fn metrics_count_jobs_the_queue_log_lines_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = std::sync::Arc::new(support::RecordingDispatcher::default());
    let api = TestApi::start_configured(dir.path(), dispatcher, |config| {
        config.engine.admission.max_running = 2;
    })
    .await;
    let user = api.login("ops@example.com").await;
    let user = support::access(&user);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, job) = api.create_job(user).await;
        assert_eq!(status, StatusCode::CREATED);
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    api.work_job(&ids[0], &["one", "two", "three"], None, None)
        .await;

    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text().await.unwrap();
    for expected in [
        "ckrv_jobs{state=\"running\"} 2",
        "ckrv_jobs{state=\"pending\"} 1",
        "ckrv_jobs{state=\"succeeded\"} 0",
        "ckrv_queue_depth 1",
        "ckrv_log_lines_ingested_total 3",
        "ckrv_http_requests_total{method=\"POST\",status=\"201\"} 3",
        "# TYPE ckrv_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    // A resent batch stores nothing and counts nothing.
    let worker = api.dispatcher.token_for(&ids[0]);
    let again = json!({"first_sequence": 1, "lines": [line("one")]});
    api.post(&format!("/v1/worker/jobs/{}/logs", ids[0]), &worker, again)
        .await;
    let text = api.metrics().await;
    assert!(text.contains("ckrv_log_lines_ingested_total 3"), "{text}");
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_sane_one_is_kept() {
    let (api, _) = TestApi::signed_in("ops@example.com").await;
    let ask = |id: Option<&str>| {
        let mut request = api.http.get(format!("{}/v1/users/me", api.url));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        async move { request.send().await.unwrap() }
    };
    let fresh = ask(None).await;
    assert_eq!(
        fresh.status(),
        StatusCode::UNAUTHORIZED,
        "errors carry one too"
    );
    let id = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let kept = ask(Some("trace-abc-123")).await;
    assert_eq!(kept.headers()["x-request-id"], "trace-abc-123");
    let replaced = ask(Some(&"x".repeat(65))).await;
    assert_ne!(replaced.headers()["x-request-id"], "x".repeat(65).as_str());
}
