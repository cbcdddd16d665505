//! The agent sandbox, tried as a hostile agent would: with real bubblewrap, on this machine.

#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ckrv_agents::{
    Allowlist, Entry, Policy, RunRequest, SandboxLimits, SandboxRuntime, Stream, run_collecting,
};

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
    egress: Option<Allowlist>,
) -> (Option<i32>, Vec<String>) {
    let scratch = workspace.with_file_name("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut request = RunRequest::new(
        vec!["sh".into(), "-c".into(), script.into()],
        workspace.to_path_buf(),
        scratch,
        "job-sandbox-test",
    );
    request.egress = egress;
    let (status, output) = run_collecting(runtime, &request).await.unwrap();
    let lines = output
        .into_iter()
        .map(|l| {
            let prefix = match l.stream {
                Stream::Stdout => "",
                Stream::Stderr => "err: ",
                Stream::Egress => "egress: ",
            };
            format!("{prefix}{}", l.line)
        })
        .collect();
    (status.code, lines)
}

/// A runtime with the bridge this package builds.
fn runtime_with_bridge() -> SandboxRuntime {
    let runtime = SandboxRuntime {
        bridge: Some(env!("CARGO_BIN_EXE_ckrv-egress-bridge").into()),
        ..SandboxRuntime::default()
    };
    assert!(runtime.egress_bridge().is_ok());
    runtime
}

/// A stand-in HTTP server on the host's loopback that answers every request with `body`;
/// the count is of the connections it accepted.
fn stand_in(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heard = Arc::new(AtomicUsize::new(0));
    let count = heard.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    (port, heard)
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
    let (code, lines) = run(&runtime, &workspace, &script, None).await;
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
async fn an_agent_without_egress_reaches_nothing_and_has_no_proxy() {
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
    let runtime = runtime_with_bridge();
    let dir = job_dir();
    let script = format!(
        "if bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo connected; else echo refused; fi; \
         echo proxy=${{HTTPS_PROXY:-none}},${{http_proxy:-none}}; \
         test -e /run/ckrv/egress.sock && echo socket || echo no-socket"
    );
    let (_, lines) = run(&runtime, &dir.path().join("workspace"), &script, None).await;
    assert_eq!(lines, ["refused", "proxy=none,none", "no-socket"]);
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
        None,
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
        None,
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
    let (code, _) = run(&runtime, &workspace, "while :; do :; done", None).await;
    assert_ne!(code, Some(0));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[tokio::test]
async fn memory_an_agent_writes_is_bounded_while_what_it_only_reserves_is_not() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    const MIB: u64 = 1024 * 1024;
    let runtime = SandboxRuntime::new(SandboxLimits {
        memory_bytes: 128 * MIB,
        ..SandboxLimits::default()
    });
    let dir = job_dir();
    let workspace = dir.path().join("workspace");
    // 16 GiB reserved and never written, as V8 reserves for each WebAssembly instance (Gemini
    // CLI's HTTP parser is one): allowed. 512 MiB written: refused.
    let script = "python3 -c 'import mmap; m = mmap.mmap(-1, 16 << 30, prot=mmap.PROT_READ); print(\"reserved\", len(m))'; \
                  python3 -c 'b = bytearray(512 << 20); print(\"wrote\", len(b))' 2>&1 | tail -n 1";
    let (_, lines) = run(&runtime, &workspace, script, None).await;
    assert!(
        lines.iter().any(|l| l == "reserved 17179869184"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "MemoryError"), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("wrote")), "{lines:?}");
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
    let (code, lines) = run(&runtime, &dir.path().join("workspace"), script, None).await;
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
        None,
    )
    .await;
    assert_eq!(code, Some(0), "{lines:?}");
    let sizes: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
    assert_eq!(sizes, ["1048576", "1048576"], "{lines:?}");
}

#[tokio::test]
async fn an_agent_with_egress_reaches_its_allowlist_through_the_proxy_and_nothing_else() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    // The model gateway's stand-in, on the host's loopback as a local gateway is; and another
    // service of the host's that the agent must not reach.
    let (gateway, gateway_heard) = stand_in("from-the-gateway");
    let (other, other_heard) = stand_in("from-another-service");
    let gateway_entry: Entry = format!("127.0.0.1:{gateway}").parse().unwrap();
    let allowlist = Policy::Model.allowlist(Some(gateway_entry)).unwrap();
    let dir = job_dir();
    let workspace = dir.path().join("workspace");
    let script = format!(
        "echo proxy=$HTTPS_PROXY,$http_proxy,no_proxy=[$no_proxy]; \
         curl -sS --max-time 10 http://127.0.0.1:{gateway}/v1/plain; echo; \
         curl -sS --max-time 10 --proxytunnel http://127.0.0.1:{gateway}/v1/tunnel; echo; \
         curl -sS --max-time 10 --noproxy '*' http://127.0.0.1:{gateway}/v1/forwarded; echo; \
         curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:{other}/direct >/dev/null 2>&1 \
           && echo direct-connected || echo direct-failed; \
         echo plain-refused=$(curl -s --max-time 10 -o /dev/null -w '%{{http_code}}' http://localhost:{other}/); \
         echo tunnel-refused=$(curl -s --max-time 10 -o /dev/null -w '%{{http_connect}}' https://localhost:{other}/)"
    );
    let (code, lines) = run(&runtime_with_bridge(), &workspace, &script, Some(allowlist)).await;
    assert_eq!(code, Some(0), "{lines:?}");
    let has = |line: &str| lines.iter().any(|l| l == line);
    assert!(
        has("proxy=http://127.0.0.1:3128,http://127.0.0.1:3128,no_proxy=[]"),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| *l == "from-the-gateway").count(),
        3,
        "a plain request, a CONNECT tunnel and the gateway's URL without a proxy reach the allowed stand-in: {lines:?}"
    );
    assert!(
        has("direct-failed"),
        "the sandbox has its own loopback: {lines:?}"
    );
    assert!(
        has("plain-refused=403") && has("tunnel-refused=403"),
        "{lines:?}"
    );
    let refusal = format!(
        "egress: Connection blocked by network allowlist: localhost:{other} (not in the job's allowlist, policy `model`)"
    );
    let refusals: Vec<&String> = lines.iter().filter(|l| l.starts_with("egress: ")).collect();
    assert_eq!(refusals, [&refusal, &refusal], "{lines:?}");
    assert_eq!(gateway_heard.load(Ordering::SeqCst), 3);
    assert_eq!(
        other_heard.load(Ordering::SeqCst),
        0,
        "the other service was reached"
    );
    assert!(
        !dir.path().join("scratch/egress.sock").exists(),
        "the proxy ends with the run"
    );
}

#[tokio::test]
async fn a_read_only_policy_lets_reads_through_and_refuses_writes_over_http_and_https() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let (gateway, gateway_heard) = stand_in("from-the-gateway");
    let (mirror, mirror_heard) = stand_in("from-the-mirror");
    let secure = ckrv_test_support::HttpsStandIn::start().await;
    let gateway_entry: Entry = format!("127.0.0.1:{gateway}").parse().unwrap();
    let policy: Policy = "model;read-only".parse().unwrap();
    // Package mirrors the policy allows, over HTTP and HTTPS, on loopback as every test's
    // hosts are.
    let allowlist = policy
        .allowlist(Some(gateway_entry))
        .unwrap()
        .allow_local(format!("localhost:{mirror}").parse().unwrap())
        .allow_local(format!("localhost:{}", secure.port).parse().unwrap());
    let runtime = SandboxRuntime {
        egress_roots: Some(secure.roots.clone()),
        ..runtime_with_bridge()
    };
    let dir = job_dir();
    let code = |flags: &str, url: String, what: &str| {
        format!(
            "echo {what}=$(curl -s --max-time 10 {flags} -o /dev/null -w '%{{http_code}}' {url})"
        )
    };
    let https = format!("https://localhost:{}/simple/", secure.port);
    let script = [
        code("", format!("http://localhost:{mirror}/simple/"), "get"),
        code("-I", format!("http://localhost:{mirror}/simple/"), "head"),
        code("-X POST", format!("http://localhost:{mirror}/upload"), "post"),
        code("-X PUT", format!("http://localhost:{mirror}/upload"), "put"),
        code("", https.clone(), "https-get"),
        code("-X POST -d secret", https, "https-post"),
        code(
            "-X POST --proxytunnel",
            format!("http://127.0.0.1:{gateway}/v1/messages"),
            "gateway",
        ),
        "echo trust=$SSL_CERT_FILE,$NODE_EXTRA_CA_CERTS; grep -c 'BEGIN CERTIFICATE' $SSL_CERT_FILE".into(),
    ]
    .join("; ");
    let (code, lines) = run(
        &runtime,
        &dir.path().join("workspace"),
        &script,
        Some(allowlist),
    )
    .await;
    assert_eq!(code, Some(0), "{lines:?}");
    for line in [
        "get=200",
        "head=200",
        "post=403",
        "put=403",
        "https-get=200",
        "https-post=403",
        "gateway=200",
        "trust=/run/ckrv/egress-ca.pem,/run/ckrv/egress-ca.pem",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line}: {lines:?}");
    }
    let refusals: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("egress: "))
        .collect();
    let blocked = |port: u16, method: &str| {
        format!(
            "Connection blocked by network allowlist: localhost:{port} (method {method} not allowed: the allowlist is read-only)"
        )
    };
    assert_eq!(
        refusals,
        [
            blocked(mirror, "POST"),
            blocked(mirror, "PUT"),
            blocked(secure.port, "POST")
        ],
        "{lines:?}"
    );
    assert_eq!(
        mirror_heard.load(Ordering::SeqCst),
        2,
        "only the GET and the HEAD"
    );
    assert_eq!(secure.heard(), 1, "only the HTTPS GET");
    assert_eq!(gateway_heard.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn egress_without_a_bridge_fails_the_run_saying_what_is_missing() {
    let dir = job_dir();
    let workspace = dir.path().join("workspace");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut request = RunRequest::new(vec!["true".into()], workspace, scratch, "job-no-bridge");
    request.egress = Policy::Model.allowlist(None);
    for (bridge, says) in [
        (None, "beside the worker's program".to_string()),
        (
            Some("/nonexistent/bridge"),
            "at /nonexistent/bridge".to_string(),
        ),
    ] {
        let runtime = SandboxRuntime {
            bridge: bridge.map(Into::into),
            ..SandboxRuntime::default()
        };
        assert!(runtime.egress_bridge().is_err());
        let err = run_collecting(&runtime, &request)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("needs the ckrv-egress-bridge program") && err.contains(&says),
            "{err}"
        );
    }
}

#[tokio::test]
async fn home_cache_directories_outlive_a_run_and_a_link_left_on_the_way_is_not_followed() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let runtime = SandboxRuntime::default();
    let dir = job_dir();
    let workspace = dir.path().join("workspace");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let request = |script: &str, cache: &[&str]| {
        let mut request = RunRequest::new(
            vec!["sh".into(), "-c".into(), script.into()],
            workspace.clone(),
            scratch.clone(),
            "job-home-cache",
        );
        request.home_cache = cache.iter().map(Into::into).collect();
        request
    };
    // Setup fills a cache under its home (and a file beside it, which is its run's alone) and
    // plants a link inside the kept directory.
    let setup = request(
        "mkdir -p $HOME/.cache/pip && echo wheel > $HOME/.cache/pip/tool.whl && \
         echo scratch > $HOME/other && ln -s / $HOME/.cache/pip/root && \
         mkdir -p $HOME/.cargo/registry && echo crate > $HOME/.cargo/registry/index && echo ok",
        &[".cache/pip", ".cargo/registry"],
    );
    let (status, output) = run_collecting(&runtime, &setup).await.unwrap();
    let said: Vec<&str> = output.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(status.code, Some(0), "{said:?}");
    // The kept directories are on the worker's disk, in the job's scratch directory.
    let kept = scratch.join("home/.cache/pip/tool.whl");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "wheel\n");
    assert!(
        !scratch.join("home/other").exists(),
        "only the cache paths are kept"
    );

    // The next run finds them; what else was in the home is gone.
    let agent = request(
        "cat $HOME/.cache/pip/tool.whl $HOME/.cargo/registry/index; \
         test -e $HOME/other && echo other-kept; echo done",
        &[".cache/pip", ".cargo/registry"],
    );
    let (status, output) = run_collecting(&runtime, &agent).await.unwrap();
    let said: Vec<&str> = output.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(status.code, Some(0), "{said:?}");
    assert_eq!(said, ["wheel", "crate", "done"]);

    // A link where a kept directory's path goes (as a hostile run could leave inside another
    // kept directory) would bind what it points at: the run is refused instead.
    let hostile = request("echo started", &[".cache/pip/root/etc"]);
    let error = run_collecting(&runtime, &hostile).await.unwrap_err();
    assert!(error.to_string().contains("is not a directory"), "{error}");
    assert!(!dir.path().join("workspace/started").exists());
}
