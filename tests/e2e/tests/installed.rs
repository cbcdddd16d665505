//! The README's Quickstart word for word with the programs installed, as `cargo install --root
//! PREFIX` lays them out (`PREFIX/bin/ckrv`, `ckrv-api`, `ckrv-orchestrator`): `ckrv-api serve`
//! without `--orchestrator` finds its worker beside itself, refuses to start when there is none,
//! and a worker that cannot start costs one job, not one per retry. And `examples/requirements.sh`,
//! which the README runs first, names what a machine lacks.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ckrv_e2e::{Api, Cli, binary, git, script_spec, serve_app_repo, wait_for};
use ckrv_test_support::{Browser, PASSWORD};

/// The programs `cargo install --root PREFIX` puts in `PREFIX/bin`, copied from this build.
fn install(prefix: &Path, programs: &[&str]) -> PathBuf {
    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for program in programs {
        std::fs::copy(binary(program), bin.join(program)).unwrap();
    }
    bin
}

/// A user's `PATH` with the install directory on it, and the system's tools.
fn user_path(bin: &Path) -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display())
}

/// `ckrv-api users add EMAIL --admin --password-stdin --data-dir DIR`, as the README says.
fn add_admin(bin: &Path, data_dir: &Path, email: &str) {
    let mut child = Command::new(bin.join("ckrv-api"))
        .args([
            "users",
            "add",
            email,
            "--admin",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "users add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ckrv cloud login`, approved on the activation page as the person would.
fn login(cli: &Cli, cwd: &Path, email: &str) -> String {
    let mut child = cli
        .command(cwd, &["cloud", "login"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = String::new();
    let code = loop {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(read > 0, "login printed no code: {printed}");
        printed.push_str(&line);
        if let Some((_, code)) = line.split_once("Enter code: ") {
            break code.trim().to_string();
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, page) = runtime.block_on(async {
        let browser = Browser::new(&cli.api_url);
        browser.sign_in(email, PASSWORD).await;
        browser.decide(&code, "approve").await
    });
    assert!(status.is_success(), "approving the code: {page}");
    std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

#[test]
fn the_readme_quickstart_runs_with_the_programs_installed_in_one_directory() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bin = install(
        &root.join("prefix"),
        &["ckrv", "ckrv-api", "ckrv-orchestrator"],
    );
    let data = root.join("ckrv-api");
    add_admin(&bin, &data, "you@example.com");
    // `serve` as the README starts it, from a shell whose PATH has the install directory;
    // its workers get a cleared PATH, so it must find ckrv-orchestrator itself.
    let api = Api::start_installed(
        &bin.join("ckrv-api"),
        &data,
        &["--allow-local-repos"],
        &user_path(&bin),
    );
    let cli = Cli::new(api.url.clone(), root.join("home")).using(bin.join("ckrv"));

    let (_repos, repo_url) = serve_app_repo(root);
    let work = root.join("work");
    git(root, &["clone", "-q", &repo_url, work.to_str().unwrap()]);
    std::fs::create_dir_all(work.join("specs/greeting")).unwrap();
    // The agent takes a few seconds, long enough to be seen at work.
    let script = "echo \"Implementing...\"\nsleep 4\nmkdir -p src\nprintf 'pub fn greet() -> &'\"'\"'static str {\\n    \"hello\"\\n}\\n' > src/greet.rs\n";
    std::fs::write(
        work.join("specs/greeting/spec.md"),
        script_spec("Greeting", script),
    )
    .unwrap();

    let printed = login(&cli, &work, "you@example.com");
    assert!(
        printed.contains("Authenticated as you@example.com"),
        "{printed}"
    );

    let dispatched = cli.ok(
        &work,
        &[
            "run",
            "--cloud",
            "--provider",
            "chakravarti",
            "--spec",
            "specs/greeting/spec.md",
            "--repo",
            &repo_url,
            "--base-branch",
            "main",
        ],
    );
    assert!(dispatched.contains("▌ ✔ Job Dispatched"), "{dispatched}");
    let id = dispatched
        .lines()
        .find_map(|l| l.strip_prefix("▌ Job ID: "))
        .unwrap()
        .trim()
        .to_string();
    let short = &id[..8];

    // While the agent works, status says so in the quickstart's words; --json keeps `agent`.
    let json = wait_for("the agent's phase", Duration::from_secs(120), || {
        let job: serde_json::Value =
            serde_json::from_str(&cli.ok(&work, &["status", short, "--json"])).unwrap();
        assert!(
            matches!(job["status"].as_str(), Some("pending" | "running")),
            "the job ended before its agent was seen at work: {job}"
        );
        (job["phase"] == "agent").then_some(job)
    });
    assert_eq!(json["agent"], "script", "{json}");
    let status = cli.ok(&work, &["status", short]);
    assert!(
        status.contains("▌ Phase: executing (agent: script)"),
        "{status}"
    );

    let logs = cli.ok(&work, &["logs", short, "--follow"]);
    assert!(logs.contains("script: Implementing..."), "{logs}");
    let finished: serde_json::Value =
        serde_json::from_str(&cli.ok(&work, &["status", short, "--json"])).unwrap();
    assert_eq!(finished["status"], "succeeded", "{finished}\n{logs}");

    let pulled = cli.ok(&work, &["pull", short]);
    assert!(pulled.contains("src/greet.rs"), "{pulled}");
    assert!(
        std::fs::read_to_string(work.join("src/greet.rs"))
            .unwrap()
            .contains("hello")
    );
}

#[test]
fn serve_without_a_worker_program_refuses_to_start_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // ckrv-api alone, and a PATH without ckrv-orchestrator on it.
    let bin = install(&root.join("prefix"), &["ckrv-api"]);
    let serve = |flags: &[&str]| {
        Command::new(bin.join("ckrv-api"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(root.join("data"))
            .args(flags)
            .env("PATH", "/usr/bin:/bin")
            .env_remove("CKRV_ORCHESTRATOR")
            .output()
            .unwrap()
    };
    let out = serve(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--orchestrator")
            && err.contains("ckrv-orchestrator")
            && err.contains(&bin.join("ckrv-api").display().to_string())
            && err.contains("cargo install --path orchestrator"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));

    // A named program that is not there, or not a program, is refused the same way.
    let notes = root.join("notes.txt");
    std::fs::write(&notes, "not a program").unwrap();
    for given in [root.join("missing"), notes] {
        let out = serve(&["--orchestrator", given.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--orchestrator") && err.contains("is not an executable file"),
            "{err}"
        );
    }

    // External workers need no local program: it starts (and prints its URL).
    let _api = Api::start_installed(
        &bin.join("ckrv-api"),
        &root.join("data"),
        &["--external-workers"],
        "/usr/bin:/bin",
    );
}

#[test]
fn a_worker_that_cannot_start_costs_one_job_and_ckrv_run_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A worker program that is there when serve starts and gone when the job comes.
    let bin = install(&root.join("prefix"), &["ckrv-api", "ckrv-orchestrator"]);
    let data = root.join("data");
    let api = Api::start_installed(
        &bin.join("ckrv-api"),
        &data,
        &["--allow-local-repos"],
        "/usr/bin:/bin",
    );
    std::fs::remove_file(bin.join("ckrv-orchestrator")).unwrap();
    api.add_user("dev@example.com", PASSWORD);
    let cli = Cli::new(api.url.clone(), root.join("home"));
    let (_repos, repo_url) = serve_app_repo(root);
    let work = root.join("work");
    git(root, &["clone", "-q", &repo_url, work.to_str().unwrap()]);
    std::fs::write(work.join("spec.md"), script_spec("Task", "echo hi")).unwrap();
    cli.login_with_token(&work, &api.token("dev@example.com"));

    let out = cli.run(&work, &["run", "--cloud", "--spec", "spec.md"]);
    assert_eq!(out.status.code(), Some(1));
    let printed = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("Job ID: "), "{printed}");
    assert!(
        err.contains("failed at once") && err.contains("could not start a worker"),
        "{err}"
    );
    let jobs: serde_json::Value =
        serde_json::from_str(&cli.ok(&work, &["list", "--json"])).unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "one job: {jobs}");
    let me: serde_json::Value =
        serde_json::from_str(&cli.ok(&work, &["cloud", "whoami", "--json"])).unwrap();
    assert_eq!(me["job_quota_remaining"], 99, "one quota unit: {me}");
}

/// `examples/requirements.sh --check` as a user runs it, on the given `PATH`.
fn check_requirements(path: &str) -> (Option<i32>, String) {
    let out = Command::new("bash")
        .arg(ckrv_e2e::repository_root().join("examples/requirements.sh"))
        .arg("--check")
        .env("PATH", path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A directory of links to every program on this machine's `PATH` but `hidden`: the machine as it
/// would be without that program installed.
fn path_without(root: &Path, hidden: &str) -> String {
    let dir = root.join(format!("path-without-{hidden}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    for entry in std::env::split_paths(&path).filter_map(|dir| std::fs::read_dir(dir).ok()) {
        for program in entry.flatten() {
            let name = program.file_name();
            if name != hidden && !dir.join(&name).exists() {
                std::os::unix::fs::symlink(program.path(), dir.join(&name)).unwrap();
            }
        }
    }
    dir.display().to_string()
}

#[test]
fn the_requirements_check_names_a_missing_sandbox_and_the_command_that_installs_it() {
    let tmp = tempfile::tempdir().unwrap();
    if ["/usr/sbin/bwrap", "/sbin/bwrap"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        return; // it would be found off the PATH; the check below cannot hide it
    }
    let (code, err) = check_requirements(&path_without(tmp.path(), "bwrap"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("missing bwrap"), "{err}");
    if Path::new("/usr/bin/apt-get").exists() {
        assert!(err.contains("apt-get install -y -qq bubblewrap"), "{err}");
    }
}

#[test]
fn the_requirements_check_refuses_a_bubblewrap_that_cannot_bound_the_agents_tmp() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let real = ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    // bubblewrap 0.6.1 as Ubuntu 22.04 ships it: it makes sandboxes, but has no `--size`.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    let shim = old.join("bwrap");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  --help) echo 'usage: bwrap [OPTIONS...] [--] COMMAND'; echo '    --tmpfs DEST'; exit 0 ;;\n  --version) echo 'bubblewrap 0.6.1'; exit 0 ;;\nesac\nexec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        old.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (code, err) = check_requirements(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bubblewrap 0.6.1 is older than 0.8.0") && err.contains("/tmp"),
        "{err}"
    );

    // The real one passes that check.
    let (_, err) = check_requirements(&std::env::var("PATH").unwrap_or_default());
    assert!(!err.contains("older than 0.8.0"), "{err}");
}
