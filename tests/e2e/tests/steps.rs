//! A platform team's own steps, end to end: built from the template and from the shipped
//! example outside this workspace with plain cargo, tried with `ckrv-orchestrator step run`,
//! then named in a pipeline file that `ckrv-api serve --pipeline` hands to its workers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use ckrv_e2e::{
    Api, Developer, binary, build_step_outside_workspace, git, repository_root, serve_app_repo,
};

#[test]
fn the_template_builds_outside_the_workspace_and_runs_in_the_harness() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = build_step_outside_workspace(
        &repository_root().join("orchestrator/steps/template"),
        tmp.path(),
    );
    let workspace = tmp.path().join("checkout");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(workspace.join("a.txt"), "a\n").unwrap();
    std::fs::write(workspace.join("b.txt"), "b\n").unwrap();
    let step = |extra: &[&str]| {
        Command::new(binary("ckrv-orchestrator"))
            .args(["step", "run"])
            .arg(&wasm)
            .arg("--workspace")
            .arg(&workspace)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = step(&["--param", "greeting=hi", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let output: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(output["summary"], "hi: the workspace has 2 entries");
    assert_eq!(output["outputs"]["entries"], "2");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("[info] ckrv_step_template: hi from job local"),
        "{log}"
    );

    let out = step(&["--param", "fail=true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: ckrv_step_template failed: asked to fail"),
        "{err}"
    );
}

/// A pipeline with the secret scanner between the agent and the diff.
fn pipeline(dir: &Path, scanner: &Path) -> std::path::PathBuf {
    std::fs::copy(scanner, dir.join("secret-scan.wasm")).unwrap();
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        r#"
[[stage]]
step = "clone"
phase = "cloning"

[[stage]]
agent = true
phase = "agent"

[[stage]]
component = "secret-scan.wasm"
phase = "diffing"
timeout_s = 60
memory_mb = 64
params = { allowlist = "fixtures/**" }

[[stage]]
step = "diff"
phase = "diffing"

[[stage]]
step = "upload"
phase = "uploading"
"#,
    )
    .unwrap();
    path
}

#[test]
fn the_secret_scan_example_fails_a_job_that_adds_a_credential_naming_file_and_line() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let scanner =
        build_step_outside_workspace(&repository_root().join("examples/steps/secret-scan"), root);
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let pipeline = pipeline(&etc, &scanner);

    let (_repos, repo_url) = serve_app_repo(root);
    let api = Api::start_with(
        &root.join("api"),
        &[
            "--allow-local-repos",
            "--pipeline",
            pipeline.to_str().unwrap(),
        ],
    );
    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);
    // A fake key, assembled so that this file does not itself look like one.
    let key = ["AKIA", "Q3EGRT7OPLMN2ZXW"].concat();

    let leaky = dev.dispatch(
        &repo_url,
        &format!("printf 'REGION=eu\\nAWS_ACCESS_KEY_ID={key}\\n' > config.env"),
    );
    let job = dev.cli.finished(&dev.clone, &leaky);
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error_message"].as_str().unwrap();
    assert_eq!(
        error,
        "secret-scan failed: found 1 likely secret(s) in the change:\n  config.env:2: AWS access key id (AKIA…)"
    );
    let log = dev.cli.ok(&dev.clone, &["logs", &leaky]);
    assert!(
        log.contains("secret-scan: config.env:2: AWS access key id (AKIA…)"),
        "{log}"
    );
    assert!(!log.contains(&key), "{log}");
    // Nothing left the worker: the job failed before its diff was taken or uploaded.
    let (status, _) = api.call(
        "GET",
        &dev.token,
        &format!("/v1/jobs/{leaky}/artifacts/diff"),
    );
    assert_eq!(status, 404);

    let fixture = dev.dispatch(
        &repo_url,
        &format!(
            "mkdir -p fixtures && echo 'key={key}' > fixtures/aws.txt && echo ok >> README.md"
        ),
    );
    let job = dev.cli.finished(&dev.clone, &fixture);
    assert_eq!(job["state"], "succeeded", "{job}");
    let clean = dev.dispatch(&repo_url, "echo 'more docs' >> README.md");
    let job = dev.cli.finished(&dev.clone, &clean);
    assert_eq!(job["state"], "succeeded", "{job}");
    let log = dev.cli.ok(&dev.clone, &["logs", &clean]);
    assert!(
        log.contains("secret-scan: no secrets found in 1 changed file(s)"),
        "{log}"
    );
    git(&dev.clone, &["status", "--short"]);
}
