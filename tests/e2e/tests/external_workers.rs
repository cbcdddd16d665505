//! External workers: an operator issues a credential, `ckrv-orchestrator work` on another
//! machine (here: another process with none of the API's state) claims jobs with it and runs
//! them, and a revoked credential stops it. With the real binaries.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ckrv_e2e::{Api, Developer, binary, serve_app_repo, wait_for};

fn admin(api: &Api, args: &[&str]) -> Output {
    api.admin(args)
}

/// `ckrv-orchestrator work` with `credential` on its standard input.
fn worker(api: &Api, work_dir: &Path, credential: &str) -> Child {
    let mut child = Command::new(binary("ckrv-orchestrator"))
        .args([
            "work",
            "--api-url",
            &api.url,
            "--poll",
            "200ms",
            "--allow-local-repos",
        ])
        .arg("--work-dir")
        .arg(work_dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{credential}").unwrap();
    child
}

fn stderr_of(mut child: Child) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
    text
}

#[test]
fn an_external_worker_claims_and_runs_jobs_until_its_credential_is_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let (repos, repo_url) = serve_app_repo(root);
    let api = Api::start_with(
        &root.join("api"),
        &["--external-workers", "--allow-local-repos"],
    );
    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);
    let (cli, clone, token) = (&dev.cli, &dev.clone, &dev.token);

    // A job dispatched with no worker about waits, queued.
    let first = dev.dispatch(&repo_url, "echo first > first.txt\n");
    let (_, job) = api.call("GET", token, &format!("/v1/jobs/{first}"));
    assert_eq!(
        (job["state"].as_str(), job["phase"].as_str()),
        (Some("pending"), Some("queued"))
    );

    // Names are checked; the credential is printed once, alone on stdout.
    let bad = admin(&api, &["workers", "add", "no spaces"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("worker name"));
    let added = admin(&api, &["workers", "add", "builder-1"]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let credential = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    assert!(credential.starts_with("ckrv_wk_"), "{credential}");

    // A wrong credential is refused at once, with what to do.
    let work_dir = root.join("work");
    std::fs::create_dir(&work_dir).unwrap();
    std::fs::set_permissions(
        &work_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let mut impostor = worker(&api, &work_dir, "ckrv_wk_guessed");
    let status = wait_for("the impostor to stop", Duration::from_secs(30), || {
        impostor.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(stderr_of(impostor).contains("ckrv-api workers add"));

    let mut builder = worker(&api, &work_dir, &credential);
    let job = cli.finished(clone, &first);
    assert_eq!(job["state"], "succeeded", "{job}");
    let second = dev.dispatch(&repo_url, "echo second > second.txt\n");
    let job = cli.finished(clone, &second);
    assert_eq!(job["state"], "succeeded", "{job}");

    let listed = admin(&api, &["workers", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["name"], "builder-1");
    assert!(listed[0]["last_claim_at"].is_string(), "{listed}");
    assert!(
        !listed.to_string().contains(&credential),
        "never shown again"
    );

    // Revoked: the worker's next claim is refused and it stops, saying why.
    let removed = admin(&api, &["workers", "remove", "builder-1"]);
    assert!(removed.status.success());
    let status = wait_for("the worker to stop", Duration::from_secs(30), || {
        builder.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(stderr_of(builder).contains("refused this worker's credential"));
    drop(repos);
}
