//! A private repository through the real binaries: a git server on loopback that wants HTTP
//! basic authentication, a personal access token stored with `POST /v1/credentials`, and a job
//! that names it. The worker clones with it; its bytes then appear in no response, log line,
//! job log, worker log, database file, artifact or pulled change.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ckrv_e2e::{Api, Developer, StaticServer, create_served_repo};

/// Not a real token: one a scan can find anywhere it should not be.
const TOKEN: &str = "ghp_e2ePrivateRepoToken0123456789abcdef";

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_job_clones_a_private_repository_with_a_stored_token_that_nothing_else_keeps() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let served = root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    create_served_repo(&served, "private", &[("README.md", "# Private\n")]);
    let server = StaticServer::start_private(&served, "x-access-token", TOKEN);
    let repo_url = format!("http://{}/private.git", server.addr);
    let api_log = root.join("api.log");
    let api = Api::start_logging(&root.join("api"), &["--allow-local-repos"], &api_log);
    // The developer's own clone, made with git's own credentials (not the service's).
    let public = root.join("public-view");
    std::fs::create_dir_all(&public).unwrap();
    create_served_repo(&public, "private", &[("README.md", "# Private\n")]);
    let dev = Developer::new(
        &api,
        root,
        "dev@example.com",
        &public.join("private.git").display().to_string(),
    );

    let (status, saved) = api.send(
        "POST",
        &dev.token,
        "/v1/credentials",
        Some(serde_json::json!({
            "name": "github-work", "provider": "github", "credential_type": "pat", "value": TOKEN,
        })),
    );
    assert_eq!(status, 201, "{saved}");
    let spec = ckrv_e2e::script_spec(
        "Private",
        "echo 'from the service' >> README.md\ngit remote -v",
    );
    let (status, job) = api.send(
        "POST",
        &dev.token,
        "/v1/jobs",
        Some(serde_json::json!({
            "spec_content": spec, "git_repo_url": repo_url, "git_base_branch": "main",
            "git_credential_name": "github-work",
        })),
    );
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = dev.cli.finished(&dev.clone, &id);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(!server.authorizations.lock().unwrap().is_empty());

    let log = dev.cli.ok(&dev.clone, &["logs", &id]);
    assert!(
        log.contains(&format!("origin\t{repo_url} (fetch)")),
        "{log}"
    );
    let pulled = dev.cli.ok(&dev.clone, &["pull", &id, "--yes"]);
    let readme = std::fs::read_to_string(dev.clone.join("README.md")).unwrap();
    assert!(readme.contains("from the service"), "{readme}");

    // A job naming a credential the account does not have is refused with the seed's words.
    let (status, error) = api.send(
        "POST",
        &dev.token,
        "/v1/jobs",
        Some(serde_json::json!({
            "spec_content": spec, "git_repo_url": repo_url, "git_credential_name": "nope",
        })),
    );
    assert_eq!(status, 404);
    assert!(
        error["error_description"].as_str().unwrap().starts_with(
            "Credential not found: 'nope'; see your credentials with `ckrv cloud credentials list`"
        ),
        "{error}"
    );

    drop(api);
    for (what, text) in [
        ("job log", &log),
        ("pull", &pulled),
        ("job", &job.to_string()),
    ] {
        assert!(!text.contains(TOKEN), "the {what} shows the token");
    }
    assert!(!std::fs::read_to_string(&api_log).unwrap().contains(TOKEN));
    // The data directory: SQLite and its WAL, worker logs, artifacts, compiled steps.
    assert_eq!(
        files_containing(&root.join("api"), TOKEN),
        Vec::<String>::new()
    );
    assert_eq!(files_containing(&dev.clone, TOKEN), Vec::<String>::new());
}
