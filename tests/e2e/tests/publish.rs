//! Publishing through the real binaries (docs/publish.md): a job run with `--publish` pushes
//! its branch over git smart HTTP to a real git server (`git http-backend`) on loopback with
//! the account's stored token, and opens its pull request through a loopback stand-in of the
//! GitHub (and GitLab) REST API that checks the requests as the forges document them. A push
//! the forge refuses fails the job with the forge's reason and leaves the change pullable.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ckrv_e2e::{Api, Cli, Developer, git, repository_root};
use ckrv_test_support::Forge;

/// Not a real token: one a scan can find anywhere it should not be.
const TOKEN: &str = "ghp_e2ePublishToken0123456789abcdefABCD";

/// The default pipeline, its `publish` stage allowed to call the forge stand-in.
fn pipeline_for(forge: &Forge, dir: &Path) -> String {
    let default =
        std::fs::read_to_string(repository_root().join("orchestrator/pipeline.toml")).unwrap();
    let pipeline = default.replace(
        r#"allowed_hosts = ["https://api.github.com", "https://gitlab.com"]"#,
        &format!(r#"allowed_hosts = ["{}"]"#, forge.url()),
    );
    assert_ne!(
        pipeline, default,
        "the default pipeline's publish stage moved"
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, pipeline).unwrap();
    path.display().to_string()
}

/// Stores the forge's token as credential `name` for `host` (github, gitlab).
fn add_credential(cli: &Cli, cwd: &Path, name: &str, host: &str) {
    let added = cli.add_credential(cwd, name, host, TOKEN);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
}

/// Runs a spec appending `line` to README.md with `extra` flags; the finished job.
fn publish_job(
    dev: &Developer,
    repo_url: &str,
    title: &str,
    line: &str,
    extra: &[&str],
) -> serde_json::Value {
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    let spec = format!("specs/{}.md", title.to_lowercase().replace(' ', "-"));
    std::fs::write(
        dev.clone.join(&spec),
        ckrv_e2e::script_spec(title, &format!("echo '{line}' >> README.md")),
    )
    .unwrap();
    let mut args = vec!["--spec", &spec, "--repo", repo_url, "--base-branch", "main"];
    args.extend_from_slice(extra);
    finished_run(dev, &args)
}

#[test]
fn a_job_pushes_its_branch_and_opens_a_pull_request_and_a_refused_push_keeps_the_change() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let forge = Forge::start(&root.join("forge"), TOKEN);
    let repo_url = forge.create_repo("acme", "app", &[("README.md", "# App\n")]);
    let api_log = root.join("api.log");
    let pipeline = pipeline_for(&forge, root);
    let api = Api::start_logging(
        &root.join("api"),
        &["--allow-local-repos", "--pipeline", &pipeline],
        &api_log,
    );
    // The developer's clone, straight from the server's directory (not through the service).
    let bare = root.join("forge/acme/app.git");
    let dev = Developer::new(&api, root, "dev@example.com", &bare.display().to_string());
    add_credential(&dev.cli, &dev.clone, "forge", "github");

    // Publishing needs the credential it pushes with; a made-up mode is a usage error.
    let usage = dev.cli.run(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            "README.md",
            "--repo",
            &repo_url,
            "--publish",
            "sometimes",
        ],
    );
    let err = String::from_utf8_lossy(&usage.stderr);
    assert_eq!(usage.status.code(), Some(2), "{err}");
    assert!(err.contains("`sometimes` is not a way to publish"), "{err}");
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    std::fs::write(
        dev.clone.join("specs/x.md"),
        ckrv_e2e::script_spec("X", "true"),
    )
    .unwrap();
    let err = dev.cli.fails(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            "specs/x.md",
            "--repo",
            &repo_url,
            "--publish",
            "pr",
        ],
    );
    assert!(err.contains("with the job's git credential"), "{err}");

    // A pull request on GitHub (Enterprise's layout: the API on the repository's host).
    let job = publish_job(
        &dev,
        &repo_url,
        "Greet the reader",
        "Hello from the service",
        &["--credential", "forge", "--publish", "pr"],
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["id"].as_str().unwrap();
    let publication = &job["publication"];
    let branch = job["feature_branch_name"].as_str().unwrap();
    assert_eq!(publication["mode"], "pr", "{job}");
    assert_eq!(publication["branch"], branch);
    let commit = publication["commit"].as_str().unwrap();
    assert_eq!(forge.branch("acme", "app", branch).as_deref(), Some(commit));
    // The pushed commit holds the change, on top of the base, by the step's author.
    let shown = git(&bare, &["show", &format!("{commit}:README.md")]);
    assert_eq!(shown, "# App\nHello from the service\n");
    let parent = git(&bare, &["rev-parse", &format!("{commit}^")]);
    assert_eq!(parent.trim(), git(&bare, &["rev-parse", "main"]).trim());
    let message = git(&bare, &["log", "-1", "--format=%an <%ae>%n%B", commit]);
    assert!(
        message.starts_with("Chakravarti <ckrv@noreply.invalid>\nGreet the reader\n"),
        "{message}"
    );

    let opened = forge.opened();
    assert_eq!(opened.len(), 1, "{opened:?}");
    let url = format!("{}/acme/app/pull/1", forge.url());
    assert_eq!(opened[0]["html_url"], url.as_str());
    assert_eq!(publication["pull_request_url"], url.as_str());
    assert_eq!(opened[0]["title"], "Greet the reader");
    assert_eq!(opened[0]["draft"], false);
    assert_eq!(opened[0]["head"]["ref"], branch);
    assert_eq!(opened[0]["base"]["ref"], "main");
    let body = opened[0]["body"].as_str().unwrap();
    assert!(
        body.contains("1 file changed") && body.contains("`README.md` (+1 -0)"),
        "{body}"
    );
    assert!(body.contains(&format!("/v1/jobs/{id}")), "{body}");
    // As GitHub documents the request, with the token the host added (the step never had it).
    let request = &forge.api_requests()[0];
    assert_eq!(request.path(), "/api/v3/repos/acme/app/pulls");
    assert_eq!(request.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(request.header("accept"), "application/vnd.github+json");
    assert_eq!(request.header("x-github-api-version"), "2022-11-28");
    assert!(!forge.git_authorizations().is_empty());

    let status = dev.cli.ok(&dev.clone, &["status", id]);
    assert!(
        status.contains(&format!("Published: {branch} (commit {})", &commit[..12])),
        "{status}"
    );
    assert!(status.contains(&format!("Pull request: {url}")), "{status}");
    let log = dev.cli.ok(&dev.clone, &["logs", id]);
    assert!(
        log.contains(&format!("publish: published {branch} as {url}")),
        "{log}"
    );

    // A merge request on GitLab, as a draft.
    let lab_url = forge.create_repo("acme", "lab", &[("README.md", "# Lab\n")]);
    add_credential(&dev.cli, &dev.clone, "lab", "gitlab");
    let lab = publish_job(
        &dev,
        &lab_url,
        "Draft for review",
        "A draft",
        &["--credential", "lab", "--publish", "draft-pr"],
    );
    assert_eq!(lab["state"], "succeeded", "{lab}");
    let opened = forge.opened();
    let merge_request = opened.last().unwrap();
    assert_eq!(merge_request["title"], "Draft: Draft for review");
    assert_eq!(merge_request["draft"], true);
    assert_eq!(
        lab["publication"]["pull_request_url"],
        merge_request["web_url"]
    );
    let request = forge.api_requests().last().unwrap().clone();
    assert_eq!(request.path(), "/api/v4/projects/acme%2Flab/merge_requests");

    // A protected branch: the push is refused, the job fails in the forge's words, and the
    // change it made is still pulled.
    forge.protect("acme", "app", "ckrv/");
    let refused = publish_job(
        &dev,
        &repo_url,
        "Refused",
        "Refused but kept",
        &["--credential", "forge", "--publish", "branch"],
    );
    assert_eq!(refused["state"], "failed", "{refused}");
    let error = refused["error_message"].as_str().unwrap();
    assert!(
        error.contains("refused the push")
            && error.contains("GH006: Protected branch update failed"),
        "{error}"
    );
    assert!(refused["publication"].is_null(), "{refused}");
    let refused_id = refused["id"].as_str().unwrap();
    dev.cli.ok(&dev.clone, &["pull", refused_id, "--yes"]);
    let readme = std::fs::read_to_string(dev.clone.join("README.md")).unwrap();
    assert!(readme.contains("Refused but kept"), "{readme}");
    assert_eq!(
        forge.opened().len(),
        2,
        "no pull request for a refused push"
    );

    drop(api);
    for (what, text) in [
        ("job log", &log),
        ("job", &job.to_string()),
        ("status", &status),
    ] {
        assert!(!text.contains(TOKEN), "the {what} shows the token");
    }
    assert!(!std::fs::read_to_string(&api_log).unwrap().contains(TOKEN));
    assert_eq!(
        files_containing_token(&root.join("api")),
        Vec::<String>::new()
    );
    assert_eq!(files_containing_token(&dev.clone), Vec::<String>::new());
}

fn files_containing_token(dir: &Path) -> Vec<String> {
    ckrv_e2e::files_containing(dir, TOKEN)
}

/// Runs `ckrv run --cloud` with `args` in the developer's clone; the finished job.
fn finished_run(dev: &Developer, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["run", "--cloud", "--json"];
    all.extend_from_slice(args);
    let out = dev.cli.ok(&dev.clone, &all);
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    dev.cli.finished(&dev.clone, job["id"].as_str().unwrap())
}

#[test]
fn a_chain_of_follow_ups_starts_from_each_change_updates_one_pull_request_and_pulls_whole() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let forge = Forge::start(&root.join("forge"), TOKEN);
    let repo_url = forge.create_repo("acme", "chain", &[("README.md", "# Chain\n")]);
    let pipeline = pipeline_for(&forge, root);
    let api = Api::start_with(
        &root.join("api"),
        &["--allow-local-repos", "--pipeline", &pipeline],
    );
    let bare = root.join("forge/acme/chain.git");
    let dev = Developer::new(&api, root, "dev@example.com", &bare.display().to_string());
    add_credential(&dev.cli, &dev.clone, "forge", "github");
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    std::fs::write(
        dev.clone.join("specs/one.md"),
        ckrv_e2e::script_spec("Count", "echo one >> notes.txt"),
    )
    .unwrap();
    std::fs::write(
        dev.clone.join("specs/three.md"),
        ckrv_e2e::script_spec("Count on", "echo three >> notes.txt"),
    )
    .unwrap();

    let first = finished_run(
        &dev,
        &[
            "--spec",
            "specs/one.md",
            "--repo",
            &repo_url,
            "--base-branch",
            "main",
            "--credential",
            "forge",
            "--publish",
            "pr",
        ],
    );
    assert_eq!(first["state"], "succeeded", "{first}");
    let first_id = first["id"].as_str().unwrap();
    let branch = first["publication"]["branch"].as_str().unwrap().to_string();
    let pull_request = first["publication"]["pull_request_url"].clone();

    // Feedback: the same spec with the message after it, from the first job's change (the
    // script appends again to what the first one wrote), on its repository and credential.
    let second = finished_run(
        &dev,
        &[
            "--continue",
            &first_id[..8],
            "--message",
            "once more",
            "--publish",
            "pr",
        ],
    );
    assert_eq!(second["state"], "succeeded", "{second}");
    let second_id = second["id"].as_str().unwrap();
    assert_eq!(second["parent_id"], first_id);
    assert_eq!(second["git_repo_url"], repo_url.as_str());
    // Its push updated the first job's branch and pull request.
    assert_eq!(second["publication"]["branch"], branch.as_str());
    assert_eq!(second["publication"]["pull_request_url"], pull_request);

    // A spec of its own.
    let third = finished_run(
        &dev,
        &[
            "--continue",
            second_id,
            "--spec",
            "specs/three.md",
            "--publish",
            "pr",
        ],
    );
    assert_eq!(third["state"], "succeeded", "{third}");
    let third_id = third["id"].as_str().unwrap();
    assert_eq!(third["parent_id"], second_id);
    // Each diff is the whole change since the original base.
    assert_eq!(
        third["diff_stats"]["base_commit"],
        first["diff_stats"]["base_commit"]
    );
    let commit = third["publication"]["commit"].as_str().unwrap();
    assert_eq!(
        forge.branch("acme", "chain", &branch).as_deref(),
        Some(commit)
    );
    assert_eq!(
        git(&bare, &["show", &format!("{commit}:notes.txt")]),
        "one\none\nthree\n"
    );
    assert_eq!(
        git(&bare, &["rev-parse", &format!("{commit}^")]).trim(),
        git(&bare, &["rev-parse", "main"]).trim(),
        "one commit on the base, the chain's whole change"
    );
    assert_eq!(forge.opened().len(), 1, "one pull request for the chain");

    // The links, both ways.
    let status = dev.cli.ok(&dev.clone, &["status", second_id]);
    assert!(
        status.contains(&format!("Follows up: {}", &first_id[..8])),
        "{status}"
    );
    assert!(
        status.contains(&format!("Followed up by: {}", &third_id[..8])),
        "{status}"
    );
    let log = dev.cli.ok(&dev.clone, &["logs", third_id]);
    assert!(
        log.contains(&format!("Starting from job {second_id}'s change")),
        "{log}"
    );

    // Pulling the last gives the whole change.
    dev.cli.ok(&dev.clone, &["pull", third_id, "--yes"]);
    let notes = std::fs::read_to_string(dev.clone.join("notes.txt")).unwrap();
    assert_eq!(notes, "one\none\nthree\n");

    // A follow-up of nothing, or of another repository, is refused.
    let err = dev.cli.fails(
        &dev.clone,
        &["run", "--cloud", "--continue", "abcdef12", "-m", "x"],
    );
    assert!(err.contains("job not found: abcdef12"), "{err}");
    let err = dev.cli.fails(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--continue",
            first_id,
            "-m",
            "x",
            "--repo",
            "http://127.0.0.1:1/o/r.git",
        ],
    );
    assert!(
        err.contains("a follow-up runs on its job's repository"),
        "{err}"
    );
}
