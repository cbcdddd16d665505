//! `run_job` against a fake API speaking docs/protocol.md: the whole flow, clone to complete.
#![allow(clippy::unwrap_used)]

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ckrv_orchestrator::api_client::ApiClient;
use ckrv_orchestrator::job::{JobOptions, run_job};
use ckrv_orchestrator::steps::StepRunner;
use ckrv_pipeline::Pipeline;
use ckrv_test_support::{FakeEndpoint, Recorded as Call, git};
use ckrv_wit::types::{JobCompletion, JobPhase, JobState, LogBatch, PhaseUpdate};
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
/// `pipeline` and the agent `secrets`.
async fn run_with(
    spec: &str,
    heartbeats: usize,
    pipeline: Pipeline,
    secrets: &[(&str, &str)],
    agent_bin: Option<&std::path::Path>,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    let origin = tempfile::tempdir().unwrap();
    git(origin.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(origin.path().join("README.md"), "hello\n").unwrap();
    git(origin.path(), &["add", "-A"]);
    git(origin.path(), &["commit", "-q", "-m", "initial"]);

    let job = serde_json::json!({
        "job": {
            "id": "job-1", "status": "running", "state": "running", "phase": "queued",
            "spec_path": "specs/x.md", "git_repo_url": origin.path().to_str().unwrap(),
            "git_base_branch": "main", "feature_branch_name": "ckrv/job-1",
            "created_at": "2026-11-22T12:00:00Z", "updated_at": "2026-11-22T12:00:00Z",
            "started_at": "2026-11-22T12:00:00Z"
        },
        "spec_content": spec,
        "heartbeat_ms": 100,
        "log_sequence": 7,
        "pipeline": pipeline.stages,
        "agent_secrets": secrets
            .iter()
            .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
            .collect::<Vec<_>>(),
    });
    let fake = FakeEndpoint::start(answer(job, heartbeats, Arc::new(pipeline))).await;
    run_against(&fake, agent_bin).await
}

/// Runs job `job-1` against `fake` as its worker, sandboxed, local repositories allowed.
async fn run_against(
    fake: &FakeEndpoint,
    agent_bin: Option<&std::path::Path>,
) -> (Result<(), String>, Vec<Call>, tempfile::TempDir) {
    let work_dir = tempfile::tempdir().unwrap();
    let api = ApiClient::new(&fake.url, "job-1", "worker-token").unwrap();
    let outcome = run_job(
        api,
        JobOptions {
            steps: Arc::new(StepRunner::new().unwrap()),
            work_dir: Some(work_dir.path().to_path_buf()),
            token: "worker-token".into(),
            allow_local_repos: true,
            sandbox: true,
            agent_bin: agent_bin.map(std::path::Path::to_path_buf),
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
            JobPhase::Uploading
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

    let diff = calls
        .iter()
        .find(|c| c.method == Method::PUT && c.path() == "/v1/worker/jobs/job-1/artifacts/diff")
        .unwrap();
    let diff = String::from_utf8(diff.body.to_vec()).unwrap();
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
    let bin = tempfile::tempdir().unwrap();
    let bin = bin.path().join("bin");
    ckrv_test_support::install_agent_stand_ins(&bin, &["claude", "codex", "gemini", "aider"]);
    let secrets = [
        ("ANTHROPIC_API_KEY", "sk-ant-0123456789abcdef"),
        ("CODEX_API_KEY", "sk-codex-0123456789abcdef"),
        ("GEMINI_API_KEY", "AIza-gemini-0123456789abcdef"),
        ("OPENAI_API_KEY", "sk-openai-0123456789abcdef"),
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
        let (outcome, calls, _work) =
            run_with(&spec, usize::MAX, Pipeline::builtin(), &secrets, Some(&bin)).await;
        let lines = log_lines(&calls);
        assert_eq!(outcome, Ok(()), "{agent}: {lines:?}");
        assert_eq!(said(&lines, agent, "argv: "), argv, "{agent}");
        assert_eq!(said(&lines, agent, prompt), ["Add a greeting."], "{agent}");
        // Exactly the declared keys arrived, each redacted in the log.
        let mut got: Vec<&str> = said(&lines, agent, "env: ")
            .into_iter()
            .filter(|e| e.contains("_KEY="))
            .collect();
        got.sort_unstable();
        let expected: Vec<String> = keys.iter().map(|k| format!("{k}=[redacted]")).collect();
        assert_eq!(got, expected, "{agent}");
        assert!(
            lines.iter().all(|(_, m)| !m.contains("0123456789abcdef")),
            "{agent}: a secret reached the log"
        );
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

/// Built from `orchestrator/steps/hostile` by build.rs for the tests only.
const HOSTILE_STEP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_hostile.wasm"));

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_component_comes_by_digest_and_a_runaway_one_fails_the_job_naming_its_limit() {
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
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostile.wasm"), HOSTILE_STEP).unwrap();
    let text = "[[stage]]\nagent = true\nphase = \"agent\"\n\
                [[stage]]\ncomponent = \"hostile.wasm\"\nphase = \"diffing\"\n";
    let mut pipeline = Pipeline::parse(text, "p.toml", dir.path()).unwrap();
    // The API (here, the fake) serves other bytes under the digest the stage names.
    let digest = pipeline.stages[1].source.clone().unwrap();
    let other = ckrv_orchestrator::steps::builtin_component("diff").unwrap();
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
        "agent_secrets": [],
        "git_credential": credential,
    });
    let fake = FakeEndpoint::start(answer(job, usize::MAX, Arc::new(pipeline))).await;
    run_against(&fake, None).await
}

// A plain test: the repository server has a runtime of its own, which cannot be dropped
// inside another.
#[test]
fn a_private_repository_is_cloned_with_the_jobs_token_which_nothing_else_sees() {
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
