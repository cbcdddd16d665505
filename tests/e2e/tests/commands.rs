//! The job commands through the real binaries against a real API and worker: `list`,
//! `cancel`, `wait` and its exit statuses, `logs` with `--tail`, `--since` and `--follow`, the
//! pull modes, and completions.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ckrv_e2e::{Api, Developer, git, serve_app_repo, wait_for};

fn status_of(dev: &Developer, args: &[&str]) -> (Option<i32>, String, String) {
    let out = dev.cli.run(&dev.clone, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn list_cancel_wait_and_logs_work_as_documented() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_repos, url) = serve_app_repo(tmp.path());
    let api = Api::start(&tmp.path().join("api"));
    let dev = Developer::new(&api, tmp.path(), "dev@example.com", &url);

    let good = dev.dispatch(&url, "echo one\necho two\necho three");
    let (code, out, err) = status_of(&dev, &["wait", &good]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Status: succeeded"), "{out}");

    let bad = dev.dispatch(&url, "echo failing\nexit 3");
    let (code, out, _) = status_of(&dev, &["wait", &bad, "--json"]);
    assert_eq!(code, Some(2), "failed exits 2: {out}");
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["state"], "failed");

    let slow = dev.dispatch(&url, "sleep 120");
    // While it runs, status estimates its end from the account's finished jobs.
    let status = dev.cli.ok(&dev.clone, &["status", &slow]);
    assert!(status.contains("▌ ETA: "), "{status}");
    let (code, _, err) = status_of(&dev, &["wait", &slow, "--timeout", "1s"]);
    assert_eq!(code, Some(5), "gave up exits 5: {err}");
    assert!(err.contains("still"), "{err}");
    let cancelled = dev.cli.ok(&dev.clone, &["cancel", &slow[..8]]);
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let (code, _, _) = status_of(&dev, &["wait", &slow]);
    assert_eq!(code, Some(4), "cancelled exits 4");
    let err = dev.cli.fails(&dev.clone, &["cancel", &slow]);
    assert!(err.contains("already ended"), "{err}");

    // Newest first; filtered by status; limited.
    let listed: serde_json::Value =
        serde_json::from_str(&dev.cli.ok(&dev.clone, &["list", "--json"])).unwrap();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [slow.as_str(), bad.as_str(), good.as_str()]);
    let failed: serde_json::Value = serde_json::from_str(
        &dev.cli
            .ok(&dev.clone, &["list", "--status", "succeeded", "--json"]),
    )
    .unwrap();
    assert_eq!(failed["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(failed["jobs"][0]["id"], good.as_str());
    let limited: serde_json::Value =
        serde_json::from_str(&dev.cli.ok(&dev.clone, &["list", "--limit", "1", "--json"])).unwrap();
    assert_eq!(limited["jobs"].as_array().unwrap().len(), 1);
    let table = dev.cli.ok(&dev.clone, &["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&slow[..8]) && lines[1].contains("cancelled"),
        "{table}"
    );
    assert!(lines[3].contains("succeeded"), "{table}");

    // --tail and --since.
    let full = dev.cli.ok(&dev.clone, &["logs", &good]);
    let full: Vec<&str> = full.lines().collect();
    assert!(full.len() > 3, "{full:?}");
    let tail = dev.cli.ok(&dev.clone, &["logs", &good, "--tail", "2"]);
    assert_eq!(tail.lines().collect::<Vec<_>>(), full[full.len() - 2..]);
    let recent = dev.cli.ok(&dev.clone, &["logs", &good, "--since", "1h"]);
    assert_eq!(recent.lines().count(), full.len());
    let future = dev.cli.ok(
        &dev.clone,
        &["logs", &good, "--since", "2099-01-01T00:00:00Z"],
    );
    assert_eq!(future, "");
    let err = dev
        .cli
        .fails(&dev.clone, &["logs", &good, "--since", "soonish"]);
    assert!(err.contains("--since"), "{err}");

    // A job that is not there says where to look.
    let err = dev.cli.fails(&dev.clone, &["status", "ffffffff"]);
    assert!(err.contains("ckrv list"), "{err}");

    // Completions for each shell.
    for shell in ["bash", "zsh", "fish"] {
        let script = dev.cli.ok(&dev.clone, &["completions", shell]);
        assert!(
            script.contains("ckrv") && script.contains("plugin"),
            "{shell}"
        );
    }
}

#[test]
fn following_a_log_shows_each_line_once_in_order_across_an_api_restart() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_repos, url) = serve_app_repo(tmp.path());
    let data = tmp.path().join("api");
    let mut api = Api::start(&data);
    let listen = format!("127.0.0.1:{}", api.port());
    let dev = Developer::new(&api, tmp.path(), "dev@example.com", &url);
    let id = dev.dispatch(
        &url,
        "for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.5; done",
    );
    let mut follower = dev
        .cli
        .command(&dev.clone, &["logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("tick 3")) {
        seen.push(
            rx.recv_timeout(Duration::from_secs(60))
                .expect("the follower prints ticks"),
        );
    }
    // The API goes away and comes back on the same address; the follower resumes.
    api.kill();
    let _api = Api::start_on(&data, &listen, &[]);
    let status = wait_for("the follower to end", Duration::from_secs(120), || {
        follower.try_wait().unwrap()
    });
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let ticks: Vec<String> = seen
        .iter()
        .filter_map(|l| l.split("tick ").nth(1).map(str::to_string))
        .collect();
    assert_eq!(
        ticks,
        ["1", "2", "3", "4", "5", "6", "7", "8"],
        "every line once, in order:\n{}\n{stderr}",
        seen.join("\n")
    );
}

fn git_status(dir: &Path) -> String {
    git(dir, &["status", "--porcelain", "--untracked-files=all"])
}

#[test]
fn pull_refuses_conflicts_and_offers_check_3way_and_a_branch() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_repos, url) = serve_app_repo(tmp.path());
    let api = Api::start(&tmp.path().join("api"));
    let dev = Developer::new(&api, tmp.path(), "dev@example.com", &url);
    let work = &dev.clone;
    // `pull --branch` commits as the developer.
    git(work, &["config", "user.name", "Dev"]);
    git(work, &["config", "user.email", "dev@example.com"]);
    let id = dev.dispatch(
        &url,
        "echo '# App, by the agent' > README.md\nmkdir -p café\necho naïve > café/ünï.txt",
    );
    let (code, _, err) = status_of(&dev, &["wait", &id]);
    assert_eq!(code, Some(0), "{err}");
    let base = git(work, &["rev-parse", "HEAD"]).trim().to_string();

    // A local edit to the same line: the default refuses, naming the file, and changes nothing.
    std::fs::write(work.join("README.md"), "# App, by me\n").unwrap();
    let before = git_status(work);
    let err = dev.cli.fails(work, &["pull", &id, "--yes"]);
    assert!(
        err.contains("conflicts with your worktree in:\n  README.md") && err.contains("--3way"),
        "{err}"
    );
    assert_eq!(git_status(work), before);
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "# App, by me\n"
    );

    // --check reports the same and changes nothing.
    let (code, out, _) = status_of(&dev, &["pull", &id, "--check", "--json"]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["conflicts"], serde_json::json!(["README.md"]));
    assert_eq!(report["applied"], false);
    assert_eq!(git_status(work), before);

    // --branch: the change is committed on a branch from the job's base; the edit blocks the
    // checkout but survives.
    let err = dev
        .cli
        .fails(work, &["pull", &id, "--branch", "ckrv/readme", "--yes"]);
    assert!(err.contains("git switch ckrv/readme"), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "# App, by me\n"
    );
    assert_eq!(
        git(work, &["rev-parse", "ckrv/readme^"]).trim(),
        base,
        "the branch starts at the job's base commit"
    );
    let shown = git(work, &["show", "--stat", "--format=%s", "ckrv/readme"]);
    assert!(shown.starts_with("Feature: "), "{shown}");
    let tree = git(
        work,
        &[
            "-c",
            "core.quotePath=false",
            "ls-tree",
            "-r",
            "--name-only",
            "ckrv/readme",
        ],
    );
    assert!(tree.contains("café/ünï.txt"), "{tree}");
    let err = dev
        .cli
        .fails(work, &["pull", &id, "--branch", "ckrv/readme", "--yes"]);
    assert!(err.contains("exists already"), "{err}");
    // With the edit stashed, the new branch is checked out.
    git(work, &["stash", "--quiet"]);
    dev.cli
        .ok(work, &["pull", &id, "--branch", "ckrv/second", "--yes"]);
    assert_eq!(
        git(work, &["branch", "--show-current"]).trim(),
        "ckrv/second"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("café/ünï.txt")).unwrap(),
        "naïve\n"
    );
    git(work, &["switch", "--quiet", "main"]);
    git(work, &["stash", "pop", "--quiet"]);

    // --3way: applied, with conflict markers where the edits overlap, and exit 1.
    let (code, out, err) = status_of(&dev, &["pull", &id, "--3way", "--yes", "--json"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(
        report["conflicts"],
        serde_json::json!(["README.md"]),
        "{report}"
    );
    let readme = std::fs::read_to_string(work.join("README.md")).unwrap();
    assert!(
        readme.contains("<<<<<<<") && readme.contains("by me") && readme.contains("by the agent"),
        "{readme}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("café/ünï.txt")).unwrap(),
        "naïve\n"
    );

    // On a clean worktree the default applies, non-ASCII names included.
    git(work, &["reset", "--quiet", "--hard"]);
    git(work, &["clean", "-qfd", "café"]);
    let pulled = dev.cli.ok(work, &["pull", &id, "--yes", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&pulled).unwrap();
    let paths: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["README.md", "café/ünï.txt"]);
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "# App, by the agent\n"
    );
}

#[test]
fn a_local_run_leaves_the_change_in_the_worktree_like_pull() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_repos, url) = serve_app_repo(tmp.path());
    let cli = ckrv_e2e::Cli::new(
        // No API at all: nothing listens here.
        "http://127.0.0.1:9",
        tmp.path().join("home"),
    );
    let work = tmp.path().join("work");
    git(tmp.path(), &["clone", "-q", &url, work.to_str().unwrap()]);
    std::fs::create_dir_all(work.join("specs")).unwrap();
    let spec = |name: &str, script: &str| {
        std::fs::write(
            work.join(format!("specs/{name}.md")),
            ckrv_e2e::script_spec(name, script),
        )
        .unwrap();
        format!("specs/{name}.md")
    };

    let edit = spec(
        "edit",
        "echo '# App, edited here' > README.md\necho done editing",
    );
    let out = cli.run(&work, &["run", "--spec", &edit]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("script: done editing"),
        "the log streams: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("README.md | 2"));
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "# App, edited here\n"
    );

    // Run again: the change now conflicts with the worktree; nothing changes, the patch is kept.
    let err = cli.fails(&work, &["run", "--spec", &edit]);
    assert!(
        err.contains("conflicts with your worktree in:\n  README.md")
            && err.contains("last-local-run.patch"),
        "{err}"
    );
    assert!(work.join(".git/ckrv/last-local-run.patch").is_file());

    // A failing agent fails the run and changes nothing.
    git(&work, &["checkout", "--quiet", "README.md"]);
    let failing = spec("failing", "echo '# broken' > README.md\nexit 7");
    let err = cli.fails(&work, &["run", "--spec", &failing]);
    assert!(err.contains("agent exited with status 7"), "{err}");
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "# App\n"
    );

    // The same front-matter checks as in the cloud.
    std::fs::write(work.join("specs/bad.md"), "---\nagent: nobody\n---\n# x\n").unwrap();
    let err = cli.fails(&work, &["run", "--spec", "specs/bad.md"]);
    assert!(err.contains("nobody"), "{err}");
}
