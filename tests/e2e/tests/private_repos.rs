//! A private repository through the real binaries: a git server on loopback that wants HTTP
//! basic authentication, and the seed quickstart's credentials steps: `ckrv cloud credentials
//! add`, `list`, and `ckrv run --cloud … --credential`. The worker clones with it; its bytes then appear in no response, log line,
//! job log, worker log, database file, artifact or pulled change.
#![allow(clippy::unwrap_used)]

use ckrv_e2e::{Api, Developer, StaticServer, create_served_repo, files_containing};

/// Not a real token: one a scan can find anywhere it should not be.
const TOKEN: &str = "ghp_e2ePrivateRepoToken0123456789abcdef";

#[test]
fn a_job_clones_a_private_repository_with_a_stored_token_that_nothing_else_keeps() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
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

    // The seed quickstart's step 2, word for word (the token piped, as at a prompt).
    let added = dev
        .cli
        .add_credential(&dev.clone, "github-work", "github", TOKEN);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&added.stdout).trim(),
        "▌ ✔ Credential 'github-work' saved"
    );
    let list = dev.cli.ok(&dev.clone, &["cloud", "credentials", "list"]);
    assert!(
        list.contains("github-work") && list.contains("github"),
        "{list}"
    );

    // Step 3, word for word but for the spec and the repository.
    std::fs::create_dir_all(dev.clone.join("specs/private")).unwrap();
    let spec = ckrv_e2e::script_spec(
        "Private",
        "echo 'from the service' >> README.md\ngit remote -v",
    );
    std::fs::write(dev.clone.join("specs/private/spec.md"), &spec).unwrap();
    let out = dev.cli.ok(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            "specs/private/spec.md",
            "--repo",
            &repo_url,
            "--base-branch",
            "main",
            "--credential",
            "github-work",
            "--json",
        ],
    );
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
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
    let err = dev.cli.fails(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            "specs/private/spec.md",
            "--repo",
            &repo_url,
            "--credential",
            "nope",
        ],
    );
    assert!(
        err.contains(
            "Credential not found: 'nope'; see your credentials with `ckrv cloud credentials list`"
        ),
        "{err}"
    );
    let list = dev.cli.ok(&dev.clone, &["cloud", "credentials", "list"]);
    assert!(
        !list.contains("never"),
        "the credential's last use is shown: {list}"
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

#[test]
fn a_job_clones_over_ssh_with_a_deploy_key_added_from_its_file() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let key = root.join("deploy_key");
    ckrv_test_support::ssh_keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let Some(sshd) = ckrv_test_support::SshServer::start(&public) else {
        return;
    };
    let served = root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let bare = create_served_repo(&served, "private", &[("README.md", "# Private\n")]);
    let repo_url = sshd.url(&bare);
    let api = Api::start_with(&root.join("api"), &["--allow-local-repos"]);
    let dev = Developer::new(&api, root, "dev@example.com", &bare.display().to_string());

    let key_path = key.to_str().unwrap();
    let out = dev.cli.ok(
        &dev.clone,
        &[
            "cloud",
            "credentials",
            "add",
            "--name",
            "deploy",
            "--host",
            "generic",
            "--type",
            "deploy-key",
            "--from-file",
            key_path,
        ],
    );
    assert_eq!(out.trim(), "▌ ✔ Credential 'deploy' saved");
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    std::fs::write(
        dev.clone.join("specs/ssh.md"),
        ckrv_e2e::script_spec("Over ssh", "echo 'over ssh' >> README.md"),
    )
    .unwrap();
    let out = dev.cli.ok(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            "specs/ssh.md",
            "--repo",
            &repo_url,
            "--base-branch",
            "main",
            "--credential",
            "deploy",
            "--json",
        ],
    );
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let job = dev.cli.finished(&dev.clone, &id);
    assert_eq!(job["state"], "succeeded", "{job}");
    let log = dev.cli.ok(&dev.clone, &["logs", &id]);

    drop(api);
    let private_key = std::fs::read_to_string(&key).unwrap();
    let body = private_key.lines().nth(1).unwrap();
    assert!(!log.contains(body));
    assert_eq!(
        files_containing(&root.join("api"), body),
        Vec::<String>::new()
    );
}
