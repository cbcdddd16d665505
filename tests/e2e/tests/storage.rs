//! Artifacts on S3-compatible storage, with the real binaries against a real server (moto) on
//! loopback: `ckrv-api serve --artifacts s3://BUCKET/PREFIX --artifacts-endpoint URL` with the
//! standard AWS variables. The diff and the archived log land in the bucket under the prefix,
//! `ckrv pull` and `ckrv logs` read them back, the agent never sees the S3 credentials, and a
//! bucket that does not exist makes `/readyz` say so.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ckrv_e2e::{Api, Developer, serve_app_repo, wait_for};
use ckrv_test_support::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};

const BUCKET: &str = "ckrv-artifacts";

fn aws_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ]
}

#[test]
fn a_jobs_diff_and_log_live_in_the_bucket_and_read_back() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let Some(s3) = S3Server::start() else { return };
    s3.create_bucket(BUCKET);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_repos, repo_url) = serve_app_repo(root);
    let location = format!("s3://{BUCKET}/team-a/prod");
    let api = Api::start_in_env(
        &root.join("api"),
        "127.0.0.1:0",
        &[
            "--allow-local-repos",
            "--artifacts",
            &location,
            "--artifacts-endpoint",
            &s3.endpoint,
        ],
        &aws_env(),
    );
    let (status, ready) = api.call("GET", "", "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["artifacts"], "ok", "{ready}");

    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);
    // The agent writes down what it can see of its environment: the diff carries it back.
    let id = dev.dispatch(
        &repo_url,
        "echo 'stored in S3' >> README.md\nenv | sort > seen-env.txt\necho agent finished",
    );
    let job = dev.cli.finished(&dev.clone, &id);
    assert_eq!(job["state"], "succeeded", "{job}");

    let diff_key = format!("team-a/prod/jobs/{id}/diff.patch");
    assert!(s3.keys(BUCKET).contains(&diff_key), "{:?}", s3.keys(BUCKET));
    assert!(s3.object(BUCKET, &diff_key).contains("+stored in S3"));
    dev.cli.ok(&dev.clone, &["pull", &id, "--yes"]);
    let readme = std::fs::read_to_string(dev.clone.join("README.md")).unwrap();
    assert!(readme.contains("stored in S3"), "{readme}");
    let seen = std::fs::read_to_string(dev.clone.join("seen-env.txt")).unwrap();
    assert!(!seen.contains("AWS_"), "the agent saw S3 settings:\n{seen}");
    assert!(!seen.contains(S3_SECRET_KEY));

    // Once archived, the log is one JSON entry per line in the bucket, and still readable.
    let log_key = format!("team-a/prod/jobs/{id}/log.jsonl");
    wait_for("the log archived", Duration::from_secs(60), || {
        s3.keys(BUCKET).contains(&log_key).then_some(())
    });
    let archived = s3.object(BUCKET, &log_key);
    let entries: Vec<serde_json::Value> = archived
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        entries.iter().any(|e| e["message"] == "agent finished"),
        "{archived}"
    );
    let sequences: Vec<u64> = entries
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    let log = dev.cli.ok(&dev.clone, &["logs", &id]);
    assert!(log.contains("agent finished"), "{log}");
}

#[test]
fn a_missing_bucket_is_reported_not_ready() {
    let Some(s3) = S3Server::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start_in_env(
        tmp.path(),
        "127.0.0.1:0",
        &[
            "--artifacts",
            "s3://no-such-bucket/x",
            "--artifacts-endpoint",
            &s3.endpoint,
        ],
        &aws_env(),
    );
    let (status, ready) = api.call("GET", "", "/readyz");
    assert_eq!(status, 503, "{ready}");
    // Unauthenticated callers learn that, not the bucket's name or the endpoint.
    assert_eq!(ready["artifacts"], "unavailable", "{ready}");
    assert_eq!(ready["database"], "ok", "{ready}");
    assert!(!ready.to_string().contains("no-such-bucket"), "{ready}");
}

#[test]
fn a_bad_artifacts_location_stops_the_server_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ckrv_e2e::binary("ckrv-api"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .args(["--artifacts", "s3://Bad_Bucket/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Bad_Bucket"), "{stderr}");
    assert!(stderr.contains("bucket name"), "{stderr}");
}
