//! The quickstart, end to end, through the real binaries: log in with the device flow, dispatch a
//! job on a repository served over HTTP, follow it to success, read its log and pull its diff.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use ckrv_e2e::{Api, Cli, StaticServer, create_served_repo, git, script_spec, wait_for};
use ckrv_test_support::{Browser, PASSWORD};

const AGENT_SCRIPT: &str = r#"echo "agent: reading the spec"
mkdir -p src
printf 'pub fn greet() -> &'"'"'static str {\n    "hello from the agent"\n}\n' > src/greet.rs
sed -i 's/draft/final/' README.md
echo "agent: done editing"
"#;

fn spec() -> String {
    script_spec("Greeting", AGENT_SCRIPT) + "\nAdd a greeting.\n"
}

/// Logs in by answering the device flow as the person would: signed in on the `/activate`
/// page with the password their administrator set, approving the request.
fn login(cli: &Cli, cwd: &Path, email: &str) {
    let mut child = cli
        .command(cwd, &["cloud", "login"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        }));
    }
    drop(tx);
    let mut transcript = Vec::new();
    let code = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("`ckrv cloud login` prints the user code");
        transcript.push(line.clone());
        if let Some((_, code)) = line.split_once("Enter code: ") {
            break code.trim().to_string();
        }
    };
    assert!(
        transcript.iter().any(|l| l.contains("/activate")),
        "login names the activation page: {transcript:?}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, page) = runtime.block_on(async {
        let browser = Browser::new(&cli.api_url);
        browser.sign_in(email, PASSWORD).await;
        browser.decide(&code, "approve").await
    });
    assert!(status.is_success(), "approving the code: {page}");

    let status = child.wait().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    transcript.extend(rx.try_iter());
    assert!(status.success(), "login failed: {transcript:?}");
    assert!(
        transcript
            .iter()
            .any(|l| l.contains(&format!("Authenticated as {email}"))),
        "login reports the account: {transcript:?}"
    );
}

#[test]
fn a_job_runs_from_dispatch_to_applied_diff() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // A repository served over HTTP on loopback.
    let served = root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    create_served_repo(
        &served,
        "sample",
        &[
            ("README.md", "# Sample\n\nStatus: draft\n"),
            ("src/lib.rs", "pub mod greet;\n"),
        ],
    );
    let server = StaticServer::start(&served);
    let repo_url = format!("http://{}/sample.git", server.addr);

    let api = Api::start(&root.join("api"));
    let cli = Cli::new(api.url.clone(), root.join("home"));

    // The developer's worktree, with a spec that is not committed (only its text travels).
    let work = root.join("work");
    git(root, &["clone", "-q", &repo_url, work.to_str().unwrap()]);
    std::fs::create_dir_all(work.join("specs/greeting")).unwrap();
    std::fs::write(work.join("specs/greeting/spec.md"), spec()).unwrap();

    // Without a session every cloud command says how to get one.
    let out = cli.run(&work, &["status", "abcd1234"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ckrv cloud login"));

    api.add_user("dev@example.com", PASSWORD);
    login(&cli, &work, "dev@example.com");
    let whoami = cli.ok(&work, &["cloud", "whoami", "--json"]);
    let user: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(user["email"], "dev@example.com");

    let dispatched = cli.ok(
        &work,
        &[
            "run",
            "--cloud",
            "--provider",
            "chakravarti",
            "--spec",
            "specs/greeting/spec.md",
            "--repo",
            &repo_url,
            "--base-branch",
            "main",
            "--json",
        ],
    );
    let job: serde_json::Value = serde_json::from_str(&dispatched).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let prefix = &id[..8];

    let finished = wait_for("the job to finish", Duration::from_secs(180), || {
        let job: serde_json::Value =
            serde_json::from_str(&cli.ok(&work, &["status", prefix, "--json"])).unwrap();
        let status = job["status"].as_str().unwrap().to_string();
        (status != "pending" && status != "running").then_some(job)
    });
    let logs = cli.ok(&work, &["logs", prefix]);
    assert_eq!(
        finished["status"], "succeeded",
        "job: {finished}\nlogs:\n{logs}"
    );
    assert_eq!(finished["phase"], "finished");
    assert_eq!(finished["agent"], "script");
    assert_eq!(finished["diff_stats"]["files_changed"], 2);
    assert_eq!(finished["result_status"], "succeeded");
    assert!(
        finished["result_summary"]
            .as_str()
            .unwrap()
            .starts_with("2 files changed"),
        "{finished}"
    );

    // The job's log holds the agent's own output, in order.
    let first = logs
        .find("agent: reading the spec")
        .expect("agent output in the log");
    let last = logs
        .find("agent: done editing")
        .expect("agent output in the log");
    assert!(first < last, "log order:\n{logs}");

    // What the agent would have made, computed locally from the same script on the base.
    let expected = root.join("expected");
    git(
        root,
        &["clone", "-q", &repo_url, expected.to_str().unwrap()],
    );
    let ran = std::process::Command::new("sh")
        .args(["-c", AGENT_SCRIPT])
        .current_dir(&expected)
        .output()
        .unwrap();
    assert!(ran.status.success());

    let pulled = cli.ok(&work, &["pull", prefix]);
    assert!(
        pulled.contains("src/greet.rs"),
        "pull prints a diffstat:\n{pulled}"
    );
    for file in ["README.md", "src/greet.rs", "src/lib.rs"] {
        assert_eq!(
            std::fs::read_to_string(work.join(file)).unwrap(),
            std::fs::read_to_string(expected.join(file)).unwrap(),
            "{file} after pull"
        );
    }
    let changed = git(&work, &["status", "--porcelain", "--untracked-files=all"]);
    let mut changed: Vec<&str> = changed.lines().map(|l| l[3..].trim()).collect();
    changed.sort_unstable();
    assert_eq!(
        changed,
        ["README.md", "specs/greeting/spec.md", "src/greet.rs"]
    );

    // Unknown jobs are reported as such.
    let out = cli.run(&work, &["status", "ffffffff"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("job not found"));

    // Nothing the API wrote (database, key, artifacts, worker logs) is open to other users.
    let mut open_to_others = Vec::new();
    let mut pending = vec![root.join("api")];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
            open_to_others.push(path.clone());
        }
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(open_to_others.is_empty(), "{open_to_others:?}");
}

#[test]
fn commands_name_the_api_url_when_it_is_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cli = Cli::new(format!("http://127.0.0.1:{port}"), tmp.path().join("home"));
    let out = cli
        .command(tmp.path(), &["status", "abcd1234"])
        .env("CKRV_TOKEN", "not-a-real-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&cli.api_url),
        "error names the URL: {stderr}"
    );
    assert!(
        stderr.contains("ckrv run --spec FILE"),
        "offers the local run: {stderr}"
    );
}
