//! The job engine's promises, through the real API: a worker holds its job by a lease it renews;
//! a lost worker's job is re-queued once if it never got past cloning and otherwise fails with
//! "worker lost"; a superseded worker's writes are refused; deadlines end jobs `timeout`; and a
//! restarted API gives running jobs' workers a lease to check in again.

#![allow(clippy::unwrap_used)]

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

/// A signed-in user's token on an API of [`short_leases`].
async fn signed_in(dir: &std::path::Path, timeout: Duration) -> (TestApi, String) {
    let api = short_leases(dir, timeout).await;
    let tokens = api.login("dev@example.com").await;
    let user = access(&tokens).to_owned();
    (api, user)
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

/// A new job whose worker has reported `phase`: its id and the worker's token.
async fn job_in_phase(api: &TestApi, user: &str, phase: &str) -> (String, String) {
    let (_, job) = api.create_job(user).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let worker = api.dispatcher.token_for(&id);
    assert_eq!(
        post_phase(api, &id, &worker, phase).await,
        StatusCode::NO_CONTENT
    );
    (id, worker)
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
    let (api, user) = signed_in(dir.path(), Duration::from_secs(3600)).await;
    let user = user.as_str();
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
    assert!(api.dispatcher.was_stopped(id));
    assert_eq!(heartbeat(&api, id, &worker).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_worker_lost_while_cloning_is_replaced_once_and_the_first_is_fenced_out() {
    let dir = tempfile::tempdir().unwrap();
    let (api, user) = signed_in(dir.path(), Duration::from_secs(3600)).await;
    let user = user.as_str();
    let (id, first) = job_in_phase(&api, user, "cloning").await;
    let id = id.as_str();

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
    let (api, user) = signed_in(dir.path(), Duration::from_secs(3600)).await;
    let user = user.as_str();
    let (id, worker) = job_in_phase(&api, user, "agent").await;
    let id = id.as_str();
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
    let (api, user) = signed_in(dir.path(), Duration::from_secs(1)).await;
    let user = user.as_str();
    let (id, worker) = job_in_phase(&api, user, "agent").await;
    let id = id.as_str();
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
    assert!(api.dispatcher.was_stopped(id));
    assert_eq!(heartbeat(&api, id, &worker).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn after_a_restart_running_jobs_keep_their_workers_if_they_check_in() {
    let dir = tempfile::tempdir().unwrap();
    let (api, user) = signed_in(dir.path(), Duration::from_secs(3600)).await;
    let user = user.as_str();
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

/// An API that runs at most `max` jobs at once, `per_account` of one account's.
async fn admitting(dir: &std::path::Path, max: u32, per_account: u32) -> TestApi {
    let dispatcher = Arc::new(RecordingDispatcher::default());
    TestApi::start_configured(dir, dispatcher, |config| {
        config.engine.admission.max_running = max;
        config.engine.admission.max_running_per_account = per_account;
    })
    .await
}

async fn create(api: &TestApi, user: &str) -> String {
    let (status, job) = api.create_job(user).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

/// Waits until the job got its worker.
async fn wait_started(api: &TestApi, id: &str) {
    for _ in 0..1200 {
        if api.dispatcher.starts_of(id) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never started");
}

async fn state_of(api: &TestApi, user: &str, id: &str) -> (String, String) {
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
    let text = |key: &str| job[key].as_str().unwrap_or_default().to_owned();
    (text("state"), text("phase"))
}

#[tokio::test]
async fn jobs_beyond_the_limit_wait_queued_and_start_in_order_as_slots_free() {
    let dir = tempfile::tempdir().unwrap();
    let api = admitting(dir.path(), 2, 2).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create(&api, user).await);
    }
    let [a, b, c, d] = [&ids[0], &ids[1], &ids[2], &ids[3]];
    for id in [a, b] {
        assert_eq!(state_of(&api, user, id).await.0, "running");
    }
    for id in [c, d] {
        assert_eq!(
            state_of(&api, user, id).await,
            ("pending".into(), "queued".into())
        );
        assert_eq!(api.dispatcher.starts_of(id), 0);
    }

    // The second job ends: the oldest waiting one takes its slot, the other still waits.
    api.work_job(b, &[], None, Some(json!({"state": "succeeded"})))
        .await;
    wait_started(&api, c).await;
    assert_eq!(state_of(&api, user, c).await.0, "running");
    assert_eq!(api.dispatcher.starts_of(d), 0);

    // Cancelling frees a slot too.
    let (status, _) = api
        .post(&format!("/v1/jobs/{a}/cancel"), user, Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_started(&api, d).await;
    assert_eq!(state_of(&api, user, d).await.0, "running");
}

#[tokio::test]
async fn one_account_cannot_take_every_slot_and_the_queue_stays_first_come_first_served() {
    let dir = tempfile::tempdir().unwrap();
    let api = admitting(dir.path(), 3, 2).await;
    let alice = api.login("alice@example.com").await;
    let alice = access(&alice);
    let bob = api.login("bob@example.com").await;
    let bob = access(&bob);
    let a1 = create(&api, alice).await;
    let a2 = create(&api, alice).await;
    let a3 = create(&api, alice).await;
    // Alice has her two; her third waits although a slot is free.
    assert_eq!(state_of(&api, alice, &a3).await.0, "pending");
    let b1 = create(&api, bob).await;
    assert_eq!(
        state_of(&api, bob, &b1).await.0,
        "running",
        "bob takes the free slot"
    );
    let b2 = create(&api, bob).await;
    assert_eq!(
        state_of(&api, bob, &b2).await.0,
        "pending",
        "every slot is taken"
    );

    // A slot frees: alice's waiting job came first and she is below her share.
    api.work_job(&a1, &[], None, Some(json!({"state": "failed"})))
        .await;
    wait_started(&api, &a3).await;
    assert_eq!(api.dispatcher.starts_of(&b2), 0);
    // Another: bob's turn.
    api.work_job(&a2, &[], None, Some(json!({"state": "succeeded"})))
        .await;
    wait_started(&api, &b2).await;
}

#[tokio::test]
async fn many_jobs_created_at_once_never_run_more_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let api = admitting(dir.path(), 3, 3).await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let creates = (0..20).map(|_| api.create_job(user));
    let created = futures::future::join_all(creates).await;
    assert!(
        created
            .iter()
            .all(|(status, _)| *status == StatusCode::CREATED)
    );
    let (_, running) = api.get("/v1/jobs?status=running&limit=100", user).await;
    assert_eq!(running["jobs"].as_array().unwrap().len(), 3, "{running}");
    assert_eq!(api.dispatcher.started.lock().unwrap().len(), 3);
    let (_, pending) = api.get("/v1/jobs?status=pending&limit=100", user).await;
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 17);
}

#[tokio::test]
async fn a_log_stops_at_its_cap_with_a_notice_and_a_long_line_costs_only_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = Arc::new(RecordingDispatcher::default());
    let api = TestApi::start_configured(dir.path(), dispatcher, |config| {
        config.engine.max_log_lines = 5;
    })
    .await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let id = create(&api, user).await;
    let worker = api.dispatcher.token_for(&id);
    let logs = format!("/v1/worker/jobs/{id}/logs");
    let long = "y".repeat(100 * 1024);
    let send = |first: u64, messages: Vec<&str>| {
        let lines: Vec<Value> = messages.into_iter().map(support::line).collect();
        api.post(
            &logs,
            &worker,
            json!({"first_sequence": first, "lines": lines}),
        )
    };
    assert_eq!(
        send(1, vec!["one", &long, "three"]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(4, vec!["four", "five", "six", "seven"]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(send(8, vec!["eight"]).await.0, StatusCode::NO_CONTENT);

    let (_, page) = api.get(&format!("/v1/jobs/{id}/logs"), user).await;
    let entries = page["logs"].as_array().unwrap();
    let messages: Vec<&str> = entries
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 6, "five lines and the notice");
    assert_eq!(messages[..1], ["one"]);
    assert!(messages[1].starts_with(&"y".repeat(64 * 1024)));
    assert!(messages[1].ends_with("[… line truncated: 36864 more bytes]"));
    assert_eq!(messages[2..5], ["three", "four", "five"]);
    assert!(messages[5].starts_with("log truncated"), "{}", messages[5]);
    assert!(messages[5].contains("limit of 5 lines"));
    assert_eq!(entries[5]["level"], "warn");

    // A request larger than any batch should be is refused whole, in the error shape.
    let huge = "z".repeat(3 * 1024 * 1024);
    let (status, error) = send(9, vec![&huge]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert!(error["error_description"].as_str().is_some(), "{error}");
}
