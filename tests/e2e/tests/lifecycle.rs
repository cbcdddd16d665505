//! Ending a job ends everything it started: cancelling it or letting it pass its deadline kills
//! the agent's whole process tree (what it forked and detached too) and removes the job's
//! workspace from the API's machine, with the real binaries and the real sandbox.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ckrv_e2e::{
    Api, Cli, Developer, StaticServer, dispatch_script, processes_matching, serve_app_repo,
    wait_for,
};

/// An API whose workers make their workspaces in `work/`, one developer logged in to it, and a
/// repository they work on.
struct Stage {
    api: Api,
    flags: Vec<String>,
    cli: Cli,
    clone: PathBuf,
    repo_url: String,
    token: String,
    work: PathBuf,
    _repos: StaticServer,
    _tmp: tempfile::TempDir,
}

impl Stage {
    fn new(flags: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        // The sandboxed agent's own user passes through to its workspace under `work/`.
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .unwrap();
        let (repos, repo_url) = serve_app_repo(root);
        let work = root.join("work");
        let mut args = vec!["--allow-local-repos", "--work-dir", work.to_str().unwrap()];
        args.extend_from_slice(flags);
        let api = Api::start_with(&root.join("api"), &args);
        let flags = args.iter().map(ToString::to_string).collect();
        let Developer { cli, clone, token } =
            Developer::new(&api, root, "dev@example.com", &repo_url);
        Self {
            api,
            flags,
            cli,
            clone,
            repo_url,
            token,
            work,
            _repos: repos,
            _tmp: tmp,
        }
    }

    fn dispatch(&self, script: &str) -> String {
        dispatch_script(&self.cli, &self.clone, &self.repo_url, script)
    }

    /// Waits until the agent printed `started` and `marker`'s processes run.
    fn wait_until_running(&self, id: &str, marker: &str) {
        wait_for("the agent to start", Duration::from_secs(60), || {
            let log = self.cli.ok(&self.clone, &["logs", id]);
            assert!(!log.contains("Job failed"), "the job failed:\n{log}");
            (log.contains("started") && !processes_matching(marker).is_empty()).then_some(())
        });
    }

    /// Waits until nothing of `marker` runs and the work directory is empty.
    fn wait_until_gone(&self, marker: &str) {
        wait_for(
            "the job's processes and workspace to go",
            Duration::from_secs(30),
            || (processes_matching(marker).is_empty() && is_empty(&self.work)).then_some(()),
        );
    }
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// An agent that forks, detaches (a new session, ignoring hangups) and waits: every way a
/// process tries to outlive its job. Each `sleep` carries `marker` so the test finds it.
fn lingering_agent(marker: u32) -> String {
    format!(
        "setsid sleep {marker}1 > /dev/null 2>&1 &\n\
         nohup sleep {marker}2 > /dev/null 2>&1 &\n\
         sleep {marker}3 &\n\
         echo started\n\
         sleep {marker}4\n"
    )
}

fn marker() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    100_000 + (std::process::id() ^ nanos) % 800_000
}

#[test]
fn cancelling_a_job_kills_its_agents_whole_tree_and_removes_its_workspace() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let stage = Stage::new(&[]);
    let marker = marker();
    let id = stage.dispatch(&lingering_agent(marker));
    let marker = format!("sleep {marker}");
    stage.wait_until_running(&id, &marker);
    assert!(
        !is_empty(&stage.work),
        "the job's workspace is in --work-dir"
    );

    assert_eq!(stage.api.cancel(&stage.token, &id), 200);
    stage.wait_until_gone(&marker);
    let job = stage.cli.finished(&stage.clone, &id);
    assert_eq!(job["state"], "cancelled", "{job}");
}

#[test]
fn a_job_past_its_deadline_ends_timeout_with_nothing_left_behind() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let stage = Stage::new(&["--job-timeout", "3s"]);
    let marker = marker();
    let id = stage.dispatch(&lingering_agent(marker));
    let marker = format!("sleep {marker}");
    stage.wait_until_running(&id, &marker);

    let job = stage.cli.finished(&stage.clone, &id);
    assert_eq!(job["state"], "timeout", "{job}");
    assert!(
        job["error_message"]
            .as_str()
            .unwrap()
            .contains("3s deadline"),
        "{job}"
    );
    stage.wait_until_gone(&marker);
}

#[test]
fn without_the_sandbox_a_cancelled_agents_process_group_still_goes() {
    // No PID namespace here: what the agent forked in its group goes with the worker's group.
    // (A process that makes a session of its own escapes a group; only the sandbox catches it.)
    let stage = Stage::new(&["--insecure-no-sandbox"]);
    let marker = marker();
    let script = format!(
        "sleep {marker}1 &\nnohup sleep {marker}2 > /dev/null 2>&1 &\necho started\nsleep {marker}3\n"
    );
    let id = stage.dispatch(&script);
    let marker = format!("sleep {marker}");
    stage.wait_until_running(&id, &marker);

    assert_eq!(stage.api.cancel(&stage.token, &id), 200);
    stage.wait_until_gone(&marker);
}

#[test]
fn a_work_dir_the_sandboxed_agent_cannot_reach_is_refused_at_start() {
    if !runs_as_root() {
        // Not root: agents run as this user, who reaches the directory.
        eprintln!("skipped: the sandbox changes users only when run by root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let closed = tmp.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut api = std::process::Command::new(ckrv_e2e::binary("ckrv-api"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("api"))
        .arg("--work-dir")
        .arg(closed.join("work"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = wait_for("ckrv-api to refuse", Duration::from_secs(30), || {
        api.try_wait().unwrap()
    });
    assert!(!ended.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut api.stderr.take().unwrap(), &mut stderr).unwrap();
    let closed = closed.display().to_string();
    assert!(
        stderr.contains(&format!("{closed} is not searchable by other users"))
            && stderr.contains(&format!("chmod o+x {closed}")),
        "{stderr}"
    );
}

fn runs_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// Follows the job's log over SSE until `stop` says so; returns what was read.
async fn follow(
    url: String,
    token: String,
    id: String,
    mut stop: impl FnMut(&str) -> bool,
) -> String {
    use futures::StreamExt as _;
    let response = reqwest::Client::new()
        .get(format!("{url}/v1/jobs/{id}/logs?follow=true"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if stop(&text) {
            break;
        }
    }
    text
}

fn stops_cleanly_on(signal: &str) {
    let mut stage = Stage::new(&[]);
    let id = stage.dispatch("echo started\nsleep 600\n");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stream = runtime.spawn(follow(
        stage.api.url.clone(),
        stage.token.clone(),
        id.clone(),
        |_| false,
    ));
    wait_for("the agent to start", Duration::from_secs(60), || {
        let log = stage.cli.ok(&stage.clone, &["logs", &id]);
        log.contains("started").then_some(())
    });

    let status = stage.api.stop_with(signal);
    assert!(
        status.success(),
        "ckrv-api exits 0 on SIG{signal}: {status}"
    );
    // The open log stream was ended by the server, with a word on why.
    let text = runtime.block_on(stream).unwrap();
    assert!(text.contains("started"), "{text}");
    assert!(text.contains("event: shutdown"), "{text}");
    // Nothing of the job runs on without the API.
    wait_for("the job's worker to stop", Duration::from_secs(30), || {
        processes_matching(&id).is_empty().then_some(())
    });
}

#[test]
fn sigterm_ends_log_streams_and_exits_cleanly() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_with_a_follower_open_does_not_hang() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    stops_cleanly_on("INT");
}

#[test]
fn twenty_jobs_against_max_running_two_all_finish_never_more_than_two_at_once() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let stage = Stage::new(&["--max-running", "2"]);
    let ids: Vec<String> = (0..20)
        .map(|n| stage.dispatch(&format!("echo job {n}\nsleep 0.3\n")))
        .collect();
    let mut most = 0;
    wait_for("all twenty jobs to end", Duration::from_secs(300), || {
        let (_, running) = stage
            .api
            .call("GET", &stage.token, "/v1/jobs?status=running&limit=100");
        most = most.max(running["jobs"].as_array().unwrap().len());
        let (_, ended) = stage
            .api
            .call("GET", &stage.token, "/v1/jobs?status=succeeded&limit=100");
        (ended["jobs"].as_array().unwrap().len() == 20).then_some(())
    });
    assert!(most <= 2, "{most} jobs ran at once");
    assert!(most >= 1);
    // They started in the order they came: each job's log has its own line.
    for (n, id) in ids.iter().enumerate() {
        let log = stage.cli.ok(&stage.clone, &["logs", id]);
        assert!(log.contains(&format!("job {n}")), "{log}");
    }
}

#[test]
fn a_killed_orchestrator_fails_its_job_with_a_pointer_to_its_log() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let stage = Stage::new(&[]);
    let marker = marker();
    let id = stage.dispatch(&format!("echo started\nsleep {marker}\n"));
    stage.wait_until_running(&id, &format!("sleep {marker}"));
    let orchestrators = processes_matching(&format!("--job-id {id}"));
    assert_eq!(orchestrators.len(), 1, "{orchestrators:?}");
    let killed = std::process::Command::new("pkill")
        .args([
            "-KILL",
            "-f",
            &format!("ckrv-orchestrator run .*--job-id {id}"),
        ])
        .status()
        .unwrap();
    assert!(killed.success());

    let job = stage.cli.finished(&stage.clone, &id);
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error_message"].as_str().unwrap();
    assert!(
        error.contains("the worker ended") && error.contains("signal: 9"),
        "{error}"
    );
    assert!(error.contains(&format!("workers/{id}.log")), "{error}");
    stage.wait_until_gone(&format!("sleep {marker}"));
}

#[test]
fn the_api_killed_mid_job_and_restarted_loses_no_line_and_the_job_completes() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let mut stage = Stage::new(&[]);
    // The agent ends while the API is down: its last lines wait on disk for the API to come
    // back, and the steps after it (upload talks to the API) wait for them to be delivered.
    let id = stage.dispatch("for i in $(seq 1 12); do echo line $i; sleep 0.15; done\n");
    wait_for("the job to log", Duration::from_secs(60), || {
        let log = stage.cli.ok(&stage.clone, &["logs", &id]);
        log.contains("line 5").then_some(())
    });

    // kill -9: no shutdown, no goodbye. The worker keeps running and keeps trying.
    let port = stage.api.port();
    stage.api.kill();
    // What the worker could not deliver waits on disk, in the worker's own directory.
    let spooled = wait_for("reports kept on disk", Duration::from_secs(30), || {
        let spool = spool_files(&stage.work).into_iter().next()?;
        let text = std::fs::read_to_string(spool).ok()?;
        // The agent's last line, then the next stage's phase (its step waits for the API).
        (text.contains("line 12") && text.contains("\"phase\":\"diffing\"")).then_some(text)
    });
    assert!(spooled.contains("\"report\":\"logs\""), "{spooled}");
    let flags: Vec<&str> = stage.flags.iter().map(String::as_str).collect();
    stage.api = Api::start_on(
        &stage.api.data_dir.clone(),
        &format!("127.0.0.1:{port}"),
        &flags,
    );

    let job = stage.cli.finished(&stage.clone, &id);
    assert_eq!(job["state"], "succeeded", "{job}");
    let log = stage.cli.ok(&stage.clone, &["logs", &id]);
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("] script: ").map(|(_, m)| m))
        .collect();
    let expected: Vec<String> = (1..=12).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line exactly once, in order:\n{log}");
    wait_for("the spool removed", Duration::from_secs(10), || {
        spool_files(&stage.work).is_empty().then_some(())
    });
}

/// The workers' report spools: one per job, in its worker's directory under `work`.
fn spool_files(work: &Path) -> Vec<PathBuf> {
    let entries = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    entries(work)
        .iter()
        .flat_map(|worker| entries(worker))
        .filter(|dir| {
            dir.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ckrv-reports-"))
        })
        .map(|dir| dir.join("reports.jsonl"))
        .collect()
}

#[test]
fn serve_sizes_the_agents_memory_backed_tmp_as_told() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    // `ckrv-api serve --agent-tmp-mb` reaches every local worker: the agent's /tmp and
    // /dev/shm are 8 MiB, and a write of 16 MiB fails there instead of taking the host's memory.
    let stage = Stage::new(&["--agent-tmp-mb", "8"]);
    let id = stage.dispatch(
        "df -k --output=size /tmp /dev/shm | tail -n +2 | sed 's/^ */size=/'\n\
         head -c 16777216 /dev/zero > /tmp/flood 2>/dev/null; echo flood=$?\n\
         rm -f /tmp/flood\n",
    );
    let job = stage.cli.finished(&stage.clone, &id);
    assert_eq!(job["state"], "succeeded", "{job}");
    let log = stage.cli.ok(&stage.clone, &["logs", &id]);
    assert_eq!(log.matches("size=8192").count(), 2, "{log}");
    assert!(log.contains("flood=1"), "{log}");
}
