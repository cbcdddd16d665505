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
    if !ckrv_test_support::sandbox_available() {
        return;
    }
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

/// A job as the CLI's plugin submits it; nothing clones it (the test plays the worker).
fn job_request() -> serde_json::Value {
    serde_json::json!({
        "spec_content": "---\nagent: script\nrun: echo hi\n---\n# Hi\n",
        "spec_path": "specs/hi/spec.md",
        "git_repo_url": "https://git.example.com/sample.git",
        "git_credential_name": null,
    })
}

/// The job as its owner sees it, once `done` says it has moved.
fn job_once(
    api: &Api,
    token: &str,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(
        &format!("job {id} to move"),
        Duration::from_secs(60),
        || {
            let (_, job) = api.call("GET", token, &format!("/v1/jobs/{id}"));
            done(&job).then_some(job)
        },
    )
}

#[test]
fn removing_a_worker_revokes_its_job_tokens_and_its_jobs_are_requeued_or_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start_with(
        &tmp.path().join("api"),
        &["--external-workers", "--max-running", "4"],
    );
    api.add_user("dev@example.com", ckrv_test_support::PASSWORD);
    let token = api.token("dev@example.com");
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let (status, job) = api.send("POST", &token, "/v1/jobs", Some(job_request()));
        assert_eq!(status, 201, "{job}");
        jobs.push(job["id"].as_str().unwrap().to_owned());
    }
    let (early, late) = (&jobs[0], &jobs[1]);

    // A worker claims both (the test speaks its protocol, to hold the job tokens it gets).
    let added = admin(&api, &["workers", "add", "builder-1"]);
    assert!(added.status.success());
    let credential = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    let mut tokens = Vec::new();
    for id in [early, late] {
        let (status, claim) = api.call("POST", &credential, "/v1/worker/claim");
        assert_eq!(status, 200, "{claim}");
        assert_eq!(claim["job_id"], id.as_str());
        tokens.push(claim["token"].as_str().unwrap().to_owned());
    }
    let (early_token, late_token) = (&tokens[0], &tokens[1]);
    let phase = |id: &str, token: &str, phase: &str| {
        api.send(
            "POST",
            token,
            &format!("/v1/worker/jobs/{id}/phase"),
            Some(serde_json::json!({"phase": phase})),
        )
        .0
    };
    assert_eq!(phase(early, early_token, "cloning"), 204);
    assert_eq!(phase(late, late_token, "cloning"), 204);
    assert_eq!(phase(late, late_token, "agent"), 204);
    let heartbeat =
        |id: &str, token: &str| api.call("POST", token, &format!("/v1/worker/jobs/{id}/heartbeat"));
    assert_eq!(heartbeat(early, early_token).0, 204);

    // The operator removes the worker while the API serves, from another process.
    let removed = admin(&api, &["workers", "remove", "builder-1"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let said = String::from_utf8_lossy(&removed.stdout);
    assert!(said.contains("2 running job(s)"), "{said}");

    // The job tokens it held are refused at once, whatever they ask.
    for (id, token) in [(early, early_token), (late, late_token)] {
        let (status, error) = heartbeat(id, token);
        assert_eq!(status, 401, "{error}");
        let (status, _) = api.send(
            "POST",
            token,
            &format!("/v1/worker/jobs/{id}/complete"),
            Some(serde_json::json!({"state": "succeeded"})),
        );
        assert_eq!(status, 401);
    }
    // The job still cloning waits for another worker; the one past it fails, saying why.
    let job = job_once(&api, &token, early, |job| job["state"] == "pending");
    assert_eq!(job["phase"], "queued", "{job}");
    let job = job_once(&api, &token, late, |job| job["state"] != "running");
    assert_eq!(job["state"], "failed", "{job}");
    let reason = job["error_message"].as_str().unwrap();
    assert!(
        reason.contains("builder-1") && reason.contains("removed"),
        "{reason}"
    );

    // Another worker picks the queued job up and finishes it.
    let added = admin(&api, &["workers", "add", "builder-2"]);
    let credential = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    let (status, claim) = api.call("POST", &credential, "/v1/worker/claim");
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["job_id"], early.as_str());
    let worker = claim["token"].as_str().unwrap();
    assert_eq!(heartbeat(early, worker).0, 204);
    let (status, _) = api.send(
        "POST",
        worker,
        &format!("/v1/worker/jobs/{early}/complete"),
        Some(serde_json::json!({"state": "succeeded"})),
    );
    assert_eq!(status, 204);
    let (_, job) = api.call("GET", &token, &format!("/v1/jobs/{early}"));
    assert_eq!(job["state"], "succeeded", "{job}");
}
