//! A repository's ready-to-work environment through the real binaries (`ckrv`, `ckrv-api`
//! with local workers, `ckrv-orchestrator`, bubblewrap; docs/environments.md): its setup runs
//! once in phase `setup` and is saved as a snapshot in the API's artifact store; the account's
//! next job restores it instead of running setup; another account's job never gets it. With
//! the artifacts on S3 (moto on loopback), the snapshot lives in the bucket. When
//! `CKRV_TEST_POSTGRES` names a PostgreSQL server (`.ci/run`'s second pass), the real-package
//! and S3 tests run their API on a database of their own there.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ckrv_e2e::{Api, Developer, serve_repo};
use ckrv_test_support::TestDatabase;
use ckrv_test_support::package_index::{self, PackageIndex};

const ENVIRONMENT: &str = "setup = \"\"\"
echo preparing
mkdir -p deps && echo \"tool $TOOL_VERSION\" > deps/tool
mkdir -p ~/.tool-cache && echo \"home cache $TOOL_VERSION\" > ~/.tool-cache/index
\"\"\"
key_files = [\"deps.lock\"]
cache = [\"deps/\", \"~/.tool-cache\"]

[env]
TOOL_VERSION = \"1.2\"
";

/// The served repository: a README, the environment, and its key file.
const APP: [(&str, &str); 3] = [
    ("README.md", "# App\n"),
    (".ckrv/environment.toml", ENVIRONMENT),
    ("deps.lock", "v1\n"),
];

const SPEC: &str = "---\nagent: script\nrun: |\n  cat deps/tool ~/.tool-cache/index\n  echo \"done\" >> README.md\n---\n# Use the tool\n";

/// The API's database for a test whose API keeps its data in `data_dir`, and the environment
/// that names it (`DATABASE_URL`, which the operator's commands get too): SQLite there by
/// default, PostgreSQL when `CKRV_TEST_POSTGRES` says so. Hold the database while the API
/// runs; it is dropped with the handle.
fn database(data_dir: &std::path::Path) -> (Arc<TestDatabase>, Vec<(&'static str, String)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = runtime.block_on(TestDatabase::new(data_dir));
    let env = if database.is_postgres() {
        vec![("DATABASE_URL", database.url().to_string())]
    } else {
        Vec::new()
    };
    (database, env)
}

/// Runs [`SPEC`] as `dev`; the finished job's log and `ckrv status` (its diff checked too).
fn job_log(dev: &Developer, api_url: &str, repo_url: &str) -> String {
    job_log_with(dev, api_url, repo_url, &[])
}

/// [`job_log`], `ckrv run` given `extra` flags too.
fn job_log_with(dev: &Developer, api_url: &str, repo_url: &str, extra: &[&str]) -> String {
    let (id, log) = run_spec(dev, repo_url, ("specs/tool.md", SPEC), extra);
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

/// Runs `spec` (its path and text) on `repo_url` as `dev`, `ckrv run` given `extra` flags too;
/// once it succeeded, its id and its log with `ckrv status` after it.
fn run_spec(
    dev: &Developer,
    repo_url: &str,
    (path, spec): (&str, &str),
    extra: &[&str],
) -> (String, String) {
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    std::fs::write(dev.clone.join(path), spec).unwrap();
    let mut args = vec![
        "run",
        "--cloud",
        "--spec",
        path,
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
    (id, format!("{log}\n{status}"))
}

#[test]
fn setup_runs_once_and_the_accounts_next_job_starts_from_its_snapshot() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The sandboxed agent's user passes through to its workspace under the work root.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let (_repos, repo_url) = serve_repo(root, "app", &APP);
    let work = root.join("work");
    let api = Api::start_with(
        &root.join("api"),
        &["--allow-local-repos", "--work-dir", work.to_str().unwrap()],
    );
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
        first.contains("tool 1.2") && first.contains("home cache 1.2"),
        "the agent found what setup made, in the workspace and its home: {first}"
    );
    let stored: Vec<_> = walk(&api.data_dir)
        .into_iter()
        .filter(|p| p.contains("/snapshots/") && p.ends_with(".tar.zst"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");

    // The worker that ran it left an unpacked copy, made before it told the job's end.
    let copies: Vec<_> = std::fs::read_dir(work.join("ckrv-snapshot-cache"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let second = job_log(&dev, &api.url, &repo_url);
    assert!(second.contains("; setup not run"), "{second}");
    assert!(
        second.contains("restored from this worker's unpacked copy"),
        "{second}"
    );
    assert!(
        second.contains("Setup: snapshot hit ("),
        "ckrv status says so: {second}"
    );
    assert!(!second.contains("preparing"), "{second}");
    assert!(
        second.contains("tool 1.2") && second.contains("home cache 1.2"),
        "{second}"
    );

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

    // `ckrv env list` shows the account's one snapshot (the fresh setup replaced it under the
    // same key); `ckrv env rm` drops it, and the next job runs setup again.
    let listed: serde_json::Value =
        serde_json::from_str(&dev.cli.ok(&dev.clone, &["env", "list", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["repository"], repo_url.as_str());
    let key = listed[0]["key"].as_str().unwrap().to_string();
    let table = dev.cli.ok(&dev.clone, &["env", "list"]);
    assert!(
        table.contains(&key[..12]) && table.contains(&repo_url) && table.contains(" MB"),
        "{table}"
    );
    let dropped = dev.cli.ok(&dev.clone, &["env", "rm", &key[..12]]);
    assert!(dropped.contains("dropped"), "{dropped}");
    assert!(
        !walk(&api.data_dir).iter().any(|p| p.contains(&key)),
        "the archive is gone too"
    );
    let none = dev.cli.ok(&dev.clone, &["env", "list"]);
    assert!(none.contains("No snapshots"), "{none}");
    let gone = dev.cli.run(&dev.clone, &["env", "rm", &key[..12]]);
    let err = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(gone.status.code(), Some(1), "{err}");
    assert!(err.contains("no snapshot"), "{err}");
    let again = job_log(&dev, &api.url, &repo_url);
    assert!(
        again.contains("No snapshot ") && again.contains("preparing"),
        "{again}"
    );

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
    let (database, database_env) = database(&root.join("api"));
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
    ];
    env.extend(database_env.iter().map(|(k, v)| (*k, v.as_str())));
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
        &env,
    );
    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);
    // On PostgreSQL when asked: no SQLite file beside the API's data.
    assert_eq!(root.join("api/ckrv.db").exists(), !database.is_postgres());
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

/// A repository whose setup makes a virtualenv and installs a package with a real `pip` from
/// an index on loopback (the operator's mirror: `--egress-internal`), allowed to setup alone
/// (`--setup-egress-allow`), with `requirements.lock` its key file.
fn pip_repository(index: &PackageIndex) -> [(String, String); 3] {
    let environment = format!(
        "setup = \"\"\"
python3 -m venv .venv
.venv/bin/pip install --disable-pip-version-check --no-input --index-url {url} {package}=={version}
python3 -c 'import urllib.request; urllib.request.urlopen(\\\"http://elsewhere.localhost:{port}/\\\")' 2>/dev/null || echo elsewhere-refused
\"\"\"
key_files = [\"requirements.lock\"]
cache = [\".venv/\"]
egress = \"127.0.0.1:{port}\"
",
        url = index.url(),
        port = index.port,
        package = package_index::PACKAGE,
        version = package_index::VERSION,
    );
    [
        ("README.md".into(), "# App\n".into()),
        (".ckrv/environment.toml".into(), environment),
        (
            "requirements.lock".into(),
            format!("{}=={}\n", package_index::PACKAGE, package_index::VERSION),
        ),
    ]
}

const PIP_SPEC: &str = "---\nagent: script\nrun: |\n  .venv/bin/python -c 'import ckrv_demo; print(ckrv_demo.GREETING)'\n  echo \"done\" >> README.md\n---\n# Use the package\n";

/// Runs [`PIP_SPEC`] as `dev`: the finished job's log and `ckrv status`.
fn pip_job(dev: &Developer, repo_url: &str) -> String {
    run_spec(dev, repo_url, ("specs/pip.md", PIP_SPEC), &[]).1
}

#[test]
fn setup_installs_real_packages_through_the_egress_proxy_once_and_the_snapshot_holds_them() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let Some(index) = PackageIndex::start(root) else {
        return;
    };
    let files = pip_repository(&index);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let (_repos, repo_url) = serve_repo(root, "py", &files);
    let mirror = format!("127.0.0.1:{}", index.port);
    let (database, database_env) = database(&root.join("api"));
    let env: Vec<(&str, &str)> = database_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Its own work root, so its workers' copies of snapshots are its own.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let work = root.join("work");
    let api = Api::start_in_env(
        &root.join("api"),
        "127.0.0.1:0",
        &[
            "--allow-local-repos",
            "--setup-egress-allow",
            &mirror,
            "--egress-internal",
            &mirror,
            "--work-dir",
            work.to_str().unwrap(),
        ],
        &env,
    );
    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);
    // On PostgreSQL when asked: no SQLite file beside the API's data.
    assert_eq!(root.join("api/ckrv.db").exists(), !database.is_postgres());

    // The first job runs setup: pip downloads the wheel through the egress proxy, and what
    // setup tried beyond its list was refused and logged.
    let first = pip_job(&dev, &repo_url);
    for said in [
        "Successfully installed ckrv-demo-1.0",
        "elsewhere-refused",
        "elsewhere.localhost",
        package_index::GREETING,
        "), snapshot saved (",
    ] {
        assert!(first.contains(said), "{said}: {first}");
    }
    assert_eq!(index.downloads(), 1);

    // The next one restores the snapshot: no setup, no download, and the agent imports it.
    let second = pip_job(&dev, &repo_url);
    assert!(second.contains("; setup not run"), "{second}");
    assert!(!second.contains("Successfully installed"), "{second}");
    assert!(second.contains(package_index::GREETING), "{second}");
    assert_eq!(index.downloads(), 1, "the snapshot held the package");

    // A changed lockfile is a miss: setup runs again and saves under a new key.
    let src = root.join("served/py-src");
    std::fs::write(
        src.join("requirements.lock"),
        "ckrv-demo==1.0\n# pinned again\n",
    )
    .unwrap();
    ckrv_test_support::git(&src, &["commit", "-qam", "lockfile changed"]);
    let bare = root.join("served/py.git");
    ckrv_test_support::git(&src, &["push", "-q", bare.to_str().unwrap(), "main"]);
    ckrv_test_support::git(&bare, &["update-server-info"]);
    let third = pip_job(&dev, &repo_url);
    assert!(
        third.contains("No snapshot ") && third.contains("Successfully installed"),
        "{third}"
    );
    assert_eq!(index.downloads(), 2);

    // A damaged snapshot is not used: setup runs and saves it anew. (A worker holding its own
    // copy of the snapshot's bytes would not read the archive at all: this one holds none.)
    std::fs::remove_dir_all(work.join("ckrv-snapshot-cache")).unwrap();
    let archives: Vec<String> = walk(&api.data_dir)
        .into_iter()
        .filter(|p| p.contains("/snapshots/") && p.ends_with(".tar.zst"))
        .collect();
    assert_eq!(archives.len(), 2, "{archives:?}");
    for archive in &archives {
        let mut bytes = std::fs::read(archive).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(archive, bytes).unwrap();
    }
    let fourth = pip_job(&dev, &repo_url);
    assert!(fourth.contains("not used ("), "{fourth}");
    assert!(fourth.contains("Successfully installed"), "{fourth}");
    assert!(fourth.contains(package_index::GREETING), "{fourth}");
    assert_eq!(index.downloads(), 3);
}
