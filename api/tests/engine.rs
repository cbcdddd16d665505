//! The job engine's promises, through the real API: a worker holds its job by a lease it renews;
//! a lost worker's job is re-queued once if it never got past cloning and otherwise fails with
//! "worker lost"; a superseded worker's writes are refused; deadlines end jobs `timeout`; and a
//! restarted API gives running jobs' workers a lease to check in again.

mod support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{RecordingDispatcher, TestApi, access};

/// An API whose workers must renew their lease every second and whose jobs may run `timeout`.
async fn short_leases(dir: &std::path::Path, timeout: Duration) -> TestApi {
    let dispatcher = Arc::new(RecordingDispatcher::default());
    TestApi::start_configured(dir, dispatcher, |config| {
        config.engine.lease = Duration::from_secs(1);
        config.engine.job_timeout = timeout;
    })
    .await
}

/// Polls the job until `done` says so (at most a minute: the engine promises a bounded time,
/// far shorter; this only stops a broken engine from hanging the suite).
async fn wait_for(api: &TestApi, user: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut job = Value::Null;
    for _ in 0..1200 {
        job = api.get(&format!("/v1/jobs/{id}"), user).await.1;
        if done(&job) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job never got there: {job}");
}

async fn post_phase(api: &TestApi, id: &str, worker: &str, phase: &str) -> StatusCode {
    let path = format!("/v1/worker/jobs/{id}/phase");
    api.post(&path, worker, json!({"phase": phase})).await.0
}

async fn heartbeat(api: &TestApi, id: &str, worker: &str) -> StatusCode {
    let path = format!("/v1/worker/jobs/{id}/heartbeat");
    api.post(&path, worker, Value::Null).await.0
}

#[tokio::test]
async fn a_worker_that_stops_renewing_its_lease_mid_agent_fails_the_job_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let api = short_leases(dir.path(), Duration::from_secs(3600)).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap();
    // Claimed at dispatch: running before any worker spoke.
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    assert_eq!(job["status"], "running", "{job}");
    let worker = api.dispatcher.token_for(id);
    let (status, work) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(status, StatusCode::OK);
    assert!(work["heartbeat_ms"].as_u64().unwrap() <= 1000, "{work}");
    assert_eq!(
        post_phase(&api, id, &worker, "agent").await,
        StatusCode::NO_CONTENT
    );

    let job = wait_for(&api, user, id, |job| job["status"] != "running").await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error_message"].as_str().unwrap();
    assert!(error.starts_with("worker lost"), "{error}");
    assert!(error.contains("agent"), "{error}");
    // Lost while the agent ran: its work may have shown; never re-run behind the user's back.
    assert_eq!(api.dispatcher.starts_of(id), 1);
    assert!(
        api.dispatcher
            .stopped
            .lock()
            .unwrap()
            .contains(&id.to_string())
    );
    assert_eq!(heartbeat(&api, id, &worker).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_worker_lost_while_cloning_is_replaced_once_and_the_first_is_fenced_out() {
    let dir = tempfile::tempdir().unwrap();
    let api = short_leases(dir.path(), Duration::from_secs(3600)).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap();
    let first = api.dispatcher.token_for(id);
    assert_eq!(
        post_phase(&api, id, &first, "cloning").await,
        StatusCode::NO_CONTENT
    );

    // The first worker goes silent; a second is started for the same job.
    for _ in 0..1200 {
        if api.dispatcher.starts_of(id) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api.dispatcher.starts_of(id),
        2,
        "the job was dispatched again"
    );
    let second = api.dispatcher.token_for(id);
    assert_ne!(first, second);
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    assert_eq!(job["status"], "running", "{job}");

    // The first worker wakes up: nothing it says counts any more.
    assert_eq!(
        post_phase(&api, id, &first, "agent").await,
        StatusCode::UNAUTHORIZED
    );
    let completion = json!({"state": "succeeded"});
    let (status, _) = api
        .post(
            &format!("/v1/worker/jobs/{id}/complete"),
            &first,
            completion,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    assert_eq!(job["status"], "running");
    assert_eq!(job["phase"], "queued", "the second worker starts over");

    // The second worker is lost while cloning too: the job does not wait a third time.
    assert_eq!(
        post_phase(&api, id, &second, "cloning").await,
        StatusCode::NO_CONTENT
    );
    let job = wait_for(&api, user, id, |job| job["status"] != "running").await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap()
            .starts_with("worker lost"),
        "{job}"
    );
    assert_eq!(api.dispatcher.starts_of(id), 2);
}

#[tokio::test]
async fn heartbeats_hold_the_job_and_stop_working_once_it_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let api = short_leases(dir.path(), Duration::from_secs(3600)).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap();
    let worker = api.dispatcher.token_for(id);
    assert_eq!(
        post_phase(&api, id, &worker, "agent").await,
        StatusCode::NO_CONTENT
    );
    // Three leases' worth of renewals: the job is still the worker's.
    for _ in 0..10 {
        assert_eq!(heartbeat(&api, id, &worker).await, StatusCode::NO_CONTENT);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    assert_eq!(job["status"], "running", "{job}");

    let (status, _) = api
        .post(&format!("/v1/jobs/{id}/cancel"), user, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(heartbeat(&api, id, &worker).await, StatusCode::UNAUTHORIZED);
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    assert_eq!(job["state"], "cancelled");
}

#[tokio::test]
async fn a_job_past_its_deadline_ends_timeout_and_its_worker_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let api = short_leases(dir.path(), Duration::from_secs(1)).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap();
    let worker = api.dispatcher.token_for(id);
    assert_eq!(
        post_phase(&api, id, &worker, "agent").await,
        StatusCode::NO_CONTENT
    );
    // The worker is alive and well; the deadline ends the job all the same.
    let job = loop {
        let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
        if job["status"] != "running" {
            break job;
        }
        heartbeat(&api, id, &worker).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "timeout", "{job}");
    assert_eq!(job["result_status"], "timeout");
    assert!(job["completed_at"].is_string());
    let error = job["error_message"].as_str().unwrap();
    assert!(error.contains("1s deadline"), "{error}");
    assert!(
        api.dispatcher
            .stopped
            .lock()
            .unwrap()
            .contains(&id.to_string())
    );
    assert_eq!(heartbeat(&api, id, &worker).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn after_a_restart_running_jobs_keep_their_workers_if_they_check_in() {
    let dir = tempfile::tempdir().unwrap();
    let api = short_leases(dir.path(), Duration::from_secs(3600)).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let (alive, silent) = {
        let (_, a) = api.create_job(user).await;
        let (_, b) = api.create_job(user).await;
        (
            a["id"].as_str().unwrap().to_owned(),
            b["id"].as_str().unwrap().to_owned(),
        )
    };
    let alive_worker = api.dispatcher.token_for(&alive);
    let silent_worker = api.dispatcher.token_for(&silent);
    for (id, worker) in [(&alive, &alive_worker), (&silent, &silent_worker)] {
        assert_eq!(
            post_phase(&api, id, worker, "agent").await,
            StatusCode::NO_CONTENT
        );
    }
    let database = api.database();
    drop(api);
    // The API is down longer than a lease; its workers could not renew meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let dispatcher = Arc::new(RecordingDispatcher::default());
    let api = TestApi::start_configured_on(dir.path(), database, dispatcher, |config| {
        config.engine.lease = Duration::from_secs(1);
    })
    .await;
    // One worker checks in within the new lease and keeps going; the other never does.
    let renewing = async {
        for _ in 0..30 {
            assert_eq!(
                heartbeat(&api, &alive, &alive_worker).await,
                StatusCode::NO_CONTENT
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let lost = wait_for(&api, user, &silent, |job| job["status"] != "running");
    let ((), lost) = tokio::join!(renewing, lost);
    assert!(
        lost["error_message"]
            .as_str()
            .unwrap()
            .starts_with("worker lost"),
        "{lost}"
    );
    let (_, kept) = api.get(&format!("/v1/jobs/{alive}"), user).await;
    assert_eq!(kept["status"], "running", "{kept}");
    let (status, _) = api
        .post(
            &format!("/v1/worker/jobs/{alive}/complete"),
            &alive_worker,
            json!({"state": "succeeded"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Neither was started again: both already had workers.
    assert_eq!(api.dispatcher.started.lock().unwrap().len(), 0);
}
