//! The model gateway, as a job's agent uses it: with the job's model token where its CLI sends
//! a key, against a stand-in of the vendor's API on loopback (`--model-upstream`). The
//! stand-in gets the operator's real key; the agent's side never sees it; answers stream
//! through as they come; usage lands on the job; budgets end the job; and every wrong token,
//! route or upstream is refused with the reason.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use ckrv_api::dispatch::worker_setup::WorkerSetup;
use ckrv_api::identity::quota::{ModelBudgets, TierBudget, parse_budget};
use ckrv_test_support::{FakeEndpoint, Recorded};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{RecordingDispatcher, TestApi, access};
use tokio::sync::Notify;

const ANTHROPIC_KEY: &str = "sk-ant-api03-the-operators-real-key-0123456789";
const GEMINI_KEY: &str = "AIza-the-operators-gemini-key-0123456789";
/// The jobs' repository: on loopback (nothing here clones it; the test plays the worker).
const REPO: &str = "https://127.0.0.1:9/app.git";

/// Agent secrets in a private file, as an operator gives them.
fn workers(dir: &Path) -> Arc<WorkerSetup> {
    let path = dir.join("agent-secrets.env");
    std::fs::write(
        &path,
        format!("ANTHROPIC_API_KEY={ANTHROPIC_KEY}\nGEMINI_API_KEY={GEMINI_KEY}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Arc::new(WorkerSetup::load(None, None, Some(&path)).unwrap())
}

/// An API whose gateway sends the `anthropic` and `gemini` routes to `upstream`, and a
/// signed-in user.
async fn api_with_upstream(dir: &Path, upstream: &str) -> (TestApi, String) {
    api_configured(dir, upstream, |_| ()).await
}

/// As [`api_with_upstream`], with more of the configuration `configure` sets.
async fn api_configured(
    dir: &Path,
    upstream: &str,
    configure: impl FnOnce(&mut ckrv_api::Config),
) -> (TestApi, String) {
    let workers = workers(dir);
    let upstream = upstream.to_string();
    let api = TestApi::start_configured(dir, Arc::new(RecordingDispatcher::default()), |c| {
        configure(c);
        c.allow_local_repos = true;
        c.workers = workers;
        c.model_upstreams = [("anthropic", &upstream), ("gemini", &upstream)]
            .into_iter()
            .map(|(route, url)| (route.to_string(), url.clone()))
            .collect();
    })
    .await;
    let tokens = api.login("dev@example.com").await;
    let user = access(&tokens).to_string();
    (api, user)
}

/// Creates a job of `spec`, and reads it as its worker does: its id and its model access.
async fn job_with_model_access(api: &TestApi, user: &str, spec: &str) -> (String, Value) {
    let (status, job) = api
        .post(
            "/v1/jobs",
            user,
            json!({"spec_content": spec, "git_repo_url": REPO}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let worker = api.dispatcher.token_for(&id);
    let (status, work) = api.get(&format!("/v1/worker/jobs/{id}"), &worker).await;
    assert_eq!(status, StatusCode::OK, "{work}");
    // The operator set no egress policy: the agent's own, the gateway alone.
    assert_eq!(work["egress"], "model", "{work}");
    (id, work["model_access"].clone())
}

/// Submits a job of `spec`, which must be refused as a bad request; the error's body.
async fn refused_spec(api: &TestApi, user: &str, spec: &str) -> Value {
    let (status, body) = api
        .post(
            "/v1/jobs",
            user,
            json!({"spec_content": spec, "git_repo_url": REPO}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    body
}

/// A request to the gateway as Claude Code sends one: the token in `x-api-key`.
async fn messages(api: &TestApi, token: &str, body: &str) -> reqwest::Response {
    api.http
        .post(format!(
            "{}/v1/gateway/anthropic/v1/messages?beta=true",
            api.url
        ))
        .header("x-api-key", token)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// One model request of job `id` that is answered, and counted as its `nth`.
async fn spend(api: &TestApi, user: &str, token: &str, id: &str, nth: u64) {
    assert_eq!(messages(api, token, "{}").await.status(), StatusCode::OK);
    usage_of(api, user, id, nth).await;
}

/// A model request refused because a budget is spent (402 `quota_exceeded`): its reason.
async fn refused_past_budget(api: &TestApi, token: &str) -> String {
    let response = messages(api, token, "{}").await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "quota_exceeded", "{body}");
    body["error_description"].as_str().unwrap().to_string()
}

/// The job's usage, once its last answer is counted (that happens as the answer ends).
async fn usage_of(api: &TestApi, user: &str, id: &str, requests: u64) -> Value {
    for _ in 0..200 {
        let (_, job) = api.get(&format!("/v1/jobs/{id}"), user).await;
        if job["usage"]["requests"].as_u64() == Some(requests) {
            return job["usage"].clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never counted {requests} model requests");
}

/// A stand-in Anthropic API whose every answer reports `input` and `output` tokens of Sonnet.
async fn vendor_answering(input: u64, output: u64) -> FakeEndpoint {
    FakeEndpoint::start(move |_request: Recorded| async move {
        let answer = json!({"model": "claude-sonnet-4-5",
                            "usage": {"input_tokens": input, "output_tokens": output}});
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(answer.to_string()))
            .unwrap()
    })
    .await
}

fn sse(events: &[Value]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

#[tokio::test]
async fn the_agent_calls_its_model_with_its_jobs_token_and_the_upstream_gets_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // The stand-in streams its answer in two parts, the second only once the test has read
    // the first through the gateway: an answer buffered anywhere on the way would never end.
    let first_read = Arc::new(Notify::new());
    let release = Arc::clone(&first_read);
    let vendor = FakeEndpoint::start(move |_request: Recorded| {
        let release = Arc::clone(&release);
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(2);
            tokio::spawn(async move {
                let start = sse(&[json!({"type": "message_start", "message": {
                    "model": "claude-sonnet-4-5",
                    "usage": {"input_tokens": 1200, "output_tokens": 1}}})]);
                tx.send(Ok(start)).await.unwrap();
                release.notified().await;
                let end = sse(&[
                    json!({"type": "message_delta", "usage": {"output_tokens": 450}}),
                    json!({"type": "message_stop"}),
                ]);
                tx.send(Ok(end)).await.unwrap();
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("request-id", "req_stand_in")
                .body(Body::from_stream(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                ))
                .unwrap()
        }
    })
    .await;
    let (api, user) = api_with_upstream(dir.path(), &vendor.url).await;
    let (id, access) = job_with_model_access(
        &api,
        &user,
        "---\nagent: claude-code\nmodel: sonnet\n---\nAdd a greeting.\n",
    )
    .await;
    // The worker gets a placeholder for the agent and the names of the keys it stands for,
    // never a key.
    let token = access["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ckrv_mt_"), "{access}");
    assert_eq!(access["keys"], json!(["ANTHROPIC_API_KEY"]));
    assert!(!access.to_string().contains(ANTHROPIC_KEY));

    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":512,"stream":true,"messages":[]}"#;
    let mut answer = messages(&api, &token, body).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["content-type"], "text/event-stream");
    assert_eq!(answer.headers()["request-id"], "req_stand_in");
    let first = tokio::time::timeout(Duration::from_secs(10), answer.chunk())
        .await
        .expect("the first event arrives before the answer ends")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    first_read.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = answer.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(String::from_utf8_lossy(&rest).contains("message_stop"));

    // The vendor got the request as sent, with the operator's key in place of the token.
    let received = vendor.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.uri.to_string(), "/v1/messages?beta=true");
    assert_eq!(request.header("x-api-key"), ANTHROPIC_KEY);
    assert_eq!(request.header("anthropic-version"), "2023-06-01");
    assert_eq!(request.body, body.as_bytes());
    let sent: String = request
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {value:?}\n"))
        .collect();
    assert!(
        !sent.contains("ckrv_mt_"),
        "the token went upstream: {sent}"
    );
    assert!(!sent.contains("authorization"), "{sent}");

    // The usage the answer reported is the job's, priced by the built-in table: 1,200 input
    // and 450 output tokens of Sonnet at $3 and $15 per million.
    let usage = usage_of(&api, &user, &id, 1).await;
    assert_eq!(usage["input_tokens"], 1200, "{usage}");
    assert_eq!(usage["output_tokens"], 450, "{usage}");
    let cost = usage["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.01035).abs() < 1e-9, "{usage}");
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(r#"ckrv_gateway_requests_total{route="anthropic",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"ckrv_gateway_tokens_total{route="anthropic",direction="output"} 450"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn wrong_tokens_routes_and_ended_jobs_are_refused_before_anything_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = vendor_answering(10, 2).await;
    let (api, user) = api_with_upstream(dir.path(), &vendor.url).await;
    let (id, access) =
        job_with_model_access(&api, &user, "---\nagent: claude-code\n---\nGo.\n").await;
    let token = access["token"].as_str().unwrap();

    let refused = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(!body.to_string().contains(ANTHROPIC_KEY));
        (
            status,
            body["error_description"].as_str().unwrap().to_string(),
        )
    };
    // No token, a made-up token, the worker's own token, and the real key itself.
    let worker = api.dispatcher.token_for(&id);
    for (credential, says) in [
        ("", "no model token"),
        (
            "ckrv_mt_0000",
            "the model token is not valid: its job is not running",
        ),
        (worker.as_str(), "no model token"),
        (ANTHROPIC_KEY, "no model token"),
    ] {
        let (status, message) = refused(messages(&api, credential, "{}").await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{credential}: {message}");
        assert!(message.contains(says), "{credential}: {message}");
    }
    // A route the job's agent does not have, though the server holds its key.
    let response = api
        .http
        .post(format!(
            "{}/v1/gateway/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            api.url
        ))
        .header("x-goog-api-key", token)
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, message) = refused(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message, "agent `claude-code` has no model route `gemini`");
    assert!(vendor.requests().is_empty(), "nothing went out");

    // While the job runs, the token works, except while its change is verified
    // (docs/verification.md); once it ends, it does not.
    assert_eq!(messages(&api, token, "{}").await.status(), StatusCode::OK);
    let (status, body) = api
        .post(
            &format!("/v1/worker/jobs/{id}/phase"),
            &worker,
            json!({"phase": "verifying"}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, message) = refused(messages(&api, token, "{}").await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("no model access"), "{message}");
    assert_eq!(vendor.requests().len(), 1, "nothing went out");
    api.work_job(&id, &[], None, Some(json!({"state": "succeeded"})))
        .await;
    let (status, message) = refused(messages(&api, token, "{}").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message.contains("its job is not running"), "{message}");
    assert_eq!(vendor.requests().len(), 1);
    // The finished job keeps what it spent.
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &user).await;
    assert_eq!(job["usage"]["requests"], 1, "{job}");
    // A spec asking to reach past its policy is refused when submitted, naming the host.
    let body = refused_spec(
        &api,
        &user,
        "---\nagent: claude-code\negress: paste.example.net\n---\nGo.\n",
    )
    .await;
    assert!(
        body["error_description"].as_str().unwrap().contains(
            "the spec's egress `paste.example.net` is not allowed by the operator's policy `model`"
        ),
        "{body}"
    );
    // A job that never called a model shows no usage at all.
    let (_, other) = api.create_job(&user).await;
    assert!(other.get("usage").is_none_or(Value::is_null), "{other}");
}

#[tokio::test]
async fn a_job_past_its_budget_gets_no_more_answers_and_ends_naming_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let vendor = vendor_answering(700, 400).await;
    let (api, user) = api_with_upstream(dir.path(), &vendor.url).await;
    let (id, access) = job_with_model_access(
        &api,
        &user,
        "---\nagent: claude-code\nmax_tokens: 1000\n---\nGo.\n",
    )
    .await;
    let token = access["token"].as_str().unwrap();
    spend(&api, &user, token, &id, 1).await;
    let reason = "the job's budget max_tokens = 1000 is spent (1100 tokens so far)";
    assert_eq!(refused_past_budget(&api, token).await, reason);
    assert_eq!(
        vendor.requests().len(),
        1,
        "the second request never went out"
    );
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &user).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error_message"], reason);
}

#[tokio::test]
async fn a_tiers_job_budget_caps_what_a_spec_asks_for_and_what_a_job_spends() {
    let dir = tempfile::tempdir().unwrap();
    // Each answer: 1,000 input and 1,000 output tokens of Sonnet, $0.018.
    let vendor = vendor_answering(1000, 1000).await;
    let (api, user) = api_configured(dir.path(), &vendor.url, |c| {
        c.model_budgets = Arc::new(ModelBudgets {
            job: TierBudget::new(["0.05", "free=0.01"].map(|b| parse_budget(b).unwrap())),
            ..ModelBudgets::default()
        });
    })
    .await;
    // A free account's spec may not ask for more than its tier's cap.
    let body = refused_spec(
        &api,
        &user,
        "---\nagent: claude-code\nmax_cost_usd: 0.02\n---\nGo.\n",
    )
    .await;
    assert_eq!(
        body["error_description"],
        "spec_content: max_cost_usd = 0.02 is more than a job of a free account may spend on \
         models on this server ($0.01); ask for at most that"
    );
    // Without a budget of its own, the cap is the job's.
    let spec = "---\nagent: claude-code\n---\nGo.\n";
    let (id, access) = job_with_model_access(&api, &user, spec).await;
    let token = access["token"].as_str().unwrap();
    spend(&api, &user, token, &id, 1).await;
    let reason = "the model budget of $0.01 for a job of a free account on this server is \
                  spent ($0.0180 so far)";
    assert_eq!(refused_past_budget(&api, token).await, reason);
    assert_eq!(
        vendor.requests().len(),
        1,
        "the second request never went out"
    );
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &user).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error_message"], reason);

    // A pro account goes by the cap for every tier, and its own smaller budget counts.
    let store = api.store().await;
    let account = store
        .account_by_email("dev@example.com")
        .await
        .unwrap()
        .unwrap();
    store
        .set_tier(&account.id, ckrv_wit::types::SubscriptionTier::Pro)
        .await
        .unwrap();
    let (id, access) = job_with_model_access(
        &api,
        &user,
        "---\nagent: claude-code\nmax_cost_usd: 0.02\n---\nGo.\n",
    )
    .await;
    let token = access["token"].as_str().unwrap();
    spend(&api, &user, token, &id, 1).await;
    spend(&api, &user, token, &id, 2).await;
    assert_eq!(
        refused_past_budget(&api, token).await,
        "the job's budget max_cost_usd = 0.02 is spent ($0.0360 so far)"
    );
}

#[tokio::test]
async fn an_accounts_monthly_budget_ends_its_jobs_and_whoami_shows_the_spend() {
    let dir = tempfile::tempdir().unwrap();
    // Each answer: 1,000 input and 1,000 output tokens of Sonnet, $0.018.
    let vendor = vendor_answering(1000, 1000).await;
    let (api, user) = api_configured(dir.path(), &vendor.url, |c| {
        c.model_budgets = Arc::new(ModelBudgets {
            account_month: TierBudget::new([parse_budget("0.01").unwrap()]),
            ..ModelBudgets::default()
        });
    })
    .await;
    let (_, me) = api.get("/v1/users/me", &user).await;
    assert_eq!(me["model_cost_usd"], 0.0, "{me}");
    let spec = "---\nagent: claude-code\n---\nGo.\n";
    let (first, access) = job_with_model_access(&api, &user, spec).await;
    let token = access["token"].as_str().unwrap();
    spend(&api, &user, token, &first, 1).await;
    let (_, me) = api.get("/v1/users/me", &user).await;
    assert!(
        (me["model_cost_usd"].as_f64().unwrap() - 0.018).abs() < 1e-9,
        "{me}"
    );

    // Another job of the same account: its first request finds the month's budget spent.
    let (second, access) = job_with_model_access(&api, &user, spec).await;
    let reason = refused_past_budget(&api, access["token"].as_str().unwrap()).await;
    assert!(
        reason.starts_with(
            "the account's model budget of $0.01 for this month is spent ($0.0180 so far); it renews "
        ),
        "{reason}"
    );
    assert_eq!(vendor.requests().len(), 1);
    let (_, job) = api.get(&format!("/v1/jobs/{second}"), &user).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error_message"], reason.as_str());
    // Another account is not held to this one's spend.
    let other = api.login("other@example.com").await;
    let other = support::access(&other).to_string();
    let (_, me) = api.get("/v1/users/me", &other).await;
    assert_eq!(me["model_cost_usd"], 0.0, "{me}");
    let (_, access) = job_with_model_access(&api, &other, spec).await;
    assert_eq!(
        messages(&api, access["token"].as_str().unwrap(), "{}")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_is_named_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A loopback port with nothing listening.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (api, user) = api_with_upstream(dir.path(), &closed).await;
    let (_, access) =
        job_with_model_access(&api, &user, "---\nagent: claude-code\n---\nGo.\n").await;
    let response = messages(&api, access["token"].as_str().unwrap(), "{}").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("the model API of route `anthropic` did not answer"),
        "{text}"
    );
    assert!(
        !text.contains(ANTHROPIC_KEY) && !text.contains(&closed),
        "{text}"
    );
}
