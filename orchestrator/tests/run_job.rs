//! `run_job` against a fake API speaking docs/protocol.md: the whole flow, clone to complete.
#![allow(clippy::unwrap_used)]

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ckrv_orchestrator::api_client::ApiClient;
use ckrv_orchestrator::job::run_job;
use ckrv_orchestrator::options::JobOptions;
use ckrv_orchestrator::place::AgentPlace;
use ckrv_orchestrator::step_host::StepRunner;
use ckrv_pipeline::Pipeline;
use ckrv_test_support::{FakeEndpoint, Recorded as Call, git};
use ckrv_wit::types::{JobCompletion, JobPhase, JobState, LogBatch, PhaseUpdate};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The fake API's answer to the worker: the job, its heartbeats accepted until `heartbeats`
/// have come (then the job is someone else's), everything else taken.
fn answer(
    job: serde_json::Value,
    heartbeats: usize,
    pipeline: Arc<Pipeline>,
) -> impl Fn(Call) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    let beats = Arc::new(AtomicUsize::new(0));
    move |call: Call| {
        let component = call
            .path()
            .strip_prefix("/v1/worker/jobs/job-1/components/")
            .map(|digest| pipeline.component(digest).map(|b| b.to_vec()));
        std::future::ready(if call.header("authorization") != "Bearer worker-token" {
            StatusCode::UNAUTHORIZED.into_response()
        } else if let Some(component) = component {
            match component {
                Some(bytes) => bytes.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        } else if call.method == Method::GET && call.path() == "/v1/worker/jobs/job-1" {
            axum::Json(job.clone()).into_response()
        } else if call.path().ends_with("/heartbeat")
            && beats.fetch_add(1, Ordering::SeqCst) >= heartbeats
        {
            let refusal = r#"{"error":"conflict","error_description":"the job was cancelled"}"#;
            (StatusCode::CONFLICT, refusal).into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        })
    }
}

async fn run(spec: &str) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    run_renewing(spec, usize::MAX).await
}

async fn run_renewing(
    spec: &str,
    heartbeats: usize,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    run_with(spec, heartbeats, Pipeline::builtin(), &[], None).await
}

/// Runs the job against a fake that accepts `heartbeats` lease renewals and hands the worker
/// `pipeline` and the agent's model `keys` the operator configured.
async fn run_with(
    spec: &str,
    heartbeats: usize,
    pipeline: Pipeline,
    keys: &[&str],
    agent_bin: Option<&std::path::Path>,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    run_with_egress(spec, None, heartbeats, pipeline, keys, agent_bin).await
}

/// As [`run_with`], the API deciding the job's egress policy `egress` (the agent's own when
/// `None`).
async fn run_with_egress(
    spec: &str,
    egress: Option<&str>,
    heartbeats: usize,
    pipeline: Pipeline,
    keys: &[&str],
    agent_bin: Option<&std::path::Path>,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    let origin = origin_repo();
    let mut job = worker_job(spec, origin.path().to_str().unwrap(), &pipeline, keys);
    if let Some(egress) = egress {
        job["egress"] = egress.into();
    }
    let fake = FakeEndpoint::start(answer(job, heartbeats, Arc::new(pipeline))).await;
    run_against(&fake, agent_bin).await
}

/// The egress policy of `spec`'s agent, as the API decides it when nothing narrows it
/// (`none` for a spec that names no agent).
fn agent_egress(spec: &str) -> String {
    ckrv_agents::parse_spec(spec)
        .ok()
        .and_then(|spec| ckrv_agents::find_agent(&spec.front.agent))
        .map_or("none".to_string(), |agent| agent.egress.to_string())
}

/// A repository with one commit on `main`: README.md, "hello".
fn origin_repo() -> tempfile::TempDir {
    let origin = tempfile::tempdir().unwrap();
    git(origin.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(origin.path().join("README.md"), "hello\n").unwrap();
    git(origin.path(), &["add", "-A"]);
    git(origin.path(), &["commit", "-q", "-m", "initial"]);
    origin
}

/// The model token the fake API hands the worker of `job-1`.
const MODEL_TOKEN: &str = "ckrv_mt_0123456789abcdef0123456789abcdef";

/// What the fake API hands the worker of `job-1`: `spec` on `repo_url`, `pipeline`, and model
/// access for the agent's `keys`.
fn worker_job(spec: &str, repo_url: &str, pipeline: &Pipeline, keys: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "job": {
            "id": "job-1", "status": "running", "state": "running", "phase": "queued",
            "spec_path": "specs/x.md", "git_repo_url": repo_url,
            "git_base_branch": "main", "feature_branch_name": "ckrv/job-1",
            "created_at": "2026-11-22T12:00:00Z", "updated_at": "2026-11-22T12:00:00Z",
            "started_at": "2026-11-22T12:00:00Z"
        },
        "spec_content": spec,
        "heartbeat_ms": 100,
        "log_sequence": 7,
        "pipeline": pipeline.stages,
        "model_access": {"token": MODEL_TOKEN, "keys": keys},
        "egress": agent_egress(spec),
    })
}

/// Runs job `job-1` against `fake` as its worker, sandboxed, local repositories allowed.
async fn run_against(
    fake: &FakeEndpoint,
    agent_bin: Option<&std::path::Path>,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    run_against_keeping(fake, agent_bin, None).await
}

/// [`run_against`], by a worker that keeps unpacked copies of snapshots in `warm`.
async fn run_against_keeping(
    fake: &FakeEndpoint,
    agent_bin: Option<&std::path::Path>,
    warm: Option<Arc<ckrv_orchestrator::warm::WarmSnapshots>>,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    let work_dir = tempfile::tempdir().unwrap();
    let api = ApiClient::new(&fake.url, "job-1", "worker-token").unwrap();
    let outcome = run_job(
        api,
        JobOptions {
            steps: Arc::new(StepRunner::new().unwrap()),
            work_dir: Some(work_dir.path().to_path_buf()),
            workspace: None,
            token: "worker-token".into(),
            allow_local_repos: true,
            agent: AgentPlace::Sandbox(Default::default()),
            agent_bin: agent_bin.map(std::path::Path::to_path_buf),
            egress_bridge: Some(ckrv_test_support::egress_bridge()),
            warm,
        },
    )
    .await
    .unwrap();
    (outcome, fake.requests(), work_dir)
}

fn bodies<T: serde::de::DeserializeOwned>(calls: &[Call], suffix: &str) -> Vec<T> {
    calls
        .iter()
        .filter(|c| c.path().ends_with(suffix))
        .map(|c| serde_json::from_slice(&c.body).unwrap())
        .collect()
}

fn log_lines(calls: &[Call]) -> Vec<(String, String)> {
    bodies::<LogBatch>(calls, "/logs")
        .into_iter()
        .flat_map(|b| b.lines)
        .map(|l| (l.source, l.message))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_from_clone_to_complete() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let spec = "---\nagent: script\nrun: |\n  echo changing\n  echo world >> README.md\n  echo new > added.txt\n---\n# Add a file\n";
    let (outcome, calls, work_dir) = run(spec).await;
    assert_eq!(outcome, Ok(()));
    assert!(
        calls
            .iter()
            .all(|c| c.header("authorization") == "Bearer worker-token")
    );
    assert_eq!(calls[0].method, Method::GET);

    let phases: Vec<PhaseUpdate> = bodies(&calls, "/phase");
    let phases: Vec<_> = phases.iter().map(|p| p.phase).collect();
    assert_eq!(
        phases,
        [
            JobPhase::Cloning,
            JobPhase::Agent,
            JobPhase::Diffing,
            JobPhase::Uploading,
            JobPhase::Publishing
        ]
    );

    let lines = log_lines(&calls);
    let has = |source: &str, message: &str| {
        lines
            .iter()
            .any(|(s, m)| s == source && m.contains(message))
    };
    assert!(has("orchestrator", "Cloning repository..."), "{lines:?}");
    assert!(has("orchestrator", "Starting agent: script"));
    assert!(has("script", "changing"));
    assert!(has("diff", "2 files changed"), "{lines:?}");
    // The API had stored 7 lines of an earlier worker: this one numbers its own from 8.
    let batches: Vec<LogBatch> = bodies(&calls, "/logs");
    assert_eq!(batches[0].first_sequence, 8);

    let diff = uploaded_diff(&calls);
    assert!(
        diff.contains("+world") && diff.contains("added.txt"),
        "{diff}"
    );
    let results: Vec<ckrv_wit::types::DiffStats> = bodies(&calls, "/result");
    assert_eq!(results[0].files_changed, 2);

    let last = calls.last().unwrap();
    assert_eq!(last.path(), "/v1/worker/jobs/job-1/complete");
    let done: JobCompletion = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    // The workspace is gone.
    assert_eq!(std::fs::read_dir(work_dir.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_agent_fails_the_job_without_uploading() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let spec = "---\nagent: script\nrun: echo trying; exit 1\n---\n";
    let (outcome, calls, _work_dir) = run(spec).await;
    assert_eq!(outcome, Err("agent exited with status 1".to_string()));
    assert!(!calls.iter().any(|c| c.path().ends_with("/artifacts/diff")));
    let lines = log_lines(&calls);
    assert!(lines.iter().any(|(s, m)| s == "script" && m == "trying"));
    assert!(
        lines
            .iter()
            .any(|(s, m)| s == "orchestrator" && m.contains("agent exited with status 1"))
    );
    let done: JobCompletion = serde_json::from_slice(&calls.last().unwrap().body).unwrap();
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(
        done.error_message.as_deref(),
        Some("agent exited with status 1")
    );
}

/// The patch the worker uploaded.
fn uploaded_diff(calls: &[Call]) -> String {
    let diff = calls
        .iter()
        .find(|c| c.method == Method::PUT && c.path() == "/v1/worker/jobs/job-1/artifacts/diff")
        .unwrap();
    String::from_utf8(diff.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_the_agent_plants_is_never_opened_and_never_becomes_a_submodule() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    // A repository of the host's, outside the workspace: the agent names it in a `.git` file.
    let outside = tempfile::tempdir().unwrap();
    git(outside.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(outside.path().join("host-only.txt"), "the host's own\n").unwrap();
    git(outside.path(), &["add", "-A"]);
    git(outside.path(), &["commit", "-q", "-m", "host"]);
    let head = git(outside.path(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    // Its HEAD last read long ago: on this relatime mount, any read from now on moves that.
    let head_file = outside.path().join(".git/HEAD");
    std::fs::File::options()
        .write(true)
        .open(&head_file)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(std::time::UNIX_EPOCH))
        .unwrap();
    // Besides an ordinary edit: `sub/.git` names that repository, and `sub2` is a repository
    // of the agent's own; both hold files of their own too.
    let spec = format!(
        "---\nagent: script\nrun: |\n  echo world >> README.md\n  mkdir sub\n  \
         printf 'gitdir: %s\\n' '{gitdir}' > sub/.git\n  echo note > sub/notes.txt\n  \
         git init -q sub2\n  echo lib > sub2/lib.txt\n  git -C sub2 add -A\n  \
         git -C sub2 -c user.name=agent -c user.email=agent@example.com commit -q -m lib\n\
         ---\n# Plant repositories\n",
        gitdir = outside.path().join(".git").display()
    );
    let (outcome, calls, _work_dir) = run(&spec).await;
    let lines = log_lines(&calls);
    assert_eq!(outcome, Ok(()), "{lines:?}");

    let diff = uploaded_diff(&calls);
    assert!(
        !diff.contains("Subproject commit") && !diff.contains("160000"),
        "a submodule commit reached the diff: {diff}"
    );
    assert!(
        !diff.contains(&head) && !diff.contains("host-only") && !diff.contains("sub2/.git"),
        "{diff}"
    );
    assert_eq!(
        std::fs::metadata(&head_file).unwrap().accessed().unwrap(),
        std::time::UNIX_EPOCH,
        "host git opened the repository the agent named"
    );
    // The rest of the change arrives, the planted directories' other files as plain files.
    for path in ["README.md", "sub/notes.txt", "sub2/lib.txt"] {
        assert!(diff.contains(&format!("+++ b/{path}\n")), "{path}: {diff}");
    }
    let results: Vec<ckrv_wit::types::DiffStats> = bodies(&calls, "/result");
    assert_eq!(results[0].files_changed, 3);
    // The user is told what was left out, and why.
    for planted in ["sub/.git", "sub2/.git"] {
        assert!(
            lines
                .iter()
                .any(|(s, m)| s == "diff" && m.starts_with(&format!("left {planted} out"))),
            "{planted}: {lines:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spec_without_front_matter_fails_clearly() {
    let (outcome, calls, _work_dir) = run("# just a title\n").await;
    let error = outcome.unwrap_err();
    assert!(error.contains("front matter"), "{error}");
    let done: JobCompletion = serde_json::from_slice(&calls.last().unwrap().body).unwrap();
    assert_eq!(done.state, JobState::Failed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_job_ended_elsewhere_stops_its_agent_and_reports_nothing() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let spec = "---\nagent: script\nrun: |\n  echo started\n  sleep 60\n---\n# Wait\n";
    let (outcome, calls, work_dir) = run_renewing(spec, 3).await;
    // The API said the job is no longer this worker's: it stops, well before the agent's 60 s.
    let error = outcome.unwrap_err();
    assert!(error.contains("the job was cancelled"), "{error}");
    let beats = calls
        .iter()
        .filter(|c| c.path().ends_with("/heartbeat"))
        .count();
    assert_eq!(beats, 4, "three renewals, then the refusal");
    assert!(
        !calls
            .iter()
            .any(|c| c.path().ends_with("/complete") || c.path().ends_with("/artifacts/diff")),
        "a worker that lost its job reports nothing"
    );
    assert_eq!(
        std::fs::read_dir(work_dir.path()).unwrap().count(),
        0,
        "the workspace is removed"
    );
}

/// A refusal of the API's egress proxy, as a heartbeat's answer carries it.
const PROXY_REFUSAL: &str = "Connection blocked by network allowlist: paste.localhost:443 (not in the job's allowlist, policy `model`)";

/// Runs `spec` against a fake API whose first heartbeat answer carries [`PROXY_REFUSAL`] (the
/// job pod's agent was refused by the API's proxy), renewing every `heartbeat_ms`.
async fn run_hearing_a_refusal(spec: &str, heartbeat_ms: u64) -> Vec<(String, String)> {
    let origin = origin_repo();
    let pipeline = Pipeline::builtin();
    let mut job = worker_job(spec, origin.path().to_str().unwrap(), &pipeline, &[]);
    job["heartbeat_ms"] = heartbeat_ms.into();
    let inner = answer(job, usize::MAX, Arc::new(pipeline));
    let told = Arc::new(AtomicUsize::new(0));
    let fake = FakeEndpoint::start(move |call: Call| {
        let inner = inner.clone();
        let told = told.clone();
        async move {
            if call.path().ends_with("/heartbeat") {
                let refusals: Vec<&str> = match told.fetch_add(1, Ordering::SeqCst) {
                    0 => vec![PROXY_REFUSAL],
                    _ => vec![],
                };
                return axum::Json(serde_json::json!({ "egress_refusals": refusals }))
                    .into_response();
            }
            inner(call).await
        }
    })
    .await;
    let (outcome, calls, _work_dir) = run_against(&fake, None).await;
    outcome.unwrap();
    log_lines(&calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_of_the_apis_egress_proxy_come_with_heartbeats_into_the_log_once() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    // Heard while the agent runs, and heard in the heartbeat after it ends (the agent's last
    // moments): each one line under the `egress` source, before the job's end.
    let slow = "---\nagent: script\nrun: sleep 1\n---\n# Wait\n";
    let quick = "---\nagent: script\nrun: \"true\"\n---\n# Go\n";
    for (spec, heartbeat_ms) in [(slow, 100), (quick, 600_000)] {
        let lines = run_hearing_a_refusal(spec, heartbeat_ms).await;
        let egress: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, (source, _))| source == "egress")
            .map(|(at, (_, message))| {
                assert_eq!(message, PROXY_REFUSAL);
                at
            })
            .collect();
        assert_eq!(egress.len(), 1, "{lines:?}");
        let end = lines
            .iter()
            .position(|(_, m)| m == "Job succeeded")
            .unwrap();
        assert!(egress[0] < end, "{lines:?}");
    }
}

/// The base-URL variables an agent gets, and how each value ends: the gateway's route and the
/// path the CLI expects after its base URL.
fn base_urls(agent: &str) -> Vec<(&'static str, &'static str)> {
    match agent {
        "codex" => vec![("OPENAI_BASE_URL", "/v1/gateway/openai/v1")],
        "gemini-cli" => vec![("GOOGLE_GEMINI_BASE_URL", "/v1/gateway/gemini")],
        "aider" => vec![
            ("ANTHROPIC_API_BASE", "/v1/gateway/anthropic"),
            ("ANTHROPIC_BASE_URL", "/v1/gateway/anthropic"),
            ("OPENAI_API_BASE", "/v1/gateway/openai/v1"),
            ("OPENAI_BASE_URL", "/v1/gateway/openai/v1"),
            ("GEMINI_API_BASE", "/v1/gateway/gemini"),
        ],
        _ => vec![("ANTHROPIC_BASE_URL", "/v1/gateway/anthropic")],
    }
}

/// The log's lines that each say one connection the job's egress policy refused.
fn refusals(lines: &[(String, String)]) -> Vec<&str> {
    lines
        .iter()
        .filter(|(source, _)| source == "egress")
        .map(|(_, m)| m.as_str())
        .collect()
}

/// What a stand-in agent said it received: its arguments, prompt and environment lines.
fn said<'a>(lines: &'a [(String, String)], agent: &str, prefix: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|(source, _)| source == agent)
        .filter_map(|(_, m)| m.strip_prefix(prefix))
        .collect()
}

/// An agent, its program, a model, the arguments it must get, how its prompt arrives, and the
/// keys it gets.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [&'a str],
    &'a str,
    &'a [&'a str],
);

#[tokio::test(flavor = "multi_thread")]
async fn each_real_agent_definition_is_invoked_as_its_cli_expects_in_the_sandbox() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    let bin = bin.path().join("bin");
    ckrv_test_support::install_agent_stand_ins(&bin, &["claude", "codex", "gemini", "aider"]);
    // The keys the operator configured: each agent gets the job's model token in those it
    // declares, and the gateway's address for their routes.
    let configured = [
        "ANTHROPIC_API_KEY",
        "CODEX_API_KEY",
        "GEMINI_API_KEY",
        "OPENAI_API_KEY",
    ];
    let codex_flags = [
        "exec",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "--ephemeral",
        "--color",
        "never",
        "-c",
        "check_for_update_on_startup=false",
        "-c",
        "analytics.enabled=false",
        "-c",
        "model_provider=ckrv-gateway",
        "-c",
        "model_providers.ckrv-gateway.name=ckrv-gateway",
        "-c",
        "model_providers.ckrv-gateway.base_url=GATEWAY/v1/gateway/openai/v1",
        "-c",
        "model_providers.ckrv-gateway.env_key=CODEX_API_KEY",
        "-c",
        "model_providers.ckrv-gateway.wire_api=responses",
        "--model",
        "gpt-5-codex",
        "-",
    ];
    let gemini_flags = [
        "--approval-mode",
        "yolo",
        "--skip-trust",
        "--output-format",
        "text",
        "--model",
        "gemini-2.5-pro",
    ];
    let aider_flags = [
        "--message-file",
        "/run/ckrv/prompt.md",
        "--yes-always",
        "--no-auto-commits",
        "--no-dirty-commits",
        "--no-gitignore",
        "--chat-history-file",
        "/dev/null",
        "--input-history-file",
        "/dev/null",
        "--no-check-update",
        "--no-show-release-notes",
        "--no-analytics",
        "--disable-playwright",
        "--no-pretty",
        "--no-fancy-input",
        "--model",
        "sonnet",
    ];
    let cases: [Case; 3] = [
        (
            "codex",
            "codex",
            "gpt-5-codex",
            &codex_flags,
            "stdin: ",
            &["CODEX_API_KEY"],
        ),
        (
            "gemini-cli",
            "gemini",
            "gemini-2.5-pro",
            &gemini_flags,
            "stdin: ",
            &["GEMINI_API_KEY"],
        ),
        (
            "aider",
            "aider",
            "sonnet",
            &aider_flags,
            "prompt-file: ",
            &["ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OPENAI_API_KEY"],
        ),
    ];
    for (agent, program, model, argv, prompt, keys) in cases {
        let spec = format!("---\nagent: {agent}\nmodel: {model}\n---\nAdd a greeting.\n");
        let (outcome, calls, _work) = run_with(
            &spec,
            usize::MAX,
            Pipeline::builtin(),
            &configured,
            Some(&bin),
        )
        .await;
        let lines = log_lines(&calls);
        assert_eq!(outcome, Ok(()), "{agent}: {lines:?}");
        // The gateway's address (the API's, on a port of its own) reads as GATEWAY.
        let called: Vec<String> = said(&lines, agent, "argv: ")
            .into_iter()
            .map(|arg| match arg.split_once("=http://127.0.0.1:") {
                Some((setting, rest)) => match rest.split_once('/') {
                    Some((_port, path)) => format!("{setting}=GATEWAY/{path}"),
                    None => arg.to_string(),
                },
                None => arg.to_string(),
            })
            .collect();
        assert_eq!(called, argv, "{agent}");
        assert_eq!(said(&lines, agent, prompt), ["Add a greeting."], "{agent}");
        // Exactly the declared keys arrived, each redacted in the log.
        let mut got: Vec<&str> = said(&lines, agent, "env: ")
            .into_iter()
            .filter(|e| e.contains("_KEY="))
            .collect();
        got.sort_unstable();
        let expected: Vec<String> = keys.iter().map(|k| format!("{k}=[redacted]")).collect();
        assert_eq!(got, expected, "{agent}");
        // What each key variable held is the job's model token, exactly.
        let token_digest = hex::encode(Sha256::digest(MODEL_TOKEN));
        let digests: Vec<String> = keys.iter().map(|k| format!("{k}={token_digest}")).collect();
        let mut got = said(&lines, agent, "key-sha256: ");
        got.sort_unstable();
        assert_eq!(got, digests, "{agent}");
        assert!(
            lines.iter().all(|(_, m)| !m.contains(MODEL_TOKEN)),
            "{agent}: the model token reached the log"
        );
        // The host outside its policy was refused, and the log says so under `egress`.
        assert_eq!(said(&lines, agent, "outside: "), ["403"], "{agent}");
        assert_eq!(
            refusals(&lines),
            [
                "Connection blocked by network allowlist: localhost:9 (not in the job's allowlist, policy `model`)"
            ],
            "{agent}"
        );
        // Each route's base URL leads to the API's gateway, below the worker's API URL.
        let env = said(&lines, agent, "env: ");
        for (var, route) in base_urls(agent) {
            let value = env
                .iter()
                .find_map(|e| e.strip_prefix(&format!("{var}=")))
                .unwrap_or_else(|| panic!("{agent}: no {var} in {env:?}"));
            assert!(
                value.starts_with("http://127.0.0.1:") && value.ends_with(route),
                "{agent}: {var}={value}"
            );
        }
        let diff = calls
            .iter()
            .find(|c| c.path().ends_with("/artifacts/diff"))
            .unwrap();
        let diff = String::from_utf8_lossy(&diff.body);
        assert!(
            diff.contains(&format!("+edited by {program}")),
            "{agent}: {diff}"
        );
        assert!(!diff.contains(".aider.tags.cache"), "{agent}: {diff}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_connects_only_as_the_egress_policy_the_api_decided() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    let bin = bin.path().join("bin");
    ckrv_test_support::install_agent_stand_ins(&bin, &["claude"]);
    let spec = "---\nagent: claude-code\n---\nAdd a greeting.\n";
    let keys = ["ANTHROPIC_API_KEY"];
    // The operator's `registries`: the gateway and the registries, and not the host outside.
    // Read-only too: the agent's model calls (POSTs to the gateway) still go through, and its
    // clients are told to trust the authority the proxy reads HTTPS with.
    for policy in ["registries", "registries;read-only"] {
        let (outcome, calls, _work) = run_with_egress(
            spec,
            Some(policy),
            usize::MAX,
            Pipeline::builtin(),
            &keys,
            Some(&bin),
        )
        .await;
        assert_eq!(outcome, Ok(()), "{policy}");
        let lines = log_lines(&calls);
        assert_eq!(
            refusals(&lines),
            [format!(
                "Connection blocked by network allowlist: localhost:9 (not in the job's allowlist, policy `{policy}`)"
            )]
        );
        let trusted =
            said(&lines, "claude-code", "env: ").contains(&"SSL_CERT_FILE=/run/ckrv/egress-ca.pem");
        assert_eq!(
            trusted,
            policy.ends_with(";read-only"),
            "{policy}: {lines:?}"
        );
    }
    // A spec that narrowed its job to `none`: no proxy, no network, nothing to refuse, and
    // the model cannot be reached either.
    let (outcome, calls, _work) = run_with_egress(
        spec,
        Some("none"),
        usize::MAX,
        Pipeline::builtin(),
        &keys,
        Some(&bin),
    )
    .await;
    assert_eq!(outcome, Ok(()));
    let lines = log_lines(&calls);
    assert!(
        lines.iter().all(|(source, _)| source != "egress"),
        "{lines:?}"
    );
    let outside = said(&lines, "claude-code", "outside: ");
    assert!(
        outside.len() == 1 && outside[0].contains("Couldn't connect to server"),
        "{outside:?}"
    );
    assert!(
        said(&lines, "claude-code", "env: ")
            .iter()
            .all(|e| !e.to_ascii_lowercase().starts_with("http")),
        "no proxy variables without egress"
    );
    // A policy the worker cannot read fails the job before the agent starts.
    let (outcome, calls, _work) = run_with_egress(
        spec,
        Some("https://not a policy"),
        usize::MAX,
        Pipeline::builtin(),
        &keys,
        Some(&bin),
    )
    .await;
    let error = outcome.unwrap_err();
    assert!(
        error.starts_with("the agent's egress: bad egress entry"),
        "{error}"
    );
    assert!(said(&log_lines(&calls), "claude-code", "").is_empty());
}

/// Built from `orchestrator/steps/hostile` by build.rs for the tests only.
const HOSTILE_STEP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_hostile.wasm"));

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_component_comes_by_digest_and_a_runaway_one_fails_the_job_naming_its_limit() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostile.wasm"), HOSTILE_STEP).unwrap();
    let text = "[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\n\
                [[stage]]\nagent = true\nphase = \"agent\"\n\
                [[stage]]\nname = \"runaway\"\ncomponent = \"hostile.wasm\"\nphase = \"diffing\"\n\
                timeout_s = 1\nmemory_mb = 32\nparams = { mode = \"spin\" }\n\
                [[stage]]\nstep = \"upload\"\nphase = \"uploading\"\n";
    let pipeline = Pipeline::parse(text, "p.toml", dir.path()).unwrap();
    let digest = pipeline.stages[2].source.clone().unwrap();
    let spec = "---\nagent: script\nrun: echo hi >> README.md\n---\n";
    let (outcome, calls, _work) = run_with(spec, usize::MAX, pipeline, &[], None).await;
    assert_eq!(
        outcome,
        Err("step runaway was stopped at its time limit of 1s".to_string())
    );
    assert!(
        calls
            .iter()
            .any(|c| c.path() == format!("/v1/worker/jobs/job-1/components/{digest}"))
    );
    let completion: Vec<JobCompletion> = bodies(&calls, "/complete");
    assert_eq!(completion[0].state, JobState::Failed);
    assert!(calls.iter().all(|c| !c.path().ends_with("/artifacts/diff")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_whose_bytes_do_not_match_its_digest_is_not_run() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostile.wasm"), HOSTILE_STEP).unwrap();
    let text = "[[stage]]\nagent = true\nphase = \"agent\"\n\
                [[stage]]\ncomponent = \"hostile.wasm\"\nphase = \"diffing\"\n";
    let mut pipeline = Pipeline::parse(text, "p.toml", dir.path()).unwrap();
    // The API (here, the fake) serves other bytes under the digest the stage names.
    let digest = pipeline.stages[1].source.clone().unwrap();
    let other = ckrv_orchestrator::step_host::builtin_component("diff").unwrap();
    pipeline.components.insert(digest, other.into());
    let spec = "---\nagent: script\nrun: echo hi\n---\n";
    let (outcome, _, _work) = run_with(spec, usize::MAX, pipeline, &[], None).await;
    let error = outcome.unwrap_err();
    assert!(
        error.starts_with("stage hostile: reading its component failed: ")
            && error.ends_with("the component's bytes do not match its digest"),
        "{error}"
    );
}

/// Runs a job on `repo_url` whose worker is handed `credential` (JSON), against a fake API.
async fn run_private(
    repo_url: &str,
    credential: serde_json::Value,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    let pipeline = Pipeline::builtin();
    let job = serde_json::json!({
        "job": {
            "id": "job-1", "status": "running", "state": "running", "phase": "queued",
            "git_repo_url": repo_url, "git_base_branch": "main",
            "feature_branch_name": "ckrv/job-1", "created_at": "2026-11-22T12:00:00Z",
        },
        "spec_content": "---\nagent: script\nrun: |\n  git remote -v\n  cat .git/config\n  env\n  echo changed >> README.md\n---\n",
        "heartbeat_ms": 100,
        "log_sequence": 0,
        "pipeline": pipeline.stages,
        "model_access": {"token": MODEL_TOKEN, "keys": []},
        "egress": "none",
        "git_credential": credential,
    });
    let fake = FakeEndpoint::start(answer(job, usize::MAX, Arc::new(pipeline))).await;
    run_against(&fake, None).await
}

// A plain test: the repository server has a runtime of its own, which cannot be dropped
// inside another.
#[test]
fn a_private_repository_is_cloned_with_the_jobs_token_which_nothing_else_sees() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    const TOKEN: &str = "ghp_privateRepoToken0123456789abcdefABCD";
    let served = tempfile::tempdir().unwrap();
    ckrv_test_support::create_served_repo(served.path(), "app", &[("README.md", "# App\n")]);
    let server =
        ckrv_test_support::StaticServer::start_private(served.path(), "x-access-token", TOKEN);
    let url = format!("http://{}/app.git", server.addr);

    let credential =
        serde_json::json!({"provider": "github", "credential_type": "pat", "value": TOKEN});
    let (outcome, calls, work_dir) = runtime.block_on(run_private(&url, credential));
    let lines = log_lines(&calls);
    assert_eq!(outcome, Ok(()), "{lines:?}");
    // git asked, was answered from the host's environment, and the server got the token.
    let seen = server.authorizations.lock().unwrap().clone();
    assert!(!seen.is_empty());
    // The agent printed its remote, its git config and its environment: no token in any.
    assert!(
        lines
            .iter()
            .any(|(_, m)| m.contains(&format!("origin\t{url} (fetch)")))
    );
    for (_, message) in &lines {
        assert!(
            !message.contains(TOKEN) && !message.contains("CKRV_GIT"),
            "{message}"
        );
    }
    let diff = calls
        .iter()
        .find(|c| c.path().ends_with("/artifacts/diff"))
        .unwrap();
    assert!(!String::from_utf8_lossy(&diff.body).contains(TOKEN));
    // Nothing of it stays on disk.
    let leftovers = std::process::Command::new("grep")
        .args(["-rl", TOKEN])
        .arg(work_dir.path())
        .output()
        .unwrap();
    assert!(leftovers.stdout.is_empty(), "{leftovers:?}");

    // A wrong token fails the clone with git's own words, and shows nothing of the token.
    let wrong = serde_json::json!({"provider": "github", "credential_type": "pat", "value": "ghp_wrongWrongWrong0123456789"});
    let (outcome, calls, _) = runtime.block_on(run_private(&url, wrong));
    let error = outcome.unwrap_err();
    assert!(error.starts_with("clone failed: "), "{error}");
    assert!(!error.contains("ghp_wrong"), "{error}");
    assert!(
        log_lines(&calls)
            .iter()
            .all(|(_, m)| !m.contains("ghp_wrong"))
    );
    // No credential at all: the server refuses and git cannot prompt.
    let (outcome, _, _) = runtime.block_on(run_private(&url, serde_json::Value::Null));
    assert!(outcome.unwrap_err().starts_with("clone failed: "));
}

#[test]
fn a_deploy_key_clones_over_ssh_and_leaves_no_key_behind() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("deploy");
    ckrv_test_support::ssh_keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let Some(sshd) = ckrv_test_support::SshServer::start(&public) else {
        return;
    };
    let private_key = std::fs::read_to_string(&key).unwrap();
    let served = tempfile::tempdir().unwrap();
    let bare =
        ckrv_test_support::create_served_repo(served.path(), "app", &[("README.md", "# App\n")]);
    let url = sshd.url(&bare);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let credential = serde_json::json!({"provider": "generic", "credential_type": "deploy_key", "value": private_key});
    let (outcome, calls, work_dir) = runtime.block_on(run_private(&url, credential));
    let lines = log_lines(&calls);
    assert_eq!(outcome, Ok(()), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(_, m)| m.contains(&format!("origin\t{url} (fetch)")))
    );
    // The key's body is in no log line, and no file of the worker's holds it after the clone.
    let body = private_key.lines().nth(1).unwrap();
    assert!(lines.iter().all(|(_, m)| !m.contains(body)));
    let leftovers = std::process::Command::new("grep")
        .args(["-rl", body])
        .arg(work_dir.path())
        .output()
        .unwrap();
    assert!(leftovers.stdout.is_empty(), "{leftovers:?}");

    // Another key is refused by the server; a token cannot be used over ssh.
    let other = keys.path().join("other");
    ckrv_test_support::ssh_keygen(&other);
    let wrong = serde_json::json!({"provider": "generic", "credential_type": "deploy_key", "value": std::fs::read_to_string(&other).unwrap()});
    let (outcome, _, _) = runtime.block_on(run_private(&url, wrong));
    let error = outcome.unwrap_err();
    assert!(error.starts_with("clone failed: "), "{error}");
    let token = serde_json::json!({"provider": "github", "credential_type": "pat", "value": "ghp_notForSsh0123456789"});
    let (outcome, _, _) = runtime.block_on(run_private(&url, token));
    assert_eq!(
        outcome.unwrap_err(),
        "clone failed: the job's credential is an access token, which works over https:// only; use a deploy key for ssh"
    );
}

#[test]
fn a_token_goes_with_the_user_name_its_host_wants() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    const TOKEN: &str = "gitea-token-0123456789abcdef";
    let served = tempfile::tempdir().unwrap();
    ckrv_test_support::create_served_repo(served.path(), "app", &[("README.md", "# App\n")]);
    let server = ckrv_test_support::StaticServer::start_private(served.path(), "alice", TOKEN);
    let url = format!("http://{}/app.git", server.addr);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The generic default user name is not the one this host wants: refused.
    let default =
        serde_json::json!({"provider": "generic", "credential_type": "pat", "value": TOKEN});
    let (outcome, _, _) = runtime.block_on(run_private(&url, default));
    assert!(outcome.unwrap_err().starts_with("clone failed: "));
    let named = serde_json::json!({"provider": "generic", "credential_type": "pat", "value": TOKEN, "username": "alice"});
    let (outcome, calls, _) = runtime.block_on(run_private(&url, named));
    assert_eq!(outcome, Ok(()), "{:?}", log_lines(&calls));
}

// The job pod (docs/job-pod.md): the orchestrator binary in pod mode and the real
// `ckrv-agent-entrypoint`, each its own process, as the pod's two containers are, sharing only
// the pod's volumes.

/// The real `ckrv-agent-entrypoint` (a binary of crate ckrv-agents, which `cargo test -p
/// ckrv-orchestrator` alone does not build), built once into this test's target directory.
fn entrypoint_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/run_job-<hash>
            let profile_dir = exe.parent().unwrap().parent().unwrap();
            let profile = profile_dir.file_name().unwrap().to_str().unwrap();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .args(["build", "--quiet", "--locked", "-p", "ckrv-agents"])
                .args(["--bin", "ckrv-agent-entrypoint", "--profile"])
                .arg(if profile == "debug" { "dev" } else { profile })
                .arg("--target-dir")
                .arg(profile_dir.parent().unwrap())
                .status()
                .unwrap();
            assert!(status.success(), "building ckrv-agent-entrypoint failed");
            profile_dir.join("ckrv-agent-entrypoint")
        })
        .clone()
}

/// The pod's volumes, and the worker token as its Secret mounts it.
struct JobPod {
    _root: tempfile::TempDir,
    control: std::path::PathBuf,
    output: std::path::PathBuf,
    workspace: std::path::PathBuf,
    work: std::path::PathBuf,
    /// The agent container's home, which the orchestrator mounts too.
    home: std::path::PathBuf,
    token_file: std::path::PathBuf,
}

/// A process of the test's, killed if the test ends first.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    /// Waits for it to exit; its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "it did not exit");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl JobPod {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let path = root.path().join(name);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let (control, output, workspace, work, home) = (
            dir("control"),
            dir("agent"),
            dir("workspace"),
            dir("work"),
            dir("home"),
        );
        let token_file = dir("secrets").join("token");
        // As a Secret's file ends: maybe with a newline, which is not part of the token.
        std::fs::write(&token_file, "worker-token\n").unwrap();
        Self {
            _root: root,
            control,
            output,
            workspace,
            work,
            home,
            token_file,
        }
    }

    /// A fake API serving `job`; it answers the report of the agent's phase only after a
    /// while, as the API does once it has narrowed the pod's network. The flag says whether
    /// the agent was launched before that answer.
    async fn fake_api(
        &self,
        job: serde_json::Value,
        pipeline: Pipeline,
    ) -> (FakeEndpoint, Arc<std::sync::atomic::AtomicBool>) {
        let early = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (inner, launch, flag) = (
            answer(job, usize::MAX, Arc::new(pipeline)),
            self.control.join(ckrv_agents::pod::LAUNCH),
            early.clone(),
        );
        let fake = FakeEndpoint::start(move |call: Call| {
            let (inner, launch, flag) = (inner.clone(), launch.clone(), flag.clone());
            async move {
                if call.path().ends_with("/phase")
                    && call.json::<PhaseUpdate>().phase == JobPhase::Agent
                {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    if launch.exists() {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
                inner(call).await
            }
        })
        .await;
        (fake, early)
    }

    /// The agent's container: the entrypoint in the workspace, with an environment of its own
    /// (and a token it must not pass on).
    fn entrypoint(&self) -> Process {
        let child = std::process::Command::new(entrypoint_binary())
            .args(ckrv_agents::pod::entrypoint_args(
                &self.control,
                &self.output,
            ))
            .current_dir(&self.workspace)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", &self.home)
            .env("CKRV_WORKER_TOKEN", "not-for-the-agent")
            .spawn()
            .unwrap();
        Process(child)
    }

    /// `ckrv-orchestrator run` as the pod runs it, with the token in `token_file`.
    async fn orchestrator(
        &self,
        api_url: &str,
        token_file: &std::path::Path,
    ) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ckrv-orchestrator"))
            .args([
                "run",
                "--job-id",
                "job-1",
                "--allow-local-repos",
                "--api-url",
                api_url,
            ])
            .arg("--token-file")
            .arg(token_file)
            .arg("--work-dir")
            .arg(&self.work)
            .arg("--workspace")
            .arg(&self.workspace)
            .arg("--agent-control")
            .arg(&self.control)
            .arg("--agent-output")
            .arg(&self.output)
            .arg("--agent-home")
            .arg(&self.home)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap()
    }

    fn has(&self, dir: &std::path::Path, name: &str) -> bool {
        dir.join(name).exists()
    }

    /// Runs `spec` on `repo` in this pod against a fake API, to the job's reported end (the
    /// orchestrator exits 0 and so does the agent's container); that end.
    async fn run_to_the_end(&self, spec: &str, repo: &str) -> JobCompletion {
        let pipeline = Pipeline::builtin();
        let job = worker_job(spec, repo, &pipeline, &[]);
        let (fake, _) = self.fake_api(job, pipeline).await;
        let calls = self.run_against(&fake).await;
        serde_json::from_slice(&calls.last().unwrap().body).unwrap()
    }

    /// Runs the pod's two containers against `fake` until both exit 0 (a failed job that was
    /// reported is a finished run); the calls the API got.
    async fn run_against(&self, fake: &FakeEndpoint) -> Vec<Call> {
        let mut entrypoint = self.entrypoint();
        let out = self.orchestrator(&fake.url, &self.token_file).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(entrypoint.exit_code().await, Some(0));
        fake.requests()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_job_pod_the_agent_runs_in_its_container_once_the_api_has_its_phase() {
    let origin = origin_repo();
    let spec = "---\nagent: script\nrun: |\n  echo changing\n  echo \"token=${CKRV_WORKER_TOKEN:-none} home=$HOME\"\n  echo world >> README.md\n  echo careful >&2\n---\n# Add a line\n";
    let pipeline = Pipeline::builtin();
    let job = worker_job(spec, origin.path().to_str().unwrap(), &pipeline, &[]);
    let pod = JobPod::new();
    let (fake, launched_early) = pod.fake_api(job, pipeline).await;
    let mut entrypoint = pod.entrypoint();
    let out = pod.orchestrator(&fake.url, &pod.token_file).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("worker-token"),
        "the token was logged: {stderr}"
    );
    let calls = fake.requests();
    let lines = log_lines(&calls);
    // The trimmed token from the file was the one used.
    assert!(
        calls
            .iter()
            .all(|c| c.header("authorization") == "Bearer worker-token")
    );
    assert!(
        !launched_early.load(Ordering::SeqCst),
        "the agent was launched before the API had its phase"
    );
    let has = |source: &str, message: &str| lines.iter().any(|(s, m)| s == source && m == message);
    assert!(
        has(
            "orchestrator",
            "The agent runs in its own container of the job's pod"
        ),
        "{lines:?}"
    );
    assert!(has("script", "changing"), "{lines:?}");
    assert!(
        has("script", &format!("token=none home={}", pod.home.display())),
        "{lines:?}"
    );
    assert!(has("script", "careful"), "{lines:?}");
    let diff = calls
        .iter()
        .find(|c| c.method == Method::PUT && c.path() == "/v1/worker/jobs/job-1/artifacts/diff")
        .unwrap();
    assert!(String::from_utf8_lossy(&diff.body).contains("+world"));
    let done: JobCompletion = serde_json::from_slice(&calls.last().unwrap().body).unwrap();
    assert_eq!(done.state, JobState::Succeeded);

    // The agent edited the pod's workspace, which stays with the pod; the job's own directory
    // (the host's git state, the report spool) is gone.
    let readme = std::fs::read_to_string(pod.workspace.join("README.md")).unwrap();
    assert_eq!(readme, "hello\nworld\n");
    assert_eq!(std::fs::read_dir(&pod.work).unwrap().count(), 0);
    assert_eq!(entrypoint.exit_code().await, Some(0));
    assert_eq!(
        std::fs::read_to_string(pod.output.join(ckrv_agents::pod::EXIT)).unwrap(),
        r#"{"code":0}"#
    );
    assert!(pod.has(&pod.control, ckrv_agents::pod::DONE));
    assert!(!pod.has(&pod.control, ckrv_agents::pod::STOP));
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_job_pod_the_verification_runs_in_the_agent_container_after_the_agent() {
    let origin = origin_repo();
    let spec = "---\nagent: script\nrun: echo world >> README.md\nverify: grep -c world README.md; exit 4\n---\n# Add a line\n";
    let pipeline = Pipeline::builtin();
    let job = worker_job(spec, origin.path().to_str().unwrap(), &pipeline, &[]);
    let pod = JobPod::new();
    let (fake, _) = pod.fake_api(job, pipeline).await;
    let calls = pod.run_against(&fake).await;
    let lines = log_lines(&calls);
    let has = |source: &str, message: &str| lines.iter().any(|(s, m)| s == source && m == message);
    assert!(
        has(
            "orchestrator",
            "The verification runs in the agent's container of the job's pod"
        ),
        "{lines:?}"
    );
    assert!(has("verify", "1"), "it saw the agent's change: {lines:?}");
    let found: Vec<_> = calls
        .iter()
        .filter(|c| c.path().ends_with("/phase"))
        .filter_map(|c| c.json::<PhaseUpdate>().verification)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].verdict, ckrv_wit::types::Verdict::Failed);
    assert_eq!(found[0].exit_code, Some(4));
    assert_eq!(found[0].last_lines, ["1"]);
    assert!(pod.has(&pod.output, "verify.exit.json"));
    // A failed check does not fail the job.
    let done: JobCompletion = serde_json::from_slice(&calls.last().unwrap().body).unwrap();
    assert_eq!(done.state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_job_pod_a_failed_clone_still_ends_the_waiting_agent_container() {
    let pod = JobPod::new();
    let spec = "---\nagent: script\nrun: echo ran > ran.txt\n---\n";
    let done = pod.run_to_the_end(spec, "/nonexistent/ckrv-repo").await;
    assert_eq!(done.state, JobState::Failed);
    assert!(
        done.error_message
            .as_deref()
            .unwrap()
            .starts_with("clone failed: "),
        "{done:?}"
    );
    assert!(pod.has(&pod.control, ckrv_agents::pod::DONE));
    assert!(pod.has(&pod.output, ckrv_agents::pod::READY));
    assert!(!pod.has(&pod.control, ckrv_agents::pod::LAUNCH));
    assert!(!pod.has(&pod.output, ckrv_agents::pod::EXIT));
    assert!(!pod.workspace.join("ran.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_that_is_missing_or_empty_fails_clearly() {
    let pod = JobPod::new();
    let missing = pod.work.join("no-such-token");
    let out = pod.orchestrator("http://127.0.0.1:9", &missing).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "reading the worker token from {}",
            missing.display()
        )),
        "{stderr}"
    );
    // Even so, the agent's container is told that nothing comes.
    assert!(pod.has(&pod.control, ckrv_agents::pod::DONE));

    std::fs::write(&pod.token_file, " \n").unwrap();
    let out = pod
        .orchestrator("http://127.0.0.1:9", &pod.token_file)
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the worker token file {} is empty",
            pod.token_file.display()
        )),
        "{stderr}"
    );
}

/// An environment whose setup makes `deps/tool`, kept in snapshots keyed by `deps.lock`.
const DEPS_ENVIRONMENT: &str = "setup = \"echo preparing; mkdir -p deps && echo ready > deps/tool\"\nkey_files = [\"deps.lock\"]\ncache = [\"deps/\"]\n";

/// [`origin_repo`] with `.ckrv/environment.toml` holding `environment`, and `files`.
fn origin_with_environment(environment: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let origin = origin_repo();
    std::fs::create_dir(origin.path().join(".ckrv")).unwrap();
    std::fs::write(origin.path().join(".ckrv/environment.toml"), environment).unwrap();
    for (name, text) in files {
        std::fs::write(origin.path().join(name), text).unwrap();
    }
    git(origin.path(), &["add", "-A"]);
    git(origin.path(), &["commit", "-q", "-m", "environment"]);
    origin
}

/// Runs `spec` on a repository whose `.ckrv/environment.toml` is `environment`, the API
/// giving setup `setup_timeout_s`.
async fn run_with_environment(
    environment: &str,
    spec: &str,
    setup_timeout_s: Option<u32>,
) -> (Result<(), String>, Vec<Call>) {
    run_with_environment_and(environment, spec, |job| {
        job["setup_timeout_s"] = setup_timeout_s.into();
    })
    .await
}

/// [`run_with_environment`], the worker job changed by `change` first.
async fn run_with_environment_and(
    environment: &str,
    spec: &str,
    change: impl FnOnce(&mut serde_json::Value),
) -> (Result<(), String>, Vec<Call>) {
    let origin = origin_with_environment(environment, &[]);
    let pipeline = Pipeline::builtin();
    let mut job = worker_job(spec, origin.path().to_str().unwrap(), &pipeline, &[]);
    change(&mut job);
    let fake = FakeEndpoint::start(answer(job, usize::MAX, Arc::new(pipeline))).await;
    let (outcome, calls, _work_dir) = run_against(&fake, None).await;
    (outcome, calls)
}

fn phases(calls: &[Call]) -> Vec<JobPhase> {
    bodies::<PhaseUpdate>(calls, "/phase")
        .into_iter()
        .map(|update| update.phase)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repositorys_setup_runs_before_the_agent_in_its_own_phase_and_stays_out_of_the_diff() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let environment = "setup = \"\"\"\necho preparing\nmkdir -p deps && echo ready > deps/tool\necho \"greeting=$GREETING\"\n\"\"\"\ncache = [\"deps/\"]\n[env]\nGREETING = \"hi\"\n";
    let spec = "---\nagent: script\nrun: |\n  cat deps/tool\n  echo \"agent sees $GREETING\"\n  echo world >> README.md\n---\n# Use the tool\n";
    let (outcome, calls) = run_with_environment(environment, spec, None).await;
    outcome.unwrap();
    let lines = log_lines(&calls);
    let at = |source: &str, message: &str| {
        lines
            .iter()
            .position(|(s, m)| s == source && m == message)
            .unwrap_or_else(|| panic!("no {source}: {message} in {lines:?}"))
    };
    assert!(at("setup", "preparing") < at("setup", "greeting=hi"));
    assert!(at("setup", "greeting=hi") < at("orchestrator", "Starting agent: script"));
    assert!(at("script", "ready") < at("script", "agent sees hi"));
    assert!(
        lines
            .iter()
            .any(|(s, m)| s == "setup" && m.starts_with("Setup finished in "))
    );
    assert_eq!(
        phases(&calls),
        [
            JobPhase::Cloning,
            JobPhase::Setup,
            JobPhase::Agent,
            JobPhase::Diffing,
            JobPhase::Uploading,
            JobPhase::Publishing
        ]
    );
    let diff = uploaded_diff(&calls);
    assert!(diff.contains("+world"), "{diff}");
    assert!(
        !diff.contains("deps/tool"),
        "setup's result is no part of the change: {diff}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_slow_or_overreaching_setup_fails_the_job_before_the_agent_saying_why() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let spec = "---\nagent: script\nrun: echo agent-ran\n---\n# Go\n";
    let cases = [
        (
            "setup = \"echo one\\necho two\\nexit 3\"\n",
            None,
            "setup exited with status 3; its last lines:\none\ntwo",
        ),
        (
            "setup = \"sleep 30\"\n",
            Some(1),
            "setup did not finish within its limit of 1 s (the operator's --setup-timeout)",
        ),
        (
            "setup = \"true\"\negress = \"registries\"\n",
            None,
            ".ckrv/environment.toml: egress `registries` is not within `none`, the most setup may reach here (the job's own policy",
        ),
        (
            "setup = \"true\"\n[env]\nPATH = \"/evil\"\n",
            None,
            ".ckrv/environment.toml: env `PATH` is set by the platform and cannot be replaced",
        ),
    ];
    for (environment, timeout, why) in cases {
        let (outcome, calls) = run_with_environment(environment, spec, timeout).await;
        let error = outcome.unwrap_err();
        assert!(error.starts_with(why), "{environment}: {error}");
        let lines = log_lines(&calls);
        assert!(
            !lines.iter().any(|(_, m)| m == "agent-ran"),
            "{environment}: the agent ran: {lines:?}"
        );
        assert!(
            !calls.iter().any(|c| c.path().ends_with("/artifacts/diff")),
            "{environment}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_setup_ceiling_replaces_the_jobs_policy_for_setup_alone() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    // The job's agent may reach nothing; the operator lets setup reach one mirror.
    let spec = "---\nagent: script\nrun: echo agent-ran\n---\n# Go\n";
    let ceiling = |job: &mut serde_json::Value| {
        job["setup_egress"] = "mirror.localhost:8081".into();
        job["egress_internal"] = serde_json::json!(["mirror.localhost:8081"]);
    };
    let within = "setup = \"echo set-up\"\negress = \"mirror.localhost:8081\"\n";
    let (outcome, calls) = run_with_environment_and(within, spec, ceiling).await;
    outcome.unwrap();
    let lines = log_lines(&calls);
    assert!(
        lines
            .iter()
            .any(|(s, m)| s == "setup" && m.contains("egress `mirror.localhost:8081`")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|(_, m)| m == "agent-ran"), "{lines:?}");
    let beyond = "setup = \"echo set-up\"\negress = \"registries\"\n";
    let (outcome, calls) = run_with_environment_and(beyond, spec, ceiling).await;
    let error = outcome.unwrap_err();
    assert!(
        error.starts_with(
            ".ckrv/environment.toml: egress `registries` is not within `mirror.localhost:8081`, the most setup may reach here (the operator's --setup-egress-allow)"
        ),
        "{error}"
    );
    assert!(!log_lines(&calls).iter().any(|(_, m)| m == "agent-ran"));
}

/// Snapshots a fake API keeps, by key: the bytes and the digest the worker named.
type Snapshots = Arc<std::sync::Mutex<std::collections::HashMap<String, (Vec<u8>, String)>>>;

/// The fake API's snapshot routes: a `PUT` keeps the body in `kept`, a `GET` (or `HEAD`)
/// serves it back, with a byte flipped when `damage`; `None` for another call.
fn keep_snapshot(kept: &Snapshots, call: &Call, damage: bool) -> Option<Response> {
    let key = call
        .path()
        .strip_prefix("/v1/worker/jobs/job-1/snapshots/")?
        .to_string();
    if call.method == Method::PUT {
        let digest = call.header("ckrv-snapshot-sha256").to_string();
        kept.lock()
            .unwrap()
            .insert(key, (call.body.to_vec(), digest));
        return Some(StatusCode::NO_CONTENT.into_response());
    }
    Some(match kept.lock().unwrap().get(&key).cloned() {
        Some((mut bytes, digest)) => {
            if damage {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
            }
            ([("ckrv-snapshot-sha256", digest)], bytes).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

/// Runs `spec` on `origin` against a fake API that keeps the snapshots workers save in
/// `snapshots` and serves them back (with a byte flipped when `damage`).
async fn run_keeping_snapshots(
    origin: &std::path::Path,
    spec: &str,
    snapshots: &Snapshots,
    damage: bool,
) -> Vec<(String, String)> {
    run_keeping_snapshots_on(origin, spec, snapshots, damage, None).await
}

/// [`run_keeping_snapshots`] on a worker that keeps unpacked copies in `warm`.
async fn run_keeping_snapshots_on(
    origin: &std::path::Path,
    spec: &str,
    snapshots: &Snapshots,
    damage: bool,
    warm: Option<Arc<ckrv_orchestrator::warm::WarmSnapshots>>,
) -> Vec<(String, String)> {
    let pipeline = Pipeline::builtin();
    let job = worker_job(spec, origin.to_str().unwrap(), &pipeline, &[]);
    let inner = answer(job, usize::MAX, Arc::new(pipeline));
    let kept = snapshots.clone();
    let fake = FakeEndpoint::start(move |call: Call| {
        let (inner, kept) = (inner.clone(), kept.clone());
        async move {
            match keep_snapshot(&kept, &call, damage) {
                Some(answer) => answer,
                None => inner(call).await,
            }
        }
    })
    .await;
    let (outcome, calls, _work_dir) = run_against_keeping(&fake, None, warm).await;
    outcome.unwrap();
    let lines = log_lines(&calls);
    let diff = uploaded_diff(&calls);
    assert!(diff.contains("+world") && !diff.contains("deps/"), "{diff}");
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_job_starts_from_the_snapshot_and_a_damaged_one_runs_setup_again() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let origin = origin_with_environment(DEPS_ENVIRONMENT, &[("deps.lock", "v1\n")]);
    let spec = "---\nagent: script\nrun: |\n  cat deps/tool\n  echo world >> README.md\n---\n# Use the tool\n";
    let snapshots = Snapshots::default();
    let said = |lines: &[(String, String)], source: &str, start: &str| {
        lines
            .iter()
            .any(|(s, m)| s == source && m.starts_with(start))
    };

    // The first job runs setup and saves what it made.
    let lines = run_keeping_snapshots(origin.path(), spec, &snapshots, false).await;
    assert!(said(&lines, "setup", "No snapshot "), "{lines:?}");
    assert!(said(&lines, "setup", "preparing"), "{lines:?}");
    assert!(
        said(&lines, "setup", "Snapshot ") && lines.iter().any(|(_, m)| m.contains(" saved (")),
        "{lines:?}"
    );
    let key = {
        let kept = snapshots.lock().unwrap();
        assert_eq!(kept.len(), 1);
        let (key, (bytes, digest)) = kept.iter().next().unwrap();
        assert_eq!(digest, &hex::encode(Sha256::digest(bytes)));
        key.clone()
    };
    assert_eq!(key.len(), 64);

    // The next starts from it: setup does not run, and the agent finds what setup made.
    let lines = run_keeping_snapshots(origin.path(), spec, &snapshots, false).await;
    assert!(
        lines.iter().any(|(s, m)| s == "setup"
            && m.starts_with(&format!("Snapshot {} restored (", &key[..8]))
            && m.ends_with("; setup not run")),
        "{lines:?}"
    );
    assert!(!said(&lines, "setup", "preparing"), "{lines:?}");
    assert!(said(&lines, "script", "ready"), "{lines:?}");

    // A damaged one is not used: setup runs and saves it anew.
    let lines = run_keeping_snapshots(origin.path(), spec, &snapshots, true).await;
    assert!(
        lines
            .iter()
            .any(|(s, m)| s == "setup" && m.contains("not used (the snapshot is damaged")),
        "{lines:?}"
    );
    assert!(said(&lines, "setup", "preparing"), "{lines:?}");
    assert!(said(&lines, "script", "ready"), "{lines:?}");
    assert!(
        lines.iter().any(|(_, m)| m.contains(" saved (")),
        "{lines:?}"
    );
    {
        // Saved anew, intact.
        let kept = snapshots.lock().unwrap();
        let (bytes, resaved) = &kept[&key];
        assert_eq!(resaved, &hex::encode(Sha256::digest(bytes)));
    }

    // A changed lockfile is another key: setup runs.
    std::fs::write(origin.path().join("deps.lock"), "v2\n").unwrap();
    git(origin.path(), &["commit", "-q", "-am", "bump"]);
    let lines = run_keeping_snapshots(origin.path(), spec, &snapshots, false).await;
    assert!(said(&lines, "setup", "No snapshot "), "{lines:?}");
    assert_eq!(snapshots.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_keeps_copies_moves_one_into_place_on_a_hit_and_makes_the_next() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let environment = "setup = \"echo preparing; mkdir -p deps ~/.cache/t && echo ready > deps/tool && echo home > ~/.cache/t/x\"\nkey_files = [\"deps.lock\"]\ncache = [\"deps/\", \"~/.cache/t\"]\n";
    let origin = origin_with_environment(environment, &[("deps.lock", "v1\n")]);
    let spec = "---\nagent: script\nrun: |\n  cat deps/tool ~/.cache/t/x\n  echo world >> README.md\n---\n# Use the tool\n";
    let snapshots = Snapshots::default();
    let root = tempfile::tempdir().unwrap();
    let warm_dir = root.path().join("warm");
    let warm = Arc::new(ckrv_orchestrator::warm::WarmSnapshots::open(&warm_dir, 2).unwrap());
    let copies = || -> Vec<String> {
        std::fs::read_dir(&warm_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect()
    };
    let said = |lines: &[(String, String)], source: &str, text: &str| {
        lines.iter().any(|(s, m)| s == source && m.contains(text))
    };
    let run = || {
        run_keeping_snapshots_on(
            origin.path(),
            spec,
            &snapshots,
            false,
            Some(Arc::clone(&warm)),
        )
    };

    // The first job runs setup; the worker keeps a copy of what it saved, named by its digest.
    let lines = run().await;
    assert!(said(&lines, "setup", "preparing"), "{lines:?}");
    let digest = snapshots.lock().unwrap().values().next().unwrap().1.clone();
    assert_eq!(copies(), std::slice::from_ref(&digest));
    // The next two move the copy into place, and the worker makes another for the job after.
    for _ in 0..2 {
        let lines = run().await;
        assert!(
            said(&lines, "setup", "restored from this worker's unpacked copy"),
            "{lines:?}"
        );
        assert!(!said(&lines, "setup", "preparing"), "{lines:?}");
        assert!(said(&lines, "script", "ready"), "{lines:?}");
        assert!(said(&lines, "script", "home"), "{lines:?}");
        assert_eq!(copies(), std::slice::from_ref(&digest));
    }
    // The account's snapshot is replaced (another setup saved under the key): the copy of the
    // old bytes is not used; the new archive is restored and copied.
    let made = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(made.path().join("deps")).unwrap();
    std::fs::write(made.path().join("deps/tool"), "newer\n").unwrap();
    let archive = made.path().join("s.tar.zst");
    let parsed =
        ckrv_agents::environment::Environment::parse_bytes(environment.as_bytes()).unwrap();
    let packed =
        ckrv_orchestrator::snapshot::pack(made.path(), None, &parsed.cache, &archive).unwrap();
    for entry in snapshots.lock().unwrap().values_mut() {
        *entry = (std::fs::read(&archive).unwrap(), packed.sha256.clone());
    }
    let lines = run().await;
    assert!(said(&lines, "setup", "entries) in "), "{lines:?}");
    assert!(said(&lines, "script", "newer"), "{lines:?}");
    let mut kept = copies();
    kept.sort();
    let mut expected = vec![digest, packed.sha256];
    expected.sort();
    assert_eq!(kept, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_job_pod_the_orchestrator_restores_the_snapshot_before_the_agent_starts() {
    use ckrv_orchestrator::snapshot;
    let environment = DEPS_ENVIRONMENT;
    let origin = origin_with_environment(environment, &[("deps.lock", "v1\n")]);
    let repo_url = origin.path().to_str().unwrap();
    // The snapshot an earlier job of the account saved, under the key this job computes.
    let made = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(made.path().join("deps")).unwrap();
    std::fs::write(made.path().join("deps/tool"), "ready from the snapshot\n").unwrap();
    std::fs::write(made.path().join("deps.lock"), "v1\n").unwrap();
    let parsed =
        ckrv_agents::environment::Environment::parse_bytes(environment.as_bytes()).unwrap();
    let agent = ckrv_agents::find_agent("script").unwrap();
    let key = snapshot::key(&snapshot::KeyInputs {
        repo_url,
        environment: &parsed,
        workspace: made.path(),
        agent,
        image: Some(&agent.image),
    })
    .unwrap();
    let archive = made.path().join("s.tar.zst");
    let packed = snapshot::pack(made.path(), None, &parsed.cache, &archive).unwrap();
    let bytes = std::fs::read(&archive).unwrap();

    let spec = "---\nagent: script\nrun: |\n  cat deps/tool\n  echo world >> README.md\n---\n# Use the tool\n";
    let pipeline = Pipeline::builtin();
    let job = worker_job(spec, repo_url, &pipeline, &[]);
    let inner = answer(job, usize::MAX, Arc::new(pipeline));
    let served = format!("/v1/worker/jobs/job-1/snapshots/{key}");
    let fake = FakeEndpoint::start(move |call: Call| {
        let (inner, served, bytes, digest) = (
            inner.clone(),
            served.clone(),
            bytes.clone(),
            packed.sha256.clone(),
        );
        async move {
            if call.path() == served && call.method == Method::GET {
                return ([("ckrv-snapshot-sha256", digest)], bytes).into_response();
            }
            inner(call).await
        }
    })
    .await;
    let pod = JobPod::new();
    let mut entrypoint = pod.entrypoint();
    let out = pod.orchestrator(&fake.url, &pod.token_file).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = log_lines(&fake.requests());
    assert!(
        lines
            .iter()
            .any(|(s, m)| s == "setup" && m.ends_with("; setup not run")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(s, m)| s == "script" && m == "ready from the snapshot"),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|(_, m)| m == "preparing"), "{lines:?}");
    assert_eq!(entrypoint.exit_code().await, Some(0));
}

/// Runs `spec` on `origin` in a [`JobPod`], against a fake API that keeps the snapshots in
/// `snapshots` and answers the `setup` phase only after a while, as the API does once the
/// pod's network and its egress proxy have setup's policy. Returns the log, the phase
/// updates, and whether setup was launched before that answer.
async fn run_in_pod_keeping_snapshots(
    origin: &std::path::Path,
    spec: &str,
    snapshots: &Snapshots,
) -> (Vec<(String, String)>, Vec<PhaseUpdate>, bool) {
    let pipeline = Pipeline::builtin();
    let job = worker_job(spec, origin.to_str().unwrap(), &pipeline, &[]);
    let inner = answer(job, usize::MAX, Arc::new(pipeline));
    let pod = JobPod::new();
    let early = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (kept, launch, flag) = (
        snapshots.clone(),
        pod.control.join("setup.launch.json"),
        early.clone(),
    );
    let fake = FakeEndpoint::start(move |call: Call| {
        let (inner, kept, launch, flag) =
            (inner.clone(), kept.clone(), launch.clone(), flag.clone());
        async move {
            if call.path().ends_with("/phase")
                && call.json::<PhaseUpdate>().phase == JobPhase::Setup
            {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                if launch.exists() {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            match keep_snapshot(&kept, &call, false) {
                Some(answer) => answer,
                None => inner(call).await,
            }
        }
    })
    .await;
    let calls = pod.run_against(&fake).await;
    let done: JobCompletion = serde_json::from_slice(&calls.last().unwrap().body).unwrap();
    assert_eq!(done.state, JobState::Succeeded, "{:?}", log_lines(&calls));
    let diff = uploaded_diff(&calls);
    assert!(diff.contains("+world") && !diff.contains("deps/"), "{diff}");
    let phases = bodies::<PhaseUpdate>(&calls, "/phase");
    (log_lines(&calls), phases, early.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_job_pod_setup_runs_in_the_agent_container_and_its_home_cache_is_kept() {
    let environment = "setup = \"echo preparing; mkdir -p deps ~/.cache/tool && echo ready > deps/tool && echo home-ready > ~/.cache/tool/x\"\nkey_files = [\"deps.lock\"]\ncache = [\"deps/\", \"~/.cache/tool\"]\n";
    let origin = origin_with_environment(environment, &[("deps.lock", "v1\n")]);
    let spec = "---\nagent: script\nrun: |\n  cat deps/tool ~/.cache/tool/x\n  echo world >> README.md\n---\n# Use the tool\n";
    let snapshots = Snapshots::default();
    let said = |lines: &[(String, String)], source: &str, message: &str| {
        lines.iter().any(|(s, m)| s == source && m == message)
    };

    // The first job's setup runs in the agent's container, once the API has its phase and
    // policy, and the agent finds what it made, in the workspace and in its home.
    let (lines, phases, early) =
        run_in_pod_keeping_snapshots(origin.path(), spec, &snapshots).await;
    assert!(!early, "setup was launched before the API had its phase");
    let setup_phase = phases
        .iter()
        .find(|p| p.phase == JobPhase::Setup)
        .expect("phase setup reported");
    assert!(setup_phase.setup_egress.is_some(), "{setup_phase:?}");
    assert!(
        phases
            .iter()
            .filter(|p| p.phase != JobPhase::Setup)
            .all(|p| p.setup_egress.is_none()),
        "{phases:?}"
    );
    assert!(
        said(
            &lines,
            "orchestrator",
            "Setup runs in the agent's container of the job's pod"
        ),
        "{lines:?}"
    );
    assert!(said(&lines, "setup", "preparing"), "{lines:?}");
    assert!(said(&lines, "script", "ready"), "{lines:?}");
    assert!(said(&lines, "script", "home-ready"), "{lines:?}");
    // The snapshot holds the home's cache path as well as the workspace's.
    let (bytes, digest) = {
        let kept = snapshots.lock().unwrap();
        assert_eq!(kept.len(), 1, "one snapshot saved");
        kept.values().next().unwrap().clone()
    };
    let unpacked = tempfile::tempdir().unwrap();
    let archive = unpacked.path().join("s.tar.zst");
    std::fs::write(&archive, bytes).unwrap();
    let (workspace, home) = (unpacked.path().join("w"), unpacked.path().join("h"));
    for dir in [&workspace, &home] {
        std::fs::create_dir(dir).unwrap();
    }
    ckrv_orchestrator::snapshot::restore(&archive, &digest, &workspace, Some(&home), 1 << 30)
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(home.join(".cache/tool/x")).unwrap(),
        "home-ready\n"
    );
    assert!(workspace.join("deps/tool").exists());

    // The next job's pod starts from the snapshot: restored into the workspace and the agent's
    // home, setup not run.
    let (lines, _, _) = run_in_pod_keeping_snapshots(origin.path(), spec, &snapshots).await;
    assert!(
        lines
            .iter()
            .any(|(s, m)| s == "setup" && m.ends_with("; setup not run")),
        "{lines:?}"
    );
    assert!(!said(&lines, "setup", "preparing"), "{lines:?}");
    assert!(said(&lines, "script", "ready"), "{lines:?}");
    assert!(said(&lines, "script", "home-ready"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_job_pod_a_failed_setup_fails_the_job_with_its_last_lines_and_the_agent_never_runs() {
    let environment = "setup = \"echo no index here; exit 7\"\n";
    let origin = origin_with_environment(environment, &[]);
    let spec = "---\nagent: script\nrun: echo ran > ran.txt\n---\n";
    let pod = JobPod::new();
    let done = pod
        .run_to_the_end(spec, origin.path().to_str().unwrap())
        .await;
    assert_eq!(done.state, JobState::Failed);
    let error = done.error_message.unwrap();
    assert!(
        error.contains("setup exited with status 7") && error.contains("no index here"),
        "{error}"
    );
    assert!(!pod.workspace.join("ran.txt").exists(), "the agent ran");
    assert!(!pod.has(&pod.output, ckrv_agents::pod::EXIT));
}
