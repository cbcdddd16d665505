//! The agent sandbox, tried as a hostile agent would: with real bubblewrap, on this machine.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ckrv_agents::{RunRequest, SandboxLimits, SandboxRuntime, Stream, run_collecting};

/// A job directory: the workspace the agent gets, and beside it what it must not see.
fn job_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("workspace")).unwrap();
    std::fs::write(dir.path().join("workspace/README.md"), "hello\n").unwrap();
    std::fs::create_dir(dir.path().join("api-data")).unwrap();
    std::fs::write(dir.path().join("api-data/ckrv.db"), "other users' jobs").unwrap();
    // The job directory is traversable (the sandbox user must reach its workspace) but not
    // listable, as the orchestrator makes it.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    dir
}

async fn run(
    runtime: &SandboxRuntime,
    workspace: &Path,
    script: &str,
    network: bool,
) -> (Option<i32>, Vec<String>) {
    let scratch = workspace.with_file_name("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut request = RunRequest::new(
        vec!["sh".into(), "-c".into(), script.into()],
        workspace.to_path_buf(),
        scratch,
        "job-sandbox-test",
    );
    request.network = network;
    let (status, output) = run_collecting(runtime, &request).await.unwrap();
    let lines = output
        .into_iter()
        .map(|l| {
            let prefix = if l.stream == Stream::Stderr {
                "err: "
            } else {
                ""
            };
            format!("{prefix}{}", l.line)
        })
        .collect();
    (status.code, lines)
}

#[tokio::test]
async fn an_agent_edits_its_workspace_and_sees_nothing_else_of_the_host() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let runtime = SandboxRuntime::default();
    runtime
        .probe()
        .await
        .expect("bubblewrap works here (CI installs it)");
    let dir = job_dir();
    let workspace = dir.path().join("workspace");
    let secret = dir.path().join("api-data/ckrv.db");
    let script = format!(
        "echo changed >> README.md; echo uid=$(id -u); \
         cat {secret} 2>/dev/null || echo no-secret; \
         echo procs=$(ls /proc | grep -c '^[0-9]'); \
         echo shadow=$(cat /etc/shadow 2>/dev/null | wc -c); \
         ls /root >/dev/null 2>&1 || echo no-root; \
         ls /var >/dev/null 2>&1 || echo no-var; \
         echo token=${{CKRV_WORKER_TOKEN:-none}} home=$HOME pwd=$(pwd); \
         echo x > /usr/planted 2>/dev/null || echo usr-read-only",
        secret = secret.display()
    );
    let (code, lines) = run(&runtime, &workspace, &script, false).await;
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("README.md")).unwrap(),
        "hello\nchanged\n"
    );
    let has = |line: &str| lines.iter().any(|l| l == line);
    assert!(
        !lines.iter().any(|l| l == "uid=0"),
        "the agent is not root: {lines:?}"
    );
    assert!(has("no-secret"), "{lines:?}");
    assert!(has("shadow=0"), "{lines:?}");
    assert!(has("no-root") && has("no-var"), "{lines:?}");
    assert!(has("token=none home=/tmp pwd=/workspace"), "{lines:?}");
    assert!(has("usr-read-only"), "{lines:?}");
    let procs: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        procs < 10,
        "the agent sees only its own processes, not {procs}"
    );
}

#[tokio::test]
async fn an_agent_without_network_in_its_definition_reaches_nothing() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heard = Arc::new(AtomicBool::new(false));
    let flag = heard.clone();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            flag.store(true, Ordering::SeqCst);
            let _ = stream.read(&mut [0u8; 16]);
        }
    });
    let runtime = SandboxRuntime::default();
    let dir = job_dir();
    let script = format!(
        "if bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo connected; else echo refused; fi"
    );
    let (_, lines) = run(&runtime, &dir.path().join("workspace"), &script, false).await;
    assert!(lines.contains(&"refused".to_string()), "{lines:?}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !heard.load(Ordering::SeqCst),
        "the sandbox reached the host's loopback"
    );
}

#[tokio::test]
async fn nothing_an_agent_starts_outlives_it() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let runtime = SandboxRuntime::default();
    let dir = job_dir();
    let (code, lines) = run(
        &runtime,
        &dir.path().join("workspace"),
        "sleep 31337 & nohup sleep 31338 >/dev/null 2>&1 & setsid sleep 31339 & echo started",
        false,
    )
    .await;
    assert_eq!(code, Some(0), "{lines:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("sleep 3133"))
        .collect();
    assert!(survivors.is_empty(), "left running: {survivors:?}");
}

#[tokio::test]
async fn without_bubblewrap_the_job_is_told_why_and_what_to_do() {
    let runtime = SandboxRuntime {
        bwrap: "/nonexistent/bwrap".into(),
        ..SandboxRuntime::default()
    };
    let err = runtime.probe().await.unwrap_err().to_string();
    assert!(err.contains("cannot create the agent's sandbox"), "{err}");
    assert!(
        err.contains("apt-get install bubblewrap") && err.contains("--insecure-no-sandbox"),
        "{err}"
    );
}

#[tokio::test]
async fn runaway_agents_hit_their_limits() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let runtime = SandboxRuntime::new(SandboxLimits {
        cpu_seconds: 1,
        processes: 16,
        ..SandboxLimits::default()
    });
    let dir = job_dir();
    let workspace = dir.path().join("workspace");
    // A fork flood stops at the process limit.
    let (_, lines) = run(
        &runtime,
        &workspace,
        "n=0; while [ $n -lt 64 ]; do sleep 5 & n=$((n+1)); done 2>&1 | head -n 1; echo done",
        false,
    )
    .await;
    assert!(
        lines.iter().any(|l| l.contains("fork")
            || l.contains("Resource temporarily unavailable")
            || l.contains("Cannot fork")),
        "{lines:?}"
    );
    // A busy loop is stopped after its CPU time.
    let started = std::time::Instant::now();
    let (code, _) = run(&runtime, &workspace, "while :; do :; done", false).await;
    assert_ne!(code, Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn an_agent_filling_its_tmp_stops_at_the_bound_and_everything_else_is_read_only() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    const MIB: u64 = 1024 * 1024;
    let runtime = SandboxRuntime::new(SandboxLimits {
        tmp_bytes: 16 * MIB,
        ..SandboxLimits::default()
    });
    let dir = job_dir();
    // A normal amount first (settings and caches in HOME), then far past the bound, in /tmp
    // and in /dev/shm; then everywhere else bubblewrap built in memory.
    let script = "head -c 4194304 /dev/zero > $HOME/cache && echo wrote-4MiB; \
         head -c 67108864 /dev/zero > /tmp/flood 2>/dev/null; echo tmp-flood=$?; \
         echo tmp-kept=$(wc -c < /tmp/flood); \
         head -c 67108864 /dev/zero > /dev/shm/flood 2>/dev/null; echo shm-flood=$?; \
         for path in /planted /run/planted /dev/planted /etc/ssh/planted; do \
           echo x > $path 2>/dev/null && echo wrote-$path; \
         done; \
         echo x > /dev/null && echo devnull-works; \
         echo done";
    let (code, lines) = run(&runtime, &dir.path().join("workspace"), script, false).await;
    assert_eq!(code, Some(0), "{lines:?}");
    let has = |line: &str| lines.iter().any(|l| l == line);
    assert!(has("wrote-4MiB"), "a few MiB fit: {lines:?}");
    assert!(has("tmp-flood=1") && has("shm-flood=1"), "{lines:?}");
    let kept: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("tmp-kept="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(kept <= 16 * MIB, "/tmp held {kept} bytes, past its bound");
    assert!(
        !lines.iter().any(|l| l.starts_with("wrote-/")),
        "the sandbox's root, /run, /dev or a mask took a write: {lines:?}"
    );
    assert!(has("devnull-works") && has("done"), "{lines:?}");
}

#[tokio::test]
async fn by_default_the_agents_tmp_is_bounded_at_one_gib() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    assert_eq!(SandboxLimits::default().tmp_bytes, 1024 * 1024 * 1024);
    let dir = job_dir();
    let (code, lines) = run(
        &SandboxRuntime::default(),
        &dir.path().join("workspace"),
        "df -k --output=size /tmp /dev/shm | tail -n +2",
        false,
    )
    .await;
    assert_eq!(code, Some(0), "{lines:?}");
    let sizes: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    assert_eq!(sizes, ["1048576", "1048576"], "{lines:?}");
}
