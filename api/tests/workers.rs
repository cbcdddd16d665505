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
    let credential = ckrv_api::identity::admin::add_worker(&api.store().await, "builder-1")
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
    ckrv_api::identity::admin::remove_worker(&api.store().await, "builder-1")
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

#[tokio::test]
async fn the_name_the_servers_own_jobs_run_under_is_no_external_workers() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let user = api.login("dev@example.com").await;
    // A job the server started itself runs under the reserved name.
    let (status, job) = api.create_job(access(&user)).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let store = api.store().await;
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let (_, before) = api.get(&path, access(&user)).await;

    let refused =
        ckrv_api::identity::admin::add_worker(&store, ckrv_api::identity::tokens::SERVER_WORKER)
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("reserved"), "{refused}");
    // So removing a worker of that name revokes nothing of the server's jobs.
    let removed =
        ckrv_api::identity::admin::remove_worker(&store, ckrv_api::identity::tokens::SERVER_WORKER)
            .await;
    assert!(removed.is_err(), "no such worker: {removed:?}");
    let (status, after) = api.get(&path, access(&user)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["status"], before["status"], "{after}");
    assert_ne!(after["status"], "failed", "{after}");
}

/// The first bytes of a WebAssembly component, and a body: enough for the API, which checks
/// the header and hands the bytes on.
const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0a platform team's step";

#[tokio::test]
async fn a_worker_gets_the_operators_pipeline_its_components_by_digest_and_no_key_of_its_agents() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("lint.wasm"), COMPONENT).unwrap();
    std::fs::write(
        etc.join("pipeline.toml"),
        "[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\n[[stage]]\nagent = true\nphase = \"agent\"\n\
         [[stage]]\ncomponent = \"lint.wasm\"\nphase = \"diffing\"\ntimeout_s = 30\nallowed_hosts = [\"https://lint.example.com\"]\n",
    )
    .unwrap();
    let secrets = etc.join("agent-secrets.env");
    std::fs::write(
        &secrets,
        "ANTHROPIC_API_KEY=sk-ant-api-test-0123456789\nCODEX_API_KEY=sk-codex-test-0123456789\n",
    )
    .unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let setup = ckrv_api::dispatch::worker_setup::WorkerSetup::load(
        Some(&etc.join("pipeline.toml")),
        None,
        Some(&secrets),
    )
    .unwrap();
    let api = TestApi::start_configured(
        &dir.path().join("api"),
        Arc::new(RecordingDispatcher::default()),
        |c| c.workers = Arc::new(setup),
    )
    .await;
    let user = api.login("dev@example.com").await;
    let user = access(&user);
    let mut request = support::job_request();
    request["spec_content"] = "---\nagent: claude-code\n---\nAdd a greeting.\n".into();
    let (status, claude) = api.post("/v1/jobs", user, request).await;
    assert_eq!(status, StatusCode::CREATED, "{claude}");
    let (_, script) = api.create_job(user).await;

    let id = claude["id"].as_str().unwrap();
    let token = api.dispatcher.token_for(id);
    let (status, work) = api.get(&format!("/v1/worker/jobs/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    let stages = work["pipeline"].as_array().unwrap();
    assert_eq!(
        support::each(&work["pipeline"], "name"),
        ["clone", "agent", "lint"]
    );
    assert_eq!(stages[2]["kind"], "component");
    assert_eq!(stages[2]["timeout_s"], 30);
    assert_eq!(stages[2]["allowed_hosts"][0], "https://lint.example.com");
    // The worker learns which of its agent's keys the operator holds, and the job's model
    // token to hand the agent in their place, never a key.
    assert_eq!(
        work["model_access"]["keys"],
        serde_json::json!(["ANTHROPIC_API_KEY"])
    );
    assert!(
        work["model_access"]["token"]
            .as_str()
            .unwrap()
            .starts_with("ckrv_mt_")
    );
    assert!(
        !work.to_string().contains("sk-ant-api-test") && !work.to_string().contains("sk-codex")
    );

    let digest = stages[2]["source"].as_str().unwrap();
    let fetch = |path: String, token: String| {
        let http = api.http.clone();
        let url = format!("{}{path}", api.url);
        async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            (response.status(), response.bytes().await.unwrap())
        }
    };
    let component = format!("/v1/worker/jobs/{id}/components/{digest}");
    let (status, bytes) = fetch(component.clone(), token.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&bytes[..], COMPONENT);
    let (status, _) = fetch(
        format!("/v1/worker/jobs/{id}/components/{}", "0".repeat(64)),
        token.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another job's token, and a user's, get nothing.
    let script_id = script["id"].as_str().unwrap();
    let other = api.dispatcher.token_for(script_id);
    let (status, _) = fetch(component.clone(), other.clone()).await;
    assert!(
        status.is_client_error() && status != StatusCode::OK,
        "{status}"
    );
    let (status, _) = fetch(component, user.to_string()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The script agent declares no keys: its worker gets none to hand out, and each claim
    // has a model token of its own.
    let (_, script_work) = api
        .get(&format!("/v1/worker/jobs/{script_id}"), &other)
        .await;
    assert_eq!(script_work["model_access"]["keys"], serde_json::json!([]));
    assert_ne!(
        script_work["model_access"]["token"],
        work["model_access"]["token"]
    );
}
