//! `PodRuntime` and the real `ckrv-agent-entrypoint`, each its own process as in a job pod,
//! sharing only the control and output directories and the workspace.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ckrv_agents::pod::{DONE, EXIT, LAUNCH, PodRun, READY, STOP};
use ckrv_agents::{
    AgentRuntime, MAX_LINE_BYTES, OutputLine, PodRuntime, Prompt, RunRequest, Stream,
    run_collecting,
};
use tokio::sync::mpsc;

const ENTRYPOINT: &str = env!("CARGO_BIN_EXE_ckrv-agent-entrypoint");

/// The pod's shared directories.
struct Pod {
    _dir: tempfile::TempDir,
    control: PathBuf,
    output: PathBuf,
    workspace: PathBuf,
}

impl Pod {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let [control, output, workspace] =
            ["control", "agent", "workspace"].map(|name| dir.path().join(name));
        for d in [&control, &output, &workspace] {
            std::fs::create_dir(d).unwrap();
        }
        Self {
            _dir: dir,
            control,
            output,
            workspace,
        }
    }

    fn runtime(&self) -> PodRuntime {
        PodRuntime::new(self.control.clone(), self.output.clone())
    }

    /// A request to run `argv` in the workspace.
    fn request(&self, argv: &[&str]) -> RunRequest {
        RunRequest::new(
            argv.iter().map(|a| a.to_string()).collect(),
            self.workspace.clone(),
            self.workspace.with_file_name("scratch"),
            "job-1",
        )
    }

    /// Starts the entrypoint as the agent container would: in the workspace, with the
    /// container's environment (`PATH`, `HOME` and `env`) and nothing of this process's.
    fn entrypoint(&self, env: &[(&str, &str)]) -> Entrypoint {
        let child = Command::new(ENTRYPOINT)
            .args(ckrv_agents::pod::entrypoint_args(
                &self.control,
                &self.output,
            ))
            .current_dir(&self.workspace)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", "/home/agent")
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        Entrypoint(child)
    }

    fn exists(&self, dir: &Path, name: &str) -> bool {
        dir.join(name).exists()
    }
}

/// The entrypoint's process; killed if the test ends before it does.
struct Entrypoint(Child);

impl Entrypoint {
    /// Waits for it to exit; its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the entrypoint did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Entrypoint {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(pod: &Pod, script: &str) -> RunRequest {
    pod.request(&["sh", "-c", script])
}

/// The text of each line of `stream`.
fn of(lines: &[OutputLine], stream: Stream) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.clone())
        .collect()
}

/// Waits until `path` exists.
async fn appears(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn lines_arrive_in_order_on_their_stream_and_the_exit_code_comes_back() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let script = "for i in $(seq 1 300); do echo \"out $i\"; echo \"err $i\" >&2; done
printf 'bad \\377 byte\\n'
echo here > made-by-agent.txt
printf 'no newline at the end'
exit 3";
    let (status, lines) = run_collecting(&pod.runtime(), &sh(&pod, script))
        .await
        .unwrap();
    assert_eq!(status.code, Some(3));
    let mut out: Vec<String> = (1..=300).map(|i| format!("out {i}")).collect();
    out.extend(["bad \u{fffd} byte".into(), "no newline at the end".into()]);
    assert_eq!(of(&lines, Stream::Stdout), out);
    let err: Vec<String> = (1..=300).map(|i| format!("err {i}")).collect();
    assert_eq!(of(&lines, Stream::Stderr), err);
    // It ran in its working directory, the workspace.
    assert_eq!(
        std::fs::read_to_string(pod.workspace.join("made-by-agent.txt")).unwrap(),
        "here\n"
    );
    // The status travels in the file; the container waits for a verification or `done`
    // (the orchestrator's end), then its own exit is 0.
    ckrv_agents::pod::write_done(&pod.control).unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
    assert!(
        !pod.exists(&pod.control, STOP),
        "a finished run writes no stop"
    );
}

#[tokio::test]
async fn a_line_longer_than_the_limit_is_cut_as_every_runtime_cuts_it() {
    let pod = Pod::new();
    let _entrypoint = pod.entrypoint(&[]);
    let script = format!(
        "head -c {} /dev/zero | tr '\\0' x; echo; echo next",
        MAX_LINE_BYTES + 3000
    );
    let (status, lines) = run_collecting(&pod.runtime(), &sh(&pod, &script))
        .await
        .unwrap();
    assert!(status.success());
    let out = of(&lines, Stream::Stdout);
    assert_eq!(
        out.len(),
        2,
        "{:?}",
        out.iter().map(String::len).collect::<Vec<_>>()
    );
    assert_eq!(
        out[0],
        format!(
            "{} [… line truncated: 3000 more bytes]",
            "x".repeat(MAX_LINE_BYTES)
        )
    );
    assert_eq!(out[1], "next");
}

#[tokio::test]
async fn the_prompt_reaches_the_agent_on_stdin_or_in_its_file() {
    let pod = Pod::new();
    let _entrypoint = pod.entrypoint(&[]);
    let mut request = sh(&pod, "sed 's/^/stdin: /'");
    request.prompt = Prompt::Stdin("Add a greeting.\nThen stop.\n".into());
    let (status, lines) = run_collecting(&pod.runtime(), &request).await.unwrap();
    assert!(status.success());
    assert_eq!(
        of(&lines, Stream::Stdout),
        ["stdin: Add a greeting.", "stdin: Then stop."]
    );

    let pod = Pod::new();
    let _entrypoint = pod.entrypoint(&[]);
    let mut request = pod.request(&[
        "sh",
        "-c",
        "echo \"file: $1\"; sed 's/^/prompt-file: /' \"$1\"; [ -t 0 ] || cat",
        "sh",
        "{prompt_file}",
    ]);
    request.prompt = Prompt::File("Add a greeting.\n".into());
    let (status, lines) = run_collecting(&pod.runtime(), &request).await.unwrap();
    assert!(status.success());
    assert_eq!(
        of(&lines, Stream::Stdout),
        [
            format!("file: {}", pod.control.join("prompt").display()),
            "prompt-file: Add a greeting.".into()
        ],
        "the prompt is in its file, and standard input is empty"
    );
}

#[tokio::test]
async fn the_agent_gets_its_fixed_env_and_its_named_secrets_and_nothing_else() {
    let pod = Pod::new();
    // The container's environment: the job's secrets, and whatever else it was given.
    let _entrypoint = pod.entrypoint(&[
        ("ANTHROPIC_API_KEY", "sk-ant-from-the-jobs-secret"),
        ("OPENAI_API_KEY", "sk-openai-not-declared"),
        ("CKRV_WORKER_TOKEN", "worker-token-must-not-leak"),
        ("CKRV_JOB_ID", "job-1"),
        ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
    ]);
    let mut request = pod.request(&["env"]);
    request.env = vec![("DISABLE_AUTOUPDATER".into(), "1".into())];
    // The worker's values stay with the worker: only the names travel.
    request.secrets = vec![
        (
            "ANTHROPIC_API_KEY".into(),
            "sk-ant-worker-side-value".into(),
        ),
        ("GEMINI_API_KEY".into(), "not-in-the-container".into()),
    ];
    let (status, lines) = run_collecting(&pod.runtime(), &request).await.unwrap();
    assert!(status.success());
    let mut env = of(&lines, Stream::Stdout);
    env.sort();
    assert_eq!(
        env,
        [
            "ANTHROPIC_API_KEY=sk-ant-from-the-jobs-secret".to_string(),
            "CKRV_JOB_ID=job-1".into(),
            "DISABLE_AUTOUPDATER=1".into(),
            "HOME=/home/agent".into(),
            format!("PATH={}", std::env::var("PATH").unwrap()),
        ]
    );
    let launch = std::fs::read_to_string(pod.control.join(LAUNCH)).unwrap();
    assert!(
        launch.contains("\"secrets\":[\"ANTHROPIC_API_KEY\",\"GEMINI_API_KEY\"]")
            && !launch.contains("worker-side-value")
            && !launch.contains("not-in-the-container"),
        "{launch}"
    );
}

#[tokio::test]
async fn an_entrypoint_that_starts_after_the_launch_still_runs_it() {
    let pod = Pod::new();
    let runtime = pod.runtime();
    let request = sh(&pod, "echo late but here");
    let run = tokio::spawn({
        let (runtime, request) = (runtime.clone(), request.clone());
        async move { run_collecting(&runtime, &request).await }
    });
    appears(&pod.control.join(LAUNCH)).await;
    // The image is still being pulled: the orchestrator waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished());
    let mut entrypoint = pod.entrypoint(&[]);
    let (status, lines) = run.await.unwrap().unwrap();
    assert!(status.success());
    assert_eq!(of(&lines, Stream::Stdout), ["late but here"]);
    ckrv_agents::pod::write_done(&pod.control).unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
}

#[tokio::test]
async fn done_before_a_launch_ends_the_entrypoint_without_running_anything() {
    // Done while it waits.
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    appears(&pod.output.join(READY)).await;
    std::fs::write(pod.control.join(DONE), "").unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
    assert!(!pod.exists(&pod.output, EXIT));

    // A launch, and then done (the orchestrator gave up while the image was pulling), before
    // the entrypoint ever started.
    let pod = Pod::new();
    let launch = r#"{"version":1,"argv":["sh","-c","echo ran > ran.txt"]}"#;
    std::fs::write(pod.control.join(LAUNCH), launch).unwrap();
    std::fs::write(pod.control.join(DONE), "").unwrap();
    let mut entrypoint = pod.entrypoint(&[]);
    assert_eq!(entrypoint.exit_code().await, Some(0));
    assert!(!pod.workspace.join("ran.txt").exists(), "the agent ran");
    assert!(!pod.exists(&pod.output, EXIT));
}

#[tokio::test]
async fn dropping_the_run_stops_the_agent_and_everything_it_started() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let runtime = pod.runtime();
    let request = sh(
        &pod,
        "sleep 300 & echo $! > sleeper.pid; echo $$ > agent.pid; echo started; wait",
    );
    let (tx, mut rx) = mpsc::channel(16);
    let mut run = runtime.run(&request, tx);
    loop {
        tokio::select! {
            line = rx.recv() => if line.unwrap().line == "started" { break },
            ended = &mut run => panic!("the agent ended early: {ended:?}"),
        }
    }
    // The job was cancelled: the orchestrator drops the run.
    drop(run);
    assert!(pod.exists(&pod.control, STOP));
    assert_eq!(entrypoint.exit_code().await, Some(0));
    let exit = std::fs::read_to_string(pod.output.join(EXIT)).unwrap();
    assert_eq!(exit, r#"{"signal":15}"#);
    for file in ["agent.pid", "sleeper.pid"] {
        let pid = std::fs::read_to_string(pod.workspace.join(file)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ended(pid.trim()) {
            assert!(Instant::now() < deadline, "{file}: {pid} still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn an_agent_that_cannot_start_fails_with_the_reason() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let request = pod.request(&["no-such-agent-cli", "-p"]);
    let error = run_collecting(&pod.runtime(), &request).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "could not start `no-such-agent-cli`: No such file or directory"
    );
    ckrv_agents::pod::write_done(&pod.control).unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
}

#[tokio::test]
async fn an_entrypoint_that_dies_fails_the_run_once_its_heartbeat_is_old() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let mut runtime = pod.runtime();
    // Longer than the entrypoint's 1 s beat, with room for a busy machine.
    runtime.heartbeat_timeout = Duration::from_secs(4);
    let request = sh(&pod, "echo $$ > agent.pid; echo started; sleep 300");
    let (tx, mut rx) = mpsc::channel(16);
    let run = tokio::spawn(async move {
        let (runtime, request) = (runtime, request);
        runtime.run(&request, tx).await
    });
    assert_eq!(rx.recv().await.unwrap().line, "started");
    let killed = Instant::now();
    entrypoint.0.kill().unwrap();
    let error = run.await.unwrap().unwrap_err();
    assert_eq!(
        error.to_string(),
        "the agent's container stopped answering (no heartbeat for 4s)"
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
    // In a pod the container's end takes the agent with it; here, its group is ended by hand.
    let pid: i32 = std::fs::read_to_string(pod.workspace.join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let group = rustix::process::Pid::from_raw(pid).unwrap();
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
}

#[test]
fn install_copies_the_entrypoint_where_the_agent_container_runs_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("ckrv/bin");
    let out = Command::new(ENTRYPOINT)
        .arg("install")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let installed = bin.join("ckrv-agent-entrypoint");
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    let version = Command::new(&installed).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ckrv-agent-entrypoint "));
    // Without its arguments it says what it needs.
    let usage = Command::new(&installed).arg("run").output().unwrap();
    assert!(!usage.status.success());
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--control <DIR>"));
}

#[tokio::test]
async fn sigterm_to_the_agent_container_stops_the_agent_and_reports_it() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let request = sh(&pod, "echo started; sleep 300");
    let (tx, mut rx) = mpsc::channel(16);
    let runtime = pod.runtime();
    let run = tokio::spawn(async move {
        let (runtime, request) = (runtime, request);
        runtime.run(&request, tx).await
    });
    assert_eq!(rx.recv().await.unwrap().line, "started");
    // Kubernetes stopping the pod.
    let pid = rustix::process::Pid::from_raw(entrypoint.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = run.await.unwrap().unwrap();
    assert_eq!(status.code, None, "killed by a signal");
    assert_eq!(entrypoint.exit_code().await, Some(0));
}

#[tokio::test]
async fn setup_runs_first_in_the_same_container_and_the_agent_finds_what_it_left() {
    let pod = Pod::new();
    let home = pod.workspace.with_file_name("home");
    std::fs::create_dir(&home).unwrap();
    let mut entrypoint = pod.entrypoint(&[("HOME", home.to_str().unwrap())]);
    let setup = "echo setting up
echo careful >&2
mkdir -p deps && echo ready > deps/tool
echo cached > \"$HOME/cache\"
sleep 60 & echo $! > left.pid";
    let (status, lines) = run_collecting(&pod.runtime().for_setup(), &sh(&pod, setup))
        .await
        .unwrap();
    assert_eq!(status.code, Some(0));
    assert_eq!(of(&lines, Stream::Stdout), ["setting up"]);
    assert_eq!(of(&lines, Stream::Stderr), ["careful"]);
    // What setup left running ended with it.
    let left = std::fs::read_to_string(pod.workspace.join("left.pid")).unwrap();
    assert!(ended(left.trim()), "setup's `sleep` outlived it");
    // The container waits for the agent's launch: setup's status is its own.
    assert!(pod.exists(&pod.output, "setup.exit.json"));
    assert!(!pod.exists(&pod.output, EXIT));
    let (status, lines) = run_collecting(
        &pod.runtime(),
        &sh(&pod, "cat deps/tool \"$HOME/cache\"; exit 4"),
    )
    .await
    .unwrap();
    assert_eq!(status.code, Some(4));
    assert_eq!(of(&lines, Stream::Stdout), ["ready", "cached"]);
    assert!(of(&lines, Stream::Stderr).is_empty(), "{lines:?}");
    ckrv_agents::pod::write_done(&pod.control).unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
}

#[tokio::test]
async fn the_verification_runs_after_the_agent_in_the_same_container() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let (status, _) = run_collecting(
        &pod.runtime(),
        &sh(&pod, "echo fixed > calc.txt; sleep 60 & echo $! > left.pid"),
    )
    .await
    .unwrap();
    assert_eq!(status.code, Some(0));
    // What the agent left running ended with it, before the check.
    let left = std::fs::read_to_string(pod.workspace.join("left.pid")).unwrap();
    assert!(ended(left.trim()), "the agent's `sleep` outlived it");
    let verify = PodRuntime {
        run: PodRun::Verify,
        ..pod.runtime()
    };
    let (status, lines) =
        run_collecting(&verify, &sh(&pod, "cat calc.txt; echo failing >&2; exit 2"))
            .await
            .unwrap();
    assert_eq!(status.code, Some(2));
    assert_eq!(of(&lines, Stream::Stdout), ["fixed"]);
    assert_eq!(of(&lines, Stream::Stderr), ["failing"]);
    assert!(pod.exists(&pod.output, "verify.exit.json"));
    // The verification ends the container's work: one per pod.
    assert_eq!(entrypoint.exit_code().await, Some(0));
    let again = run_collecting(&verify, &sh(&pod, "true")).await;
    assert!(again.is_err(), "a second verification ran");
}

#[tokio::test]
async fn a_failed_setup_reports_its_status_and_done_then_ends_the_container_without_the_agent() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let (status, lines) = run_collecting(
        &pod.runtime().for_setup(),
        &sh(&pod, "echo no index; exit 3"),
    )
    .await
    .unwrap();
    assert_eq!(status.code, Some(3));
    assert_eq!(of(&lines, Stream::Stdout), ["no index"]);
    ckrv_agents::pod::write_done(&pod.control).unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
    assert!(!pod.exists(&pod.output, EXIT), "the agent ran");
}

#[tokio::test]
async fn a_stopped_setup_is_killed_and_a_second_setup_is_refused() {
    let pod = Pod::new();
    let mut entrypoint = pod.entrypoint(&[]);
    let runtime = pod.runtime().for_setup();
    let request = sh(&pod, "echo $$ > setup.pid; exec sleep 60");
    let run = runtime.run(&request, mpsc::channel(16).0);
    // Dropping the run (the job was cancelled, or setup's time ran out) stops setup.
    let _ = tokio::time::timeout(Duration::from_millis(500), run).await;
    appears(&pod.control.join("setup.stop")).await;
    let pid = std::fs::read_to_string(pod.workspace.join("setup.pid")).unwrap();
    appears(&pod.output.join("setup.exit.json")).await;
    assert!(ended(pid.trim()), "setup still runs");
    assert!(
        !pod.exists(&pod.control, STOP),
        "the agent's stop was written"
    );
    // One setup per pod.
    let again = run_collecting(&runtime, &sh(&pod, "true")).await;
    assert!(
        again.unwrap_err().to_string().contains("already launched"),
        "a second setup ran"
    );
    ckrv_agents::pod::write_done(&pod.control).unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
}

/// As the container's PID 1 (here in a PID namespace of bubblewrap's, `--as-pid-1`), the
/// entrypoint ends what setup left outside its process group before the agent starts.
#[tokio::test]
async fn as_pid_1_it_ends_what_setup_left_running_outside_its_group() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let pod = Pod::new();
    let mut args = vec![
        "--dev-bind".into(),
        "/".into(),
        "/".into(),
        "--proc".into(),
        "/proc".into(),
        "--unshare-pid".into(),
        "--as-pid-1".into(),
        "--die-with-parent".into(),
        "--chdir".into(),
        pod.workspace.clone().into_os_string(),
        ENTRYPOINT.into(),
    ];
    args.extend(ckrv_agents::pod::entrypoint_args(&pod.control, &pod.output));
    let child = Command::new("bwrap")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .spawn()
        .unwrap();
    let mut entrypoint = Entrypoint(child);
    // A daemon in its own session: no process group kill reaches it. Setup ends once the
    // daemon has beaten (at most 20 s, for a loaded machine), so the kill is what stops it.
    let setup = "setsid sh -c 'while :; do date +%s%N > beat.new && mv beat.new beat; sleep 0.05; done' </dev/null >/dev/null 2>&1 &
i=0; while [ ! -s beat ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done";
    let (status, _) = run_collecting(&pod.runtime().for_setup(), &sh(&pod, setup))
        .await
        .unwrap();
    assert_eq!(status.code, Some(0));
    let beat = || std::fs::read_to_string(pod.workspace.join("beat")).unwrap_or_default();
    let first = beat();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!first.is_empty(), "the daemon never ran");
    assert_eq!(beat(), first, "setup's daemon still runs after setup");
    ckrv_agents::pod::write_done(&pod.control).unwrap();
    assert_eq!(entrypoint.exit_code().await, Some(0));
}
