//! The `github-actions` provider, built outside the workspace and installed as a user would,
//! against a stand-in of the GitHub REST endpoints it uses (as GitHub documents them) on
//! loopback. The stand-in plays GitHub's runner by running what `workflow/ckrv.yml` runs:
//! `ckrv-orchestrator local` on the repository, its output as the job's log, the change
//! zipped as the `ckrv-diff` artifact. No GitHub is contacted.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ckrv_e2e::{Cli, binary, build_outside_workspace, create_served_repo, git, repository_root};
use serde_json::{Value, json};

const TOKEN: &str = "github_pat_standin0123456789abcdef";

#[derive(Default)]
struct Run {
    id: u64,
    key: String,
    spec_path: String,
    branch: String,
    status: &'static str,
    conclusion: Option<&'static str>,
    step: &'static str,
    log: String,
    zip: Option<Vec<u8>>,
    child: Option<u32>,
}

struct GitHub {
    url: String,
    repo_url: String,
    work: PathBuf,
    runs: Mutex<BTreeMap<u64, Run>>,
    /// The Authorization header of every request to a download (blob) URL.
    blob_auth: Mutex<Vec<String>>,
}

type Shared = Arc<GitHub>;

fn message(status: StatusCode, text: &str) -> Response {
    (
        status,
        Json(json!({"message": text, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

/// GitHub's rules for every API request: a token, a user agent, the API version. `Some` is
/// the refusal.
fn check(headers: &HeaderMap) -> Option<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("user-agent").is_none() || header("x-github-api-version") != Some("2022-11-28") {
        return Some(message(
            StatusCode::BAD_REQUEST,
            "missing user agent or API version",
        ));
    }
    if header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return Some(message(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    None
}

fn run_json(gh: &GitHub, run: &Run) -> Value {
    json!({
        "id": run.id, "name": "ckrv", "event": "workflow_dispatch",
        "status": run.status, "conclusion": run.conclusion,
        "display_title": format!("ckrv {} [{}]", run.spec_path, run.key),
        "head_branch": run.branch, "path": ".github/workflows/ckrv.yml",
        "html_url": format!("{}/octo/app/actions/runs/{}", gh.url, run.id),
        "created_at": "2026-11-24T10:00:00Z", "updated_at": "2026-11-24T10:01:00Z",
        "run_started_at": "2026-11-24T10:00:01Z",
    })
}

async fn user(headers: HeaderMap) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    Json(json!({"login": "octocat", "id": 1, "name": "The Octocat", "email": null})).into_response()
}

async fn dispatch(
    State(gh): State<Shared>,
    UrlPath((owner, repo, workflow)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    if (owner.as_str(), repo.as_str(), workflow.as_str()) != ("octo", "app", "ckrv.yml") {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let inputs = &body["inputs"];
    let (Some(spec), Some(key)) = (inputs["spec"].as_str(), inputs["key"].as_str()) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Required input 'spec' not provided",
        );
    };
    let id = {
        let mut runs = gh.runs.lock().unwrap();
        let id = 9_000_000 + runs.len() as u64 + 1;
        runs.insert(
            id,
            Run {
                id,
                key: key.to_string(),
                spec_path: inputs["spec_path"]
                    .as_str()
                    .unwrap_or("spec.md")
                    .to_string(),
                branch: body["ref"].as_str().unwrap_or_default().to_string(),
                status: "queued",
                ..Run::default()
            },
        );
        id
    };
    let spec = spec.to_string();
    let runner = gh.clone();
    tokio::task::spawn_blocking(move || execute(&runner, id, &spec));
    if body["return_run_details"] == true {
        Json(json!({
            "workflow_run_id": id,
            "run_url": format!("{}/repos/octo/app/actions/runs/{id}", gh.url),
            "html_url": format!("{}/octo/app/actions/runs/{id}", gh.url),
        }))
        .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// What the workflow's steps do, for real: `ckrv-orchestrator local` on the repository, its
/// log as the job's log, and the patch zipped as the run's artifact.
fn execute(gh: &GitHub, id: u64, spec: &str) {
    let dir = gh.work.join(id.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spec.md"), spec).unwrap();
    let child = std::process::Command::new(binary("ckrv-orchestrator"))
        .args(["local", "--spec"])
        .arg(dir.join("spec.md"))
        .args(["--repo", &gh.repo_url, "--base-branch", "main", "--out"])
        .arg(dir.join("diff.patch"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut runs = gh.runs.lock().unwrap();
        let run = runs.get_mut(&id).unwrap();
        run.status = "in_progress";
        run.step = "Agent";
        run.child = Some(child.id());
    }
    let out = child.wait_with_output().unwrap();
    let mut runs = gh.runs.lock().unwrap();
    let run = runs.get_mut(&id).unwrap();
    run.log = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| format!("2026-11-24T10:00:30.1234567Z {l}\n"))
        .collect();
    run.status = "completed";
    run.step = "";
    if run.conclusion == Some("cancelled") {
        return;
    }
    if out.status.success() {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("diff.patch", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(&std::fs::read(dir.join("diff.patch")).unwrap())
            .unwrap();
        run.zip = Some(zip.finish().unwrap().into_inner());
        run.conclusion = Some("success");
    } else {
        run.conclusion = Some("failure");
    }
}

async fn get_run(
    State(gh): State<Shared>,
    UrlPath((_, _, id)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    match gh.runs.lock().unwrap().get(&id) {
        Some(run) => Json(run_json(&gh, run)).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn list_runs(
    State(gh): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    let per_page: usize = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let page: usize = query.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let runs = gh.runs.lock().unwrap();
    let matching: Vec<&Run> = runs
        .values()
        .rev()
        .filter(|r| {
            query.get("status").is_none_or(|s| {
                Some(s.as_str()) == r.conclusion || (r.conclusion.is_none() && s == r.status)
            })
        })
        .collect();
    let page_runs: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| run_json(&gh, r))
        .collect();
    Json(json!({"total_count": matching.len(), "workflow_runs": page_runs})).into_response()
}

async fn cancel(
    State(gh): State<Shared>,
    UrlPath((_, _, id)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    let mut runs = gh.runs.lock().unwrap();
    let Some(run) = runs.get_mut(&id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if run.status == "completed" {
        return message(
            StatusCode::CONFLICT,
            "Cannot cancel a workflow run that is completed.",
        );
    }
    run.conclusion = Some("cancelled");
    if let Some(pid) = run.child {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}

async fn run_jobs(
    State(gh): State<Shared>,
    UrlPath((_, _, id)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    let runs = gh.runs.lock().unwrap();
    let Some(run) = runs.get(&id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let step = |name: &str| {
        let status = if run.step == name {
            "in_progress"
        } else {
            "completed"
        };
        json!({"name": name, "status": status, "conclusion": null, "number": 1})
    };
    Json(json!({"total_count": 1, "jobs": [{
        "id": id * 10, "run_id": id, "name": "ckrv", "status": run.status,
        "conclusion": run.conclusion,
        "steps": [step("Clone"), step("Agent"), step("Upload the change")],
    }]}))
    .into_response()
}

async fn job_logs(
    State(gh): State<Shared>,
    UrlPath((_, _, job)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    if gh.runs.lock().unwrap().get(&(job / 10)).is_none() {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    redirect(&format!("{}/blob/logs/{job}?sig=signed", gh.url))
}

async fn artifacts(
    State(gh): State<Shared>,
    UrlPath((_, _, id)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    let runs = gh.runs.lock().unwrap();
    let list: Vec<Value> = runs
        .get(&id)
        .and_then(|r| r.zip.as_ref())
        .map(|zip| {
            vec![json!({"id": id + 1, "name": "ckrv-diff", "size_in_bytes": zip.len(),
                "expired": false,
                "archive_download_url": format!("{}/repos/octo/app/actions/artifacts/{}/zip", gh.url, id + 1)})]
        })
        .unwrap_or_default();
    Json(json!({"total_count": list.len(), "artifacts": list})).into_response()
}

async fn artifact_zip(
    State(gh): State<Shared>,
    UrlPath((_, _, artifact)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = check(&headers) {
        return e;
    }
    redirect(&format!("{}/blob/artifacts/{artifact}?sig=signed", gh.url))
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [("location", location.to_string())]).into_response()
}

async fn blob(
    State(gh): State<Shared>,
    UrlPath((kind, id)): UrlPath<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if let Some(auth) = headers.get("authorization") {
        gh.blob_auth
            .lock()
            .unwrap()
            .push(auth.to_str().unwrap_or_default().to_string());
    }
    let runs = gh.runs.lock().unwrap();
    match kind.as_str() {
        "logs" => match runs.get(&(id / 10)) {
            Some(run) => run.log.clone().into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => match runs.get(&(id - 1)).and_then(|r| r.zip.clone()) {
            Some(zip) => zip.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
    }
}

fn stand_in(runtime: &tokio::runtime::Runtime, repo_url: &str, work: &Path) -> Shared {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let gh = Arc::new(GitHub {
        url,
        repo_url: repo_url.to_string(),
        work: work.to_path_buf(),
        runs: Mutex::new(BTreeMap::new()),
        blob_auth: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/user", get(user))
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
            post(dispatch),
        )
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
            get(list_runs),
        )
        .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{id}/cancel",
            post(cancel),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{id}/jobs",
            get(run_jobs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/runs/{id}/artifacts",
            get(artifacts),
        )
        .route(
            "/repos/{owner}/{repo}/actions/jobs/{job}/logs",
            get(job_logs),
        )
        .route(
            "/repos/{owner}/{repo}/actions/artifacts/{artifact}/zip",
            get(artifact_zip),
        )
        .route("/blob/{kind}/{id}", get(blob))
        .with_state(gh.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    gh
}

#[test]
fn jobs_run_as_workflow_runs_through_the_github_actions_provider() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let built = root.join("built");
    std::fs::create_dir_all(&built).unwrap();
    let wasm = build_outside_workspace(
        &repository_root().join("plugins/github-actions"),
        &built,
        None,
    );

    // The user's repository, octo/app, served over HTTP on loopback, and their clone of it.
    let served = root.join("served");
    std::fs::create_dir_all(served.join("octo")).unwrap();
    create_served_repo(&served.join("octo"), "app", &[("README.md", "# App\n")]);
    let repos = ckrv_e2e::StaticServer::start(&served);
    let repo_url = format!("http://{}/octo/app.git", repos.addr);
    let work = root.join("work");
    git(root, &["clone", "-q", &repo_url, work.to_str().unwrap()]);
    std::fs::create_dir_all(root.join("runner")).unwrap();
    let gh = stand_in(&runtime, &repo_url, &root.join("runner"));

    let cli = Cli::new(gh.url.clone(), root.join("home"));
    let wasm = wasm.to_str().unwrap();
    // The origins it asks for need the user's yes.
    let err = cli.fails(&work, &["plugin", "install", wasm]);
    assert!(
        err.contains("https://*.blob.core.windows.net") && err.contains("--yes"),
        "{err}"
    );
    cli.ok(&work, &["plugin", "install", wasm, "--yes"]);
    let listed = cli.ok(&work, &["plugin", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("github-actions")
                && l.contains("*.actions.githubusercontent.com")),
        "{listed}"
    );
    let gha = |args: &[&str]| {
        cli.command(&work, args)
            .env("CKRV_PROVIDER", "github-actions")
            .output()
            .unwrap()
    };
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // Device login is not GitHub's way; a token is.
    let out = gha(&["cloud", "login"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--with-token"), "{}", text(&out));
    cli.login_to(&work, "github-actions", TOKEN);
    let out = gha(&["cloud", "whoami"]);
    assert!(text(&out).contains("octocat"), "{}", text(&out));

    // Dispatch, wait, read the log, pull.
    std::fs::create_dir_all(work.join("specs")).unwrap();
    std::fs::write(
        work.join("specs/hello.md"),
        ckrv_e2e::script_spec(
            "Hello",
            "echo 'hello from actions' > HELLO.md\necho agent wrote it",
        ),
    )
    .unwrap();
    let out = gha(&["run", "--cloud", "--spec", "specs/hello.md", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok(), "a run id: {id}");
    assert_eq!(
        gh.runs.lock().unwrap()[&id.parse::<u64>().unwrap()].branch,
        "main"
    );
    let out = gha(&["wait", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = gha(&["logs", &id]);
    assert!(
        text(&out).contains("script: agent wrote it"),
        "{}",
        text(&out)
    );
    let out = gha(&["pull", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(work.join("HELLO.md")).unwrap(),
        "hello from actions\n"
    );
    assert!(
        gh.blob_auth.lock().unwrap().is_empty(),
        "the token never goes to a download host"
    );

    // A long run: cancelled, and `wait` says so.
    std::fs::write(
        work.join("specs/slow.md"),
        ckrv_e2e::script_spec("Slow", "sleep 60"),
    )
    .unwrap();
    let out = gha(&["run", "--cloud", "--spec", "specs/slow.md", "--json"]);
    let slow: Value = serde_json::from_slice(&out.stdout).unwrap();
    let slow = slow["id"].as_str().unwrap().to_string();
    let out = gha(&["cancel", &slow]);
    assert!(out.status.success(), "{}", text(&out));
    let out = gha(&["wait", &slow]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let out = gha(&["list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [slow.as_str(), id.as_str()]);

    // The conformance kit passes for this provider too.
    let out = gha(&["plugin", "check", "github-actions", "--json"]);
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["passed"], true, "{report:#}");

    // A revoked token is told apart from a missing run.
    let out = cli
        .command(&work, &["status", &id])
        .env("CKRV_PROVIDER", "github-actions")
        .env("CKRV_TOKEN", "github_pat_revoked")
        .output()
        .unwrap();
    assert!(text(&out).contains("Bad credentials"), "{}", text(&out));
    let out = gha(&["status", "123"]);
    assert!(text(&out).contains("ckrv list"), "{}", text(&out));
}
