//! A repository's ready-to-work environment through the real binaries (`ckrv`, `ckrv-api`
//! with local workers, `ckrv-orchestrator`, bubblewrap; docs/environments.md): its setup runs
//! once in phase `setup` and is saved as a snapshot in the API's artifact store; the account's
//! next job restores it instead of running setup; another account's job never gets it. With
//! the artifacts on S3 (moto on loopback), the snapshot lives in the bucket.
#![allow(clippy::unwrap_used)]

use ckrv_e2e::{Api, Developer, serve_repo};

const ENVIRONMENT: &str = "setup = \"\"\"
echo preparing
mkdir -p deps && echo \"tool $TOOL_VERSION\" > deps/tool
\"\"\"
key_files = [\"deps.lock\"]
cache = [\"deps/\"]

[env]
TOOL_VERSION = \"1.2\"
";

/// The served repository: a README, the environment, and its key file.
const APP: [(&str, &str); 3] = [
    ("README.md", "# App\n"),
    (".ckrv/environment.toml", ENVIRONMENT),
    ("deps.lock", "v1\n"),
];

const SPEC: &str = "---\nagent: script\nrun: |\n  cat deps/tool\n  echo \"done\" >> README.md\n---\n# Use the tool\n";

/// Runs [`SPEC`] as `dev`; the finished job's log and `ckrv status` (its diff checked too).
fn job_log(dev: &Developer, api_url: &str, repo_url: &str) -> String {
    job_log_with(dev, api_url, repo_url, &[])
}

/// [`job_log`], `ckrv run` given `extra` flags too.
fn job_log_with(dev: &Developer, api_url: &str, repo_url: &str, extra: &[&str]) -> String {
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    std::fs::write(dev.clone.join("specs/tool.md"), SPEC).unwrap();
    let mut args = vec![
        "run",
        "--cloud",
        "--spec",
        "specs/tool.md",
        "--repo",
        repo_url,
        "--base-branch",
        "main",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = dev.cli.ok(&dev.clone, &args);
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let job = dev.cli.finished(&dev.clone, &id);
    let log = dev.cli.ok(&dev.clone, &["logs", &id]);
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    let status = dev.cli.ok(&dev.clone, &["status", &id]);
    let log = format!("{log}\n{status}");
    let diff = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {}", dev.token)])
        .arg(format!("{api_url}/v1/jobs/{id}/artifacts/diff"))
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(
        diff.contains("+done") && !diff.contains("deps/tool"),
        "{diff}"
    );
    log
}

#[test]
fn setup_runs_once_and_the_accounts_next_job_starts_from_its_snapshot() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_repos, repo_url) = serve_repo(root, "app", &APP);
    let api = Api::start(&root.join("api"));
    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);

    let first = job_log(&dev, &api.url, &repo_url);
    for said in [
        "No snapshot ",
        "preparing",
        "Setup finished in ",
        "Setup: ran (",
        "), snapshot saved (",
        " saved (",
    ] {
        assert!(first.contains(said), "{said}: {first}");
    }
    assert!(
        first.contains("tool 1.2"),
        "the agent found what setup made: {first}"
    );
    let stored: Vec<_> = walk(&api.data_dir)
        .into_iter()
        .filter(|p| p.contains("/snapshots/") && p.ends_with(".tar.zst"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    let second = job_log(&dev, &api.url, &repo_url);
    assert!(second.contains("; setup not run"), "{second}");
    assert!(
        second.contains("Setup: snapshot hit ("),
        "ckrv status says so: {second}"
    );
    assert!(!second.contains("preparing"), "{second}");
    assert!(second.contains("tool 1.2"), "{second}");

    // Asked for a fresh setup, a job runs it although the snapshot is there, and saves anew.
    let fresh = job_log_with(&dev, &api.url, &repo_url, &["--no-snapshot"]);
    assert!(
        fresh.contains("A fresh setup was asked for (--no-snapshot)"),
        "{fresh}"
    );
    assert!(
        fresh.contains("preparing") && fresh.contains("Setup: ran ("),
        "{fresh}"
    );
    assert!(!fresh.contains("; setup not run"), "{fresh}");

    // Another account's job on the same repository runs setup itself.
    let other = Developer::new(&api, root, "other@example.com", &repo_url);
    let theirs = job_log(&other, &api.url, &repo_url);
    assert!(
        theirs.contains("No snapshot ") && theirs.contains("preparing"),
        "{theirs}"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn snapshots_live_in_an_s3_bucket_when_the_artifacts_do() {
    use ckrv_test_support::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket("ckrv-artifacts");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_repos, repo_url) = serve_repo(root, "app", &APP);
    let api = Api::start_in_env(
        &root.join("api"),
        "127.0.0.1:0",
        &[
            "--allow-local-repos",
            "--artifacts",
            "s3://ckrv-artifacts/team-a",
            "--artifacts-endpoint",
            &s3.endpoint,
        ],
        &[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);
    let first = job_log(&dev, &api.url, &repo_url);
    assert!(first.contains(" saved ("), "{first}");
    let snapshots: Vec<String> = s3
        .keys("ckrv-artifacts")
        .into_iter()
        .filter(|k| k.starts_with("team-a/snapshots/") && k.ends_with(".tar.zst"))
        .collect();
    assert_eq!(snapshots.len(), 1, "{:?}", s3.keys("ckrv-artifacts"));
    let second = job_log(&dev, &api.url, &repo_url);
    assert!(second.contains("; setup not run"), "{second}");
    assert!(second.contains("tool 1.2"), "{second}");
}
