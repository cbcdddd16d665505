//! The real built-in step components, run through the host against real git repositories.
#![allow(clippy::unwrap_used)]

use ckrv_orchestrator::host_git::HostGit;
use ckrv_orchestrator::logs::JobLog;
use ckrv_orchestrator::pipeline::BuiltinStep;
use ckrv_orchestrator::steps::{
    ApiAccess, Limits, StepContext, StepEnv, StepError, StepOutput, StepRunner,
};
use ckrv_wit::types::{DiffStats, LogLine};
use std::io::{Read, Write};
use std::path::Path;

use ckrv_test_support::git;

/// A repository with one commit on `main`.
fn origin() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README.md"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(dir.path().join("old.txt"), "gone\n").unwrap();
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "initial"]);
    dir
}

fn ctx(repo: &str, params: Vec<(String, String)>, inputs: Vec<(String, String)>) -> StepContext {
    StepContext {
        job_id: "job-1".into(),
        git_repo_url: repo.into(),
        git_base_branch: "main".into(),
        feature_branch_name: "ckrv/job-1".into(),
        api_url: "http://127.0.0.1:9".into(),
        params,
        inputs,
    }
}

async fn run(
    runner: &StepRunner,
    step: BuiltinStep,
    ctx: StepContext,
    git: &HostGit,
    api: &ApiAccess,
) -> (Result<StepOutput, StepError>, Vec<LogLine>) {
    let (log, mut rx) = JobLog::channel();
    let result = runner
        .run_builtin(
            step,
            ctx,
            StepEnv {
                name: step.name(),
                git,
                log: &log,
                api,
            },
        )
        .await;
    drop(log);
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.extend(line.into_line());
    }
    (result, lines)
}

/// A job directory: its workspace, and the host's private git state beside it. Local
/// repositories are allowed, as on a developer's machine.
fn job_dir() -> (tempfile::TempDir, HostGit) {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let git = HostGit::new(&workspace, &dir.path().join("git"), true).unwrap();
    (dir, git)
}

/// A repository, a workspace and a runner: what every clone/diff test starts from.
struct Bench {
    origin: tempfile::TempDir,
    _job_dir: tempfile::TempDir,
    git: HostGit,
    runner: StepRunner,
    api: ApiAccess,
}

impl Bench {
    fn new() -> Self {
        let (job_dir, git) = job_dir();
        Self {
            origin: origin(),
            _job_dir: job_dir,
            git,
            runner: StepRunner::new(Limits::default()).unwrap(),
            api: ApiAccess::new("http://127.0.0.1:9", "secret"),
        }
    }

    fn workspace(&self) -> &Path {
        self.git.workspace()
    }

    fn repo(&self) -> &str {
        self.origin.path().to_str().unwrap()
    }

    fn ctx(&self, params: Vec<(String, String)>) -> StepContext {
        ctx(self.repo(), params, vec![])
    }

    async fn step(
        &self,
        step: BuiltinStep,
        ctx: StepContext,
    ) -> (Result<StepOutput, StepError>, Vec<LogLine>) {
        run(&self.runner, step, ctx, &self.git, &self.api).await
    }
}

fn output<'a>(out: &'a StepOutput, key: &str) -> &'a str {
    &out.outputs.iter().find(|(k, _)| k == key).unwrap().1
}

#[tokio::test]
async fn clone_then_diff_produces_an_applicable_patch_and_a_summary() {
    let bench = Bench::new();
    let repo = bench.repo();
    let workspace = bench.workspace();

    let (result, lines) = bench.step(BuiltinStep::Clone, bench.ctx(vec![])).await;
    let out = result.unwrap();
    assert_eq!(output(&out, "branch"), "ckrv/job-1");
    assert!(lines.iter().all(|l| l.source == "clone"));
    assert!(lines.iter().any(|l| l.message.contains("cloning")));
    assert_eq!(
        git(workspace, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "ckrv/job-1"
    );

    // What an agent would do.
    std::fs::write(workspace.join("README.md"), "one\nTWO\nthree\nfour\n").unwrap();
    std::fs::write(workspace.join("new.txt"), "a\nb\n").unwrap();
    std::fs::remove_file(workspace.join("old.txt")).unwrap();
    std::fs::write(workspace.join("logo.bin"), [0u8, 1, 2, 255, 0, 7]).unwrap();

    let (result, lines) = bench.step(BuiltinStep::Diff, bench.ctx(vec![])).await;
    let out = result.unwrap();
    assert!(lines.iter().any(|l| l.source == "diff"));
    let summary: DiffStats = serde_json::from_str(output(&out, "summary")).unwrap();
    assert_eq!(summary.files_changed, 4);
    assert_eq!(summary.insertions, 2 + 2);
    assert_eq!(summary.deletions, 1 + 1);
    let file = |p: &str| summary.files.iter().find(|f| f.path == p).unwrap();
    assert_eq!(
        (file("README.md").insertions, file("README.md").deletions),
        (2, 1)
    );
    assert_eq!(
        (file("new.txt").insertions, file("new.txt").deletions),
        (2, 0)
    );
    assert_eq!(
        (file("old.txt").insertions, file("old.txt").deletions),
        (0, 1)
    );
    assert!(file("logo.bin").binary);

    let patch = output(&out, "diff");
    let fresh = tempfile::tempdir().unwrap();
    git(fresh.path(), &["clone", "-q", repo, "."]);
    std::fs::write(fresh.path().join("job.patch"), patch).unwrap();
    git(fresh.path(), &["apply", "--check", "job.patch"]);
    git(fresh.path(), &["apply", "job.patch"]);
    assert_eq!(
        std::fs::read(fresh.path().join("logo.bin")).unwrap(),
        [0u8, 1, 2, 255, 0, 7]
    );
}

#[tokio::test]
async fn an_empty_diff_is_allowed_and_the_size_policy_is_enforced() {
    let bench = Bench::new();
    let (result, _) = bench.step(BuiltinStep::Clone, bench.ctx(vec![])).await;
    result.unwrap();

    let (result, _) = bench.step(BuiltinStep::Diff, bench.ctx(vec![])).await;
    let out = result.unwrap();
    assert_eq!(output(&out, "diff"), "");
    let summary: DiffStats = serde_json::from_str(output(&out, "summary")).unwrap();
    assert_eq!(summary.files_changed, 0);

    std::fs::write(bench.workspace().join("big.txt"), "x".repeat(1000)).unwrap();
    let params = vec![("max_diff_bytes".to_string(), "100".to_string())];
    let (result, _) = bench.step(BuiltinStep::Diff, bench.ctx(params)).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("max_diff_bytes = 100"), "{err}");
}

#[tokio::test]
async fn a_clone_failure_carries_git_s_message() {
    let bench = Bench::new();
    let mut c = bench.ctx(vec![]);
    c.git_base_branch = "no-such-branch".into();
    let (result, _) = bench.step(BuiltinStep::Clone, c).await;
    let err = result.unwrap_err();
    assert!(matches!(err, StepError::Failed(_)));
    assert!(err.to_string().contains("no-such-branch"), "{err}");
}

fn inputs() -> Vec<(String, String)> {
    vec![
        ("diff".into(), "diff --git a/x b/x\n".into()),
        ("summary".into(), "{\"files_changed\":1}".into()),
    ]
}

#[tokio::test]
async fn requests_outside_the_api_are_denied() {
    let (_job_dir, git) = job_dir();
    let runner = StepRunner::new(Limits::default()).unwrap();
    let api = ApiAccess::new("http://127.0.0.1:9", "secret");
    let mut c = ctx("unused", vec![], inputs());
    c.api_url = "http://example.com".into();
    let (result, _) = run(&runner, BuiltinStep::Upload, c, &git, &api).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("denied"), "{err}");
}

/// Answers `n` requests with 204 and returns them as text.
fn fake_api(n: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let read = stream.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..read]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    let chunked = text
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked");
                    let done = if chunked {
                        text.ends_with("0\r\n\r\n")
                    } else {
                        buf.len() >= end + 4 + len
                    };
                    if done || read == 0 {
                        break;
                    }
                }
                if read == 0 {
                    break;
                }
            }
            stream
                .write_all(
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .unwrap();
            seen.push(String::from_utf8_lossy(&buf).to_string());
        }
        seen
    });
    (url, handle)
}

#[tokio::test]
async fn upload_reaches_the_api_with_the_token_added_by_the_host() {
    let (url, server) = fake_api(2);
    let (_job_dir, git) = job_dir();
    let runner = StepRunner::new(Limits::default()).unwrap();
    let api = ApiAccess::new(&url, "secret-token");
    let mut c = ctx("unused", vec![], inputs());
    c.api_url = url;
    let (result, _) = run(&runner, BuiltinStep::Upload, c, &git, &api).await;
    result.unwrap();
    let requests = server.join().unwrap();
    assert!(requests[0].starts_with("PUT /v1/worker/jobs/job-1/artifacts/diff "));
    assert!(requests[1].starts_with("POST /v1/worker/jobs/job-1/result "));
    for r in &requests {
        assert!(
            r.to_ascii_lowercase()
                .contains("authorization: bearer secret-token"),
            "{r}"
        );
    }
    assert!(
        requests[1].contains("{\"files_changed\":1}"),
        "{}",
        requests[1]
    );
}

#[tokio::test]
async fn hostile_repository_urls_are_refused_before_anything_connects() {
    // Something listening on loopback, which must never hear from the worker.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let origin = origin();
    let dir = tempfile::tempdir().unwrap();
    for (n, (url, reason)) in [
        (
            format!("http://127.0.0.1:{port}/repo.git"),
            "is not a repository URL",
        ),
        (
            format!("https://127.0.0.1:{port}/repo.git"),
            "a loopback address",
        ),
        (
            format!("https://localhost:{port}/repo.git"),
            "a loopback name",
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{port}/repo.git"),
            "a loopback address",
        ),
        (
            format!("ssh://git@127.0.0.1:{port}/repo.git"),
            "a loopback address",
        ),
        ("git@127.0.0.1:repo.git".to_string(), "a loopback address"),
        (
            format!("file://{}", origin.path().display()),
            "is not a repository URL",
        ),
        (
            origin.path().display().to_string(),
            "is not a repository URL",
        ),
        (
            "ext::sh -c touch% /tmp/ckrv-pwned".to_string(),
            "is not a repository URL",
        ),
        (
            format!("https://user:ghp_x@127.0.0.1:{port}/r.git"),
            "carries credentials",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let workspace = dir.path().join(format!("w{n}/workspace"));
        std::fs::create_dir_all(&workspace).unwrap();
        let git = HostGit::new(&workspace, &dir.path().join(format!("w{n}/git")), false).unwrap();
        let err = git.clone_repo(&url, "main").await.unwrap_err();
        assert!(err.contains(reason), "{url}: {err}");
        assert_eq!(std::fs::read_dir(&workspace).unwrap().count(), 0, "{url}");
    }
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).unwrap_err(),
        std::io::ErrorKind::WouldBlock,
        "a refused URL must not connect"
    );
    assert!(!Path::new("/tmp/ckrv-pwned").exists());
}

#[tokio::test]
async fn what_the_agent_writes_under_git_never_runs_on_the_host() {
    let bench = Bench::new();
    let (result, _) = bench.step(BuiltinStep::Clone, bench.ctx(vec![])).await;
    result.unwrap();
    let workspace = bench.workspace();
    let marker = bench._job_dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    // A hostile agent: config that runs commands, a hook, attributes that call drivers.
    let config = workspace.join(".git/config");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[core]\n\tfsmonitor = \"{touch}\"\n\thooksPath = hooks\n[diff \"evil\"]\n\ttextconv = {touch}\n\tcommand = {touch}\n[filter \"evil\"]\n\tclean = {touch}\n\tsmudge = {touch}\n"
    ));
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(workspace.join("hooks")).unwrap();
    for hook in ["pre-commit", "post-index-change", "reference-transaction"] {
        let path = workspace.join("hooks").join(hook);
        std::fs::write(&path, format!("#!/bin/sh\n{touch}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    std::fs::write(
        workspace.join(".gitattributes"),
        "* diff=evil filter=evil\n",
    )
    .unwrap();
    std::fs::write(workspace.join("README.md"), "one\nTWO\nthree\n").unwrap();
    std::fs::write(workspace.join(".git/planted"), "not part of the change").unwrap();

    let (result, _) = bench.step(BuiltinStep::Diff, bench.ctx(vec![])).await;
    let out = result.unwrap();
    let patch = output(&out, "diff");
    assert!(
        !marker.exists(),
        "the host ran something the agent configured"
    );
    assert!(
        patch.contains("+TWO") && patch.contains(".gitattributes"),
        "{patch}"
    );
    assert!(
        !patch.contains("planted") && !patch.contains("fsmonitor"),
        "{patch}"
    );
    // The hooks directory the agent added is an ordinary part of the change, nothing more.
    assert!(patch.contains("hooks/pre-commit"), "{patch}");
}
