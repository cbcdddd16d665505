//! The seed contract (`cloud-api.yaml`, read from `../shared/seeds/contracts/` or
//! `CKRV_CONTRACT`), checked three ways: the WIT models' JSON is the contract's schemas plus the
//! extensions docs/protocol.md lists; every operation of the contract has a route; and
//! schemathesis, which we did not write, fuzzes a live server with every operation.
//!
//! Without the contract file these tests print why and pass; CI sets
//! `CKRV_REQUIRE_CONTRACT=1`, which turns a missing file or schemathesis into a failure.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ckrv_wit::types::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestApi, access, job_request};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The contract, or `None` (with the reason printed) when it is not on this machine.
fn contract() -> Option<(PathBuf, Value)> {
    let path = std::env::var_os("CKRV_CONTRACT").map_or_else(
        || Path::new(MANIFEST_DIR).join("../../shared/seeds/contracts/cloud-api.yaml"),
        PathBuf::from,
    );
    match std::fs::read_to_string(&path) {
        Ok(text) => Some((path, serde_yaml_ng::from_str(&text).unwrap())),
        Err(e) => {
            ckrv_test_support::skip_unless_required(
                REQUIRED_ENV,
                &format!("the seed contract {} cannot be read ({e})", path.display()),
                "set CKRV_CONTRACT to cloud-api.yaml",
            );
            None
        }
    }
}

/// Set to `1` to fail, rather than skip, when the contract or schemathesis is missing.
const REQUIRED_ENV: &str = "CKRV_REQUIRE_CONTRACT";

/// Every `(method, path)` of the contract, e.g. `("POST", "/jobs")`.
fn operations(contract: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in contract["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

fn properties(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

fn strings(values: &Value) -> BTreeSet<String> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn cases<const N: usize>(all: [&str; N]) -> BTreeSet<String> {
    all.into_iter().map(str::to_string).collect()
}

/// `(schema, field)` rows of the extensions table in docs/protocol.md.
fn documented_extensions() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("../docs/protocol.md")).unwrap();
    let table = doc
        .split("## Extensions")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut rows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (schema, field) = (cells[1], cells[2]);
        let single = |cell: &str| {
            (cell.matches('`').count() == 2).then(|| cell.trim_matches('`').to_string())
        };
        if let (Some(schema), Some(field)) = (single(schema), single(field)) {
            rows.entry(schema).or_default().insert(field);
        }
    }
    rows
}

#[test]
fn the_models_are_the_contracts_schemas_plus_documented_extensions() {
    let Some((_, contract)) = contract() else {
        return;
    };
    let schemas = &contract["components"]["schemas"];
    let paths = &contract["paths"];
    let body = |path: &str, method: &str| {
        paths[path][method]["requestBody"]["content"]["application/json"]["schema"].clone()
    };
    let extensions = documented_extensions();
    let models: &[(&str, Value, &[&str])] = &[
        ("Job", schemas["Job"].clone(), &Job::JSON_FIELDS),
        ("JobCreate", schemas["JobCreate"].clone(), &JobCreate::JSON_FIELDS),
        ("JobListResponse", schemas["JobListResponse"].clone(), &JobListResponse::JSON_FIELDS),
        ("User", schemas["User"].clone(), &User::JSON_FIELDS),
        ("LogEntry", schemas["LogEntry"].clone(), &LogEntry::JSON_FIELDS),
        ("LogResponse", schemas["LogResponse"].clone(), &LogResponse::JSON_FIELDS),
        ("CredentialSummary", schemas["CredentialSummary"].clone(), &CredentialSummary::JSON_FIELDS),
        ("CredentialCreate", schemas["CredentialCreate"].clone(), &CredentialCreate::JSON_FIELDS),
        ("DeviceCodeResponse", schemas["DeviceCodeResponse"].clone(), &DeviceCodeResponse::JSON_FIELDS),
        ("TokenResponse", schemas["TokenResponse"].clone(), &TokenResponse::JSON_FIELDS),
        ("POST /auth/device", body("/auth/device", "post"), &DeviceCodeRequest::JSON_FIELDS),
        ("POST /auth/token", body("/auth/token", "post"), &DeviceTokenRequest::JSON_FIELDS),
        ("POST /auth/refresh", body("/auth/refresh", "post"), &RefreshRequest::JSON_FIELDS),
        (
            "GET /credentials",
            paths["/credentials"]["get"]["responses"]["200"]["content"]["application/json"]["schema"].clone(),
            &CredentialList::JSON_FIELDS,
        ),
    ];
    for (name, schema, fields) in models {
        let theirs = properties(schema);
        assert!(!theirs.is_empty(), "the contract has no schema {name}");
        let ours: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
        let missing: Vec<_> = theirs.difference(&ours).collect();
        assert!(
            missing.is_empty(),
            "{name} lacks the contract's {missing:?}"
        );
        let extra: BTreeSet<String> = ours.difference(&theirs).cloned().collect();
        let documented = extensions.get(*name).cloned().unwrap_or_default();
        assert_eq!(
            extra, documented,
            "{name}: the fields beyond the contract must be the extensions docs/protocol.md lists"
        );
    }
    // The error body is both of the contract's error shapes, and nothing else.
    let token_error = properties(&schemas["TokenErrorResponse"]);
    let quota_error = properties(&schemas["QuotaExceededError"]);
    let ours: BTreeSet<String> = ApiError::JSON_FIELDS
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(ours, &token_error | &quota_error);

    // Enums: the same cases, spelled the same.
    let job = &schemas["Job"]["properties"];
    assert_eq!(
        strings(&job["status"]["enum"]),
        cases(JobStatus::ALL.map(JobStatus::as_str))
    );
    assert_eq!(
        strings(&job["result_status"]["enum"]),
        cases(ResultStatus::ALL.map(ResultStatus::as_str))
    );
    let filter = &paths["/jobs"]["get"]["parameters"][0];
    assert_eq!(filter["name"], "status");
    assert_eq!(
        strings(&filter["schema"]["enum"]),
        cases(JobStatus::ALL.map(JobStatus::as_str))
    );
    assert_eq!(
        strings(&schemas["User"]["properties"]["subscription_tier"]["enum"]),
        cases(SubscriptionTier::ALL.map(SubscriptionTier::as_str))
    );
    assert_eq!(
        strings(&schemas["LogEntry"]["properties"]["level"]["enum"]),
        cases(LogLevel::ALL.map(LogLevel::as_str))
    );
    let credential = &schemas["CredentialSummary"]["properties"];
    assert_eq!(
        strings(&credential["provider"]["enum"]),
        cases(GitProvider::ALL.map(GitProvider::as_str))
    );
    assert_eq!(
        strings(&credential["credential_type"]["enum"]),
        cases(CredentialType::ALL.map(CredentialType::as_str))
    );
    let kinds = cases(ErrorKind::ALL.map(ErrorKind::as_str));
    let token_errors = strings(&schemas["TokenErrorResponse"]["properties"]["error"]["enum"]);
    assert!(token_errors.is_subset(&kinds), "{token_errors:?}");
    assert!(kinds.contains("quota_exceeded"));
    assert_eq!(
        ckrv_wit::protocol::DEVICE_CODE_GRANT,
        paths["/auth/token"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
            ["grant_type"]["enum"][0]
    );
}

#[tokio::test]
async fn every_operation_of_the_contract_has_a_route() {
    let Some((_, contract)) = contract() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let ops = operations(&contract);
    assert_eq!(ops.len(), 12, "{ops:?}");
    for (method, path) in ops {
        let concrete = path
            .replace("{job_id}", "3f8a9b2c-1234-5678-abcd-ef0123456789")
            .replace("{name}", "github-work");
        let body = (method == "POST").then(|| json!({}));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, answer) = api
            .call(method.clone(), &format!("/v1{concrete}"), None, body)
            .await;
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
            || answer["error_description"]
                .as_str()
                .is_some_and(|d| d.starts_with("no such endpoint"));
        assert!(!unrouted, "{method} {path} has no route: {status} {answer}");
    }
}

#[tokio::test]
async fn wrong_methods_and_bodies_get_the_error_shape_too() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let response = api
        .http
        .put(format!("{}/v1/jobs", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "method_not_allowed");

    let user = api.login("dev@example.com").await;
    let response = api
        .http
        .post(format!("{}/v1/jobs", api.url))
        .bearer_auth(access(&user))
        .header("content-type", "text/plain")
        .body(job_request().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"], "unsupported_media_type");
}

/// Where schemathesis is: `CKRV_SCHEMATHESIS`, else `schemathesis` on `PATH`.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CKRV_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("schemathesis"))
            .find(|candidate| candidate.is_file())
    })
}

const DIFF: &str = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-draft\n+final\n";

/// An account with a job in every state, logs, a diff and a credential; returns its token and
/// its job ids.
async fn seed(api: &TestApi) -> (String, Vec<String>) {
    let tokens = api.login("fuzz@example.com").await;
    let user = access(&tokens).to_string();
    let mut ids = Vec::new();
    let stats = json!({"files_changed": 1, "insertions": 1, "deletions": 1,
        "files": [{"path": "README.md", "insertions": 1, "deletions": 1, "binary": false}]});
    let ends = [
        Some(json!({"state": "succeeded"})),
        Some(json!({"state": "failed", "error_message": "agent exited with status 1"})),
        None,
        None,
    ];
    for (n, end) in ends.into_iter().enumerate() {
        let (status, job) = api.create_job(&user).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        let id = job["id"].as_str().unwrap().to_string();
        let diff = (n == 0).then(|| (DIFF, stats.clone()));
        api.work_job(&id, &["Cloning repository...", "agent says hi"], diff, end)
            .await;
        ids.push(id);
    }
    // The third job started long ago: the engine times it out on its next round.
    api.sql(&format!(
        "UPDATE jobs SET started_ms = 0 WHERE id = '{}'",
        ids[2]
    ))
    .await;
    for _ in 0..600 {
        let (_, job) = api.get(&format!("/v1/jobs/{}", ids[2]), &user).await;
        if job["status"] == "timeout" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..2 {
        let (_, job) = api.create_job(&user).await;
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let cancel = format!("/v1/jobs/{}/cancel", ids[ids.len() - 1]);
    let (status, _) = api.call(Method::POST, &cancel, Some(&user), None).await;
    assert_eq!(status, StatusCode::OK);
    let credential = json!({"name": "github-work", "provider": "github",
        "credential_type": "pat", "value": "ghp_fuzzing0123"});
    let (status, body) = api.post("/v1/credentials", &user, credential).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (user, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_the_seed_contract() {
    let Some((contract_path, contract)) = contract() else {
        return;
    };
    let Some(schemathesis) = schemathesis_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(&dir.path().join("api")).await;
    let schema = contract_path.to_string_lossy().into_owned();
    let url = format!("{}/v1", api.url);
    let report = fuzz(
        &schemathesis,
        &api,
        dir.path(),
        &[&schema, "--url", &url],
        include_str!("schemathesis/schemathesis.toml"),
        "job_id",
    )
    .await;
    // Every operation of the contract was exercised.
    for (method, path) in operations(&contract) {
        let case = format!("<testcase name=\"{method} {path}\"");
        assert!(
            report.contains(&case),
            "{method} {path} was not tested:\n{report}"
        );
    }
}

/// The API's own document, served by the API, fuzzed in full: every status it answers is
/// documented there, so schemathesis checks each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_the_apis_own_openapi_document() {
    let Some(schemathesis) = schemathesis_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(&dir.path().join("api")).await;
    let schema = format!("{}/v1/openapi.json", api.url);
    let report = fuzz(
        &schemathesis,
        &api,
        dir.path(),
        &[&schema],
        include_str!("schemathesis/openapi.toml"),
        "id",
    )
    .await;
    for operation in ckrv_api::router::operations() {
        // Left out: logout (openapi.toml says why), and the document itself, which
        // schemathesis reads rather than tests.
        if matches!(operation.path, "/v1/auth/logout" | "/v1/openapi.json") {
            continue;
        }
        let case = format!(
            "<testcase name=\"{} {}\"",
            operation.method.as_str().to_uppercase(),
            operation.path
        );
        assert!(report.contains(&case), "{case} was not tested:\n{report}");
    }
}

fn schemathesis_or_skip() -> Option<PathBuf> {
    let found = schemathesis();
    if found.is_none() {
        ckrv_test_support::skip_unless_required(
            REQUIRED_ENV,
            "schemathesis is not installed",
            "pip install schemathesis, or set CKRV_SCHEMATHESIS",
        );
    }
    found
}

/// Seeds `api` (see [`seed`]) and runs schemathesis with `target` (the schema and its options)
/// and `config`, the job ids offered for the path parameter `job_param`. No worker ever starts
/// (the recording dispatcher runs nothing, as --external-workers), so the repository URLs
/// schemathesis invents are never cloned. Asserts it found nothing; returns its JUnit report.
async fn fuzz(
    schemathesis: &Path,
    api: &TestApi,
    dir: &Path,
    target: &[&str],
    config: &str,
    job_param: &str,
) -> String {
    let (token, job_ids) = seed(api).await;
    let run_dir = dir.join("schemathesis");
    std::fs::create_dir_all(&run_dir).unwrap();
    let ids: Vec<String> = job_ids.iter().map(|id| format!("\"{id}\"")).collect();
    let config = format!(
        "headers = {{ Authorization = \"Bearer ${{CKRV_SCHEMATHESIS_TOKEN}}\" }}\n\n{config}\n\
         [dictionaries.jobs]\nvalues = [{}]\n\n\
         [dictionaries.credentials]\nvalues = [\"github-work\"]\n\n\
         [parameters]\n\
         \"path.{job_param}\" = {{ dictionary = \"jobs\", probability = 0.5 }}\n\
         \"path.name\" = {{ dictionary = \"credentials\", probability = 0.5 }}\n",
        ids.join(", ")
    );
    let config_path = run_dir.join("schemathesis.toml");
    std::fs::write(&config_path, config).unwrap();
    let junit = run_dir.join("junit.xml");
    let seed = std::env::var("CKRV_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let examples = std::env::var("CKRV_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "100".into());
    let output = tokio::process::Command::new(schemathesis)
        .current_dir(&run_dir)
        .env("CKRV_SCHEMATHESIS_TOKEN", &token)
        .env(
            "SCHEMATHESIS_HOOKS",
            Path::new(MANIFEST_DIR).join("tests/schemathesis/hooks.py"),
        )
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .args(target)
        .args(["--seed", &seed, "--max-examples", &examples])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", schemathesis.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.contains(&token) && !stderr.contains(&token),
        "schemathesis printed the token"
    );
    assert!(
        output.status.success(),
        "schemathesis found problems (seed {seed}):\n{stdout}\n{stderr}"
    );
    let report = std::fs::read_to_string(&junit).unwrap();
    assert!(
        report.contains("failures=\"0\"") && report.contains("errors=\"0\""),
        "{report}"
    );
    println!(
        "{}",
        stdout
            .lines()
            .skip_while(|l| !l.contains("SUMMARY"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    report
}
