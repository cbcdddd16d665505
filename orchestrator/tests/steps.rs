//! The real built-in step components, run through the host against real git repositories.
#![allow(clippy::unwrap_used)]

use ckrv_orchestrator::host_git::HostGit;
use ckrv_orchestrator::logs::JobLog;
use ckrv_orchestrator::step_host::{
    DEFAULT_LIMITS, StepContext, StepEnv, StepError, StepOutput, StepRunner, builtin_component,
};
use ckrv_wasm_host::{Origin, OriginPolicy};
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

/// Where a step may connect: the API at `url`, with `token` added by the host.
fn api_policy(url: &str, token: &str) -> OriginPolicy {
    OriginPolicy::deny_all().allow_with_bearer(Origin::of_url(url).unwrap(), token)
}

async fn run(
    runner: &StepRunner,
    step: &str,
    ctx: StepContext,
    git: &HostGit,
    api: &OriginPolicy,
) -> (Result<StepOutput, StepError>, Vec<LogLine>) {
    let (log, mut rx) = JobLog::channel();
    let result = runner
        .run(
            builtin_component(step).unwrap(),
            ctx,
            StepEnv {
                name: step,
                git,
                log: &log,
                policy: api.clone(),
                limits: DEFAULT_LIMITS,
            },
        )
        .await
        .result;
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
    api: OriginPolicy,
}

impl Bench {
    fn new() -> Self {
        let (job_dir, git) = job_dir();
        Self {
            origin: origin(),
            _job_dir: job_dir,
            git,
            runner: StepRunner::new().unwrap(),
            api: api_policy("http://127.0.0.1:9", "secret"),
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
        step: &str,
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

    let (result, lines) = bench.step("clone", bench.ctx(vec![])).await;
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

    let (result, lines) = bench.step("diff", bench.ctx(vec![])).await;
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
    let (result, _) = bench.step("clone", bench.ctx(vec![])).await;
    result.unwrap();

    let (result, _) = bench.step("diff", bench.ctx(vec![])).await;
    let out = result.unwrap();
    assert_eq!(output(&out, "diff"), "");
    let summary: DiffStats = serde_json::from_str(output(&out, "summary")).unwrap();
    assert_eq!(summary.files_changed, 0);

    std::fs::write(bench.workspace().join("big.txt"), "x".repeat(1000)).unwrap();
    let params = vec![("max_diff_bytes".to_string(), "100".to_string())];
    let (result, _) = bench.step("diff", bench.ctx(params)).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("max_diff_bytes = 100"), "{err}");
}

#[tokio::test]
async fn a_clone_failure_carries_git_s_message() {
    let bench = Bench::new();
    let mut c = bench.ctx(vec![]);
    c.git_base_branch = "no-such-branch".into();
    let (result, _) = bench.step("clone", c).await;
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
    let runner = StepRunner::new().unwrap();
    let api = api_policy("http://127.0.0.1:9", "secret");
    let mut c = ctx("unused", vec![], inputs());
    c.api_url = "http://example.com".into();
    let (result, _) = run(&runner, "upload", c, &git, &api).await;
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
    let runner = StepRunner::new().unwrap();
    let api = api_policy(&url, "secret-token");
    let mut c = ctx("unused", vec![], inputs());
    c.api_url = url;
    let (result, _) = run(&runner, "upload", c, &git, &api).await;
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
        let err = git.clone_repo(&url, "main").await.unwrap_err().to_string();
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
    let (result, _) = bench.step("clone", bench.ctx(vec![])).await;
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

    let (result, _) = bench.step("diff", bench.ctx(vec![])).await;
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

/// Built from `orchestrator/steps/hostile` by build.rs for these tests only.
const HOSTILE_STEP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_hostile.wasm"));

/// Runs the hostile step in `mode` under `limits` and `policy`; the job's error message.
async fn hostile(
    runner: &StepRunner,
    mode: &str,
    url: &str,
    limits: ckrv_wasm_host::Limits,
    policy: OriginPolicy,
) -> Result<String, String> {
    let (_job_dir, git) = job_dir();
    let (log, _rx) = JobLog::channel();
    let params = vec![
        ("mode".to_string(), mode.to_string()),
        ("url".to_string(), url.to_string()),
    ];
    runner
        .run(
            HOSTILE_STEP,
            ctx("unused", params, vec![]),
            StepEnv {
                name: "hostile",
                git: &git,
                log: &log,
                policy,
                limits,
            },
        )
        .await
        .into_result("hostile")
        .map(|out| out.summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_steps_end_with_the_step_and_the_limit_named_and_the_worker_goes_on() {
    let runner = StepRunner::new().unwrap();
    let limits = ckrv_wasm_host::Limits {
        memory_bytes: 64 * 1024 * 1024,
        timeout: std::time::Duration::from_secs(1),
    };
    let deny = OriginPolicy::deny_all;

    let spin = hostile(&runner, "spin", "", limits, deny())
        .await
        .unwrap_err();
    assert_eq!(spin, "step hostile was stopped at its time limit of 1s");

    let hog = hostile(&runner, "hog", "", limits, deny())
        .await
        .unwrap_err();
    assert_eq!(
        hog,
        "step hostile was stopped at its memory limit of 64 MiB"
    );

    let escape = hostile(&runner, "escape", "", limits, deny())
        .await
        .unwrap_err();
    assert_eq!(escape, "hostile failed: could not read outside /workspace");

    let panic = hostile(&runner, "panic", "", limits, deny())
        .await
        .unwrap_err();
    assert!(panic.starts_with("step hostile crashed: "), "{panic}");

    // Something listening on loopback that the stage did not allow: never contacted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/exfiltrate", listener.local_addr().unwrap());
    let call = hostile(
        &runner,
        "call",
        &url,
        limits,
        api_policy("http://127.0.0.1:9", "t"),
    )
    .await
    .unwrap_err();
    let origin = Origin::of_url(&url).unwrap();
    assert!(call.starts_with("hostile failed: request failed"), "{call}");
    assert!(
        call.ends_with(&format!(
            "(the host denied its requests to {origin}: not the API and not in the stage's allowed_hosts)"
        )),
        "{call}"
    );
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).unwrap_err(),
        std::io::ErrorKind::WouldBlock,
        "a denied request must not connect"
    );

    // Allowed for this stage, the same request goes out.
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).unwrap();
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    let allowed = deny().allow(origin);
    let summary = hostile(&runner, "call", &url, limits, allowed)
        .await
        .unwrap();
    assert_eq!(summary, "CALLED OUT");
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /exfiltrate "), "{request}");
    // The worker's token goes to the API alone.
    assert!(
        !request.to_ascii_lowercase().contains("authorization"),
        "{request}"
    );

    // After all that, the same runner still runs a well-behaved step.
    let bench = Bench::new();
    let (result, _) = run(&runner, "clone", bench.ctx(vec![]), &bench.git, &bench.api).await;
    result.unwrap();
}

/// Every file under `dir` (but `.git`) with its bytes and whether it is executable.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>, bool)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == ".git" {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap(), mode & 0o100 != 0));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn the_diff_carries_every_kind_of_change_and_applies_plainly_and_three_way() {
    use std::os::unix::fs::PermissionsExt as _;
    let bench = Bench::new();
    let origin = bench.origin.path();
    std::fs::write(origin.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(origin.join("move-me.txt"), "moving\nalong\n").unwrap();
    std::fs::write(origin.join("image.bin"), [0u8, 159, 146, 150]).unwrap();
    git(origin, &["add", "-A"]);
    git(origin, &["commit", "-q", "-m", "more files"]);
    let (result, _) = bench.step("clone", bench.ctx(vec![])).await;
    result.unwrap();

    // What an agent does: commits some of its work, leaves the rest uncommitted.
    let ws = bench.workspace();
    std::fs::write(ws.join("README.md"), "one\ntwo\nthree\nfour\n").unwrap();
    git(ws, &["commit", "-q", "-am", "agent: first part"]);
    std::fs::create_dir_all(ws.join("src/deep/new")).unwrap();
    std::fs::write(ws.join("src/deep/new/mod.rs"), "pub fn f() {}\n").unwrap();
    std::fs::remove_file(ws.join("old.txt")).unwrap();
    std::fs::rename(ws.join("move-me.txt"), ws.join("moved.txt")).unwrap();
    std::fs::write(ws.join("image.bin"), [1u8, 0, 255, 7, 0]).unwrap();
    std::fs::write(ws.join("new.bin"), [0u8, 0, 1]).unwrap();
    std::fs::set_permissions(ws.join("script.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let (result, _) = bench.step("diff", bench.ctx(vec![])).await;
    let out = result.unwrap();
    let patch = output(&out, "diff");
    assert!(patch.contains("new mode 100755"), "{patch}");
    assert!(patch.contains("GIT binary patch"), "{patch}");

    for three_way in [false, true] {
        let fresh = tempfile::tempdir().unwrap();
        git(fresh.path(), &["clone", "-q", bench.repo(), "."]);
        let patch_file = fresh.path().join(".git/job.patch");
        std::fs::write(&patch_file, patch).unwrap();
        let file = patch_file.to_str().unwrap();
        if three_way {
            git(fresh.path(), &["apply", "--3way", "--index", file]);
        } else {
            git(fresh.path(), &["apply", "--check", file]);
            git(fresh.path(), &["apply", file]);
        }
        assert_eq!(tree(fresh.path()), tree(ws), "3way: {three_way}");
    }
}

#[tokio::test]
async fn forbidden_paths_fail_the_diff_naming_them() {
    let bench = Bench::new();
    let (result, _) = bench.step("clone", bench.ctx(vec![])).await;
    result.unwrap();
    let ws = bench.workspace();
    std::fs::create_dir_all(ws.join(".github/workflows")).unwrap();
    std::fs::write(ws.join(".github/workflows/ci.yml"), "on: push\n").unwrap();
    std::fs::write(ws.join("README.md"), "changed\n").unwrap();
    let params = |v: &str| vec![("forbidden_paths".to_string(), v.to_string())];

    let (result, _) = bench
        .step("diff", bench.ctx(params(".git/, .github/workflows/")))
        .await;
    let err = result.unwrap_err().to_string();
    assert_eq!(
        err,
        "the change touches .github/workflows/ci.yml, which the policy forbids (forbidden_paths = .git/, .github/workflows/)"
    );
    let (result, _) = bench.step("diff", bench.ctx(params("README.md"))).await;
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("touches README.md")
    );
    // The default forbids only `.git/`, which an ordinary change never touches.
    let (result, _) = bench.step("diff", bench.ctx(vec![])).await;
    result.unwrap();
}

#[tokio::test]
async fn the_bases_submodules_stay_as_they_are_whatever_the_agent_plants_in_them() {
    let bench = Bench::new();
    let origin = bench.origin.path();
    // The base records a submodule commit at vendor/lib (the clone leaves its directory empty).
    let recorded = git(origin, &["rev-parse", "HEAD"]).trim().to_string();
    let cacheinfo = format!("160000,{recorded},vendor/lib");
    git(
        origin,
        &["update-index", "--add", "--cacheinfo", &cacheinfo],
    );
    git(origin, &["commit", "-q", "-m", "a submodule"]);
    let (result, _) = bench.step("clone", bench.ctx(vec![])).await;
    result.unwrap();

    // The agent points the submodule's directory at a repository of the host's.
    let outside = tempfile::tempdir().unwrap();
    git(outside.path(), &["init", "-q", "-b", "main"]);
    git(
        outside.path(),
        &["commit", "-q", "--allow-empty", "-m", "host"],
    );
    let head = git(outside.path(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let ws = bench.workspace();
    let gitdir = format!("gitdir: {}\n", outside.path().join(".git").display());
    std::fs::write(ws.join("vendor/lib/.git"), gitdir).unwrap();
    std::fs::write(ws.join("vendor/lib/extra.txt"), "extra\n").unwrap();
    std::fs::write(ws.join("README.md"), "one\nTWO\nthree\n").unwrap();

    let (result, lines) = bench.step("diff", bench.ctx(vec![])).await;
    let out = result.unwrap();
    let patch = output(&out, "diff");
    assert!(
        !patch.contains("Subproject commit") && !patch.contains(&head),
        "{patch}"
    );
    // The submodule's directory is the base's: nothing in it is part of the change.
    assert!(
        patch.contains("+TWO") && !patch.contains("extra.txt"),
        "{patch}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.source == "diff"
                && l.message.starts_with("left vendor/lib as the base has it")),
        "{lines:?}"
    );
}

/// Git with no configuration but the repository's, as the host runs it.
fn plain_git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_diff_stages_what_git_add_would_ignored_replaced_and_oddly_named_paths_alike() {
    let bench = Bench::new();
    let origin = bench.origin.path();
    std::fs::write(origin.join(".gitignore"), "*.log\nbuild/\n!keep.log\n").unwrap();
    std::fs::write(origin.join("tracked.log"), "kept in git\n").unwrap();
    std::fs::create_dir_all(origin.join("dir")).unwrap();
    std::fs::write(origin.join("dir/a.txt"), "a\n").unwrap();
    std::fs::write(origin.join("file-then-dir"), "a file\n").unwrap();
    git(origin, &["add", "-A"]);
    git(origin, &["add", "-f", "tracked.log"]);
    git(origin, &["commit", "-q", "-m", "more files"]);
    let (result, _) = bench.step("clone", bench.ctx(vec![])).await;
    result.unwrap();
    bench.git.exclude(&["agent-cache/".to_string()]).unwrap();

    let ws = bench.workspace();
    let write = |path: &str, text: &str| {
        let path = ws.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("tracked.log", "kept in git\nand changed\n");
    write("new.log", "ignored\n");
    write("keep.log", "not ignored\n");
    write("build/out.bin", "ignored directory\n");
    write("docs/.gitignore", "secret.txt\n");
    write("docs/secret.txt", "ignored here\n");
    write("docs/readme.md", "staged\n");
    write("agent-cache/state", "the agent's own\n");
    write(":(exclude)odd.txt", "a name that reads as pathspec magic\n");
    write("space name/ü.txt", "unicode\n");
    write("new/deeper/x.txt", "deep\n");
    std::fs::create_dir_all(ws.join("empty")).unwrap();
    std::fs::remove_dir_all(ws.join("dir")).unwrap();
    std::os::unix::fs::symlink("/etc", ws.join("dir")).unwrap();
    std::fs::remove_file(ws.join("file-then-dir")).unwrap();
    write("file-then-dir/inner.txt", "inner\n");
    std::fs::remove_file(ws.join("old.txt")).unwrap();

    let (result, _) = bench.step("diff", bench.ctx(vec![])).await;
    let out = result.unwrap();
    let patch = output(&out, "diff");

    // What `git add -A` makes of the same files, with the same excludes.
    std::fs::write(ws.join(".git/info/exclude"), "agent-cache/\n").unwrap();
    plain_git(ws, &["add", "-A"]);
    let expected = plain_git(
        ws,
        &[
            "diff",
            "--cached",
            "--binary",
            "--no-ext-diff",
            "main",
            "--",
        ],
    );
    assert_eq!(patch, expected);
    assert!(
        patch.contains("odd.txt") && patch.contains("keep.log"),
        "{patch}"
    );
    for left_out in [
        "new.log",
        "ignored directory",
        "ignored here",
        "the agent's own",
    ] {
        assert!(!patch.contains(left_out), "{left_out}: {patch}");
    }
}

// A plain test: the repository server has a runtime of its own.
#[test]
fn the_credential_goes_to_the_jobs_own_repository_once_and_nowhere_else() {
    const TOKEN: &str = "glpat-onlyForTheJobsRepo01234";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let served = tempfile::tempdir().unwrap();
    ckrv_test_support::create_served_repo(served.path(), "job", &[("README.md", "job\n")]);
    ckrv_test_support::create_served_repo(served.path(), "other", &[("README.md", "other\n")]);
    let server = ckrv_test_support::StaticServer::start_private(served.path(), "oauth2", TOKEN);
    let job_url = format!("http://{}/job.git", server.addr);
    // The same server, under another name: a step asking for it gets no credential.
    let other_url = format!("http://localhost:{}/other.git", server.addr.port());
    let credential = ckrv_wit::types::GitCredential {
        provider: ckrv_wit::types::GitProvider::Gitlab,
        credential_type: ckrv_wit::types::CredentialType::Pat,
        username: None,
        value: TOKEN.into(),
    };
    let clone = |url: &str, git: &HostGit| runtime.block_on(git.clone_repo(url, "main"));

    let (_dir, git) = job_dir();
    let git = git.with_credential(&job_url, credential);
    assert!(
        clone(&other_url, &git).is_err(),
        "another repository got the credential"
    );
    let seen = server.authorizations.lock().unwrap().len();
    assert_eq!(seen, 0, "nothing was sent for another repository");
    clone(&job_url, &git).unwrap();
    assert_eq!(
        std::fs::read_to_string(git.workspace().join("README.md")).unwrap(),
        "job\n"
    );
    // Used once: a step cloning again (a fresh workspace, the same host git) has nothing to
    // send, and the server hears no token a second time.
    let sent = server.authorizations.lock().unwrap().len();
    std::fs::remove_dir_all(git.workspace()).unwrap();
    std::fs::create_dir(git.workspace()).unwrap();
    std::fs::remove_dir_all(_dir.path().join("git/base.git")).unwrap();
    let again = clone(&job_url, &git.clone()).unwrap_err().to_string();
    assert!(!again.contains(TOKEN), "{again}");
    assert_eq!(server.authorizations.lock().unwrap().len(), sent);
}

/// Clones the bench's repository, appends to README.md and takes the diff: what `publish`
/// starts from, with the inputs the host and the steps before it give it.
async fn changed(bench: &Bench, publish: &str) -> Vec<(String, String)> {
    bench.step("clone", bench.ctx(vec![])).await.0.unwrap();
    std::fs::write(
        bench.workspace().join("README.md"),
        "one\ntwo\nthree\nfour\n",
    )
    .unwrap();
    let out = bench.step("diff", bench.ctx(vec![])).await.0.unwrap();
    let mut inputs = out.outputs.clone();
    inputs.push(("publish".into(), publish.into()));
    inputs.push(("title".into(), "Count to four".into()));
    inputs
}

/// A fake API that takes the publication report.
async fn publication_api() -> ckrv_test_support::FakeEndpoint {
    use axum::response::IntoResponse as _;
    ckrv_test_support::FakeEndpoint::start(|_| async {
        axum::http::StatusCode::NO_CONTENT.into_response()
    })
    .await
}

#[tokio::test]
async fn publish_pushes_the_diffed_change_to_the_jobs_branch_and_never_overwrites_one() {
    let mut bench = Bench::new();
    let repo = bench.repo().to_string();
    bench.git = bench
        .git
        .clone()
        .with_publish(&repo, ("ckrv/job-1", None), None);
    let api = publication_api().await;
    bench.api = api_policy(&api.url, "worker-token");
    let inputs = changed(&bench, "branch").await;
    let mut ctx = ctx(&repo, vec![], inputs.clone());
    ctx.api_url = api.url.clone();
    let (result, lines) = bench.step("publish", ctx.clone()).await;
    let out = result.unwrap();
    assert_eq!(out.summary, "published ckrv/job-1");
    assert!(
        lines
            .iter()
            .any(|l| l.message.starts_with("pushed ckrv/job-1 ("))
    );
    // The branch holds the diffed change on top of main, titled as the spec is.
    let pushed = git(bench.origin.path(), &["show", "ckrv/job-1:README.md"]);
    assert_eq!(pushed, "one\ntwo\nthree\nfour\n");
    let log = git(
        bench.origin.path(),
        &["log", "--format=%s", "main..ckrv/job-1"],
    );
    assert_eq!(log.trim(), "Count to four");
    // The API heard where it went, with the worker's token the host added.
    let calls = api.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path(), "/v1/worker/jobs/job-1/publication");
    assert_eq!(calls[0].header("authorization"), "Bearer worker-token");
    let report: serde_json::Value = calls[0].json();
    let commit = git(bench.origin.path(), &["rev-parse", "ckrv/job-1"]);
    assert_eq!(report["commit"], commit.trim());
    assert_eq!(report["mode"], "branch");
    assert!(report["pull_request_url"].is_null());

    // The credential and the target are used once: a second push is refused by the host.
    let (result, _) = bench.step("publish", ctx.clone()).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("has published already"), "{err}");

    // Another job with a branch of that name already there never overwrites it.
    let mut other = Bench::new();
    other.origin = tempfile::tempdir().unwrap();
    git(other.origin.path(), &["clone", "-q", &repo, "."]);
    git(other.origin.path(), &["branch", "-f", "ckrv/job-1", "main"]);
    let other_repo = other.repo().to_string();
    other.git = other
        .git
        .clone()
        .with_publish(&other_repo, ("ckrv/job-1", None), None);
    other.api = bench.api.clone();
    let inputs = changed(&other, "branch").await;
    let mut ctx = self::ctx(&other_repo, vec![], inputs);
    ctx.api_url = api.url.clone();
    let (result, _) = other.step("publish", ctx).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("branch ckrv/job-1 is not as the job expects it in the repository"),
        "{err}"
    );
    let kept = git(other.origin.path(), &["rev-parse", "ckrv/job-1"]);
    assert_eq!(kept, git(other.origin.path(), &["rev-parse", "main"]));
    assert_eq!(
        api.requests().len(),
        1,
        "nothing reported for a refused push"
    );
}

#[tokio::test]
async fn publish_does_nothing_for_a_job_that_does_not_publish() {
    let bench = Bench::new();
    let inputs = changed(&bench, "none").await;
    let (result, _) = bench
        .step("publish", ctx(bench.repo(), vec![], inputs))
        .await;
    let out = result.unwrap();
    assert!(out.summary.contains("does not publish"), "{}", out.summary);
    let branches = git(bench.origin.path(), &["branch", "--list", "ckrv/*"]);
    assert_eq!(branches.trim(), "");
}
