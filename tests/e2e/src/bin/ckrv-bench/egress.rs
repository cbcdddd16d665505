//! Downloads through an agent sandbox's only way out: `curl` inside the bubblewrap sandbox,
//! through the egress bridge and the worker's egress proxy, from a server on the worker's
//! loopback that the job's allowlist names. Two paths: the gateway-style forward (the bridge
//! tunnels the loopback address through the proxy with `CONNECT`), plain HTTP sent to the
//! proxy address the agent is given (`HTTP_PROXY`), which the proxy forwards itself, and under a
//! read-only policy HTTPS, which the proxy reads (TLS ended and made again) to check methods.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ckrv_agents::{Entry, Policy, RunRequest, SandboxRuntime, Stream, run_collecting};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::table::Table;

/// How much and how often.
pub struct Downloads {
    pub mib: usize,
    pub count: usize,
    /// How many small requests measure what a request costs.
    pub small: usize,
}

pub fn run(
    root: &Path,
    downloads: &Downloads,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    let curl = std::process::Command::new("curl").arg("--version").output();
    if !curl.is_ok_and(|out| out.status.success()) {
        bail!("the egress measurement runs curl in the sandbox: install curl");
    }
    let bytes = downloads.mib * 1024 * 1024;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let origin = listener.local_addr()?;
    runtime.spawn(serve(listener, bytes));

    let workspace = root.join("egress/workspace");
    let scratch = root.join("egress/scratch");
    std::fs::create_dir_all(&workspace)?;
    std::fs::create_dir_all(&scratch)?;
    for dir in [root, &root.join("egress")] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    }
    let sandbox = SandboxRuntime::default();
    runtime.block_on(sandbox.probe())?;
    sandbox.egress_bridge()?;
    let allowlist = Policy::Model
        .allowlist(Some(Entry::origin_of(&format!("http://{origin}"))?))
        .context("the model policy allows the network")?;
    // Read-only: HTTPS from a stand-in with a test authority, which the proxy reads and
    // verifies; the agent's curl trusts the proxy's authority from its environment.
    let secure = runtime.block_on(ckrv_test_support::HttpsStandIn::serving(bytes));
    let read_only = Policy::Model
        .into_read_only()
        .allowlist(Some(Entry::origin_of(&format!("http://{origin}"))?))
        .context("the model policy allows the network")?
        .allow_local(format!("localhost:{}", secure.port).parse()?);
    let reading = SandboxRuntime {
        egress_roots: Some(secure.roots.clone()),
        ..SandboxRuntime::default()
    };
    let plain = format!("http://{origin}/blob");
    let https = format!("https://localhost:{}/blob", secure.port);
    let mib = downloads.mib;
    for (path, curl_flags, url, allowlist, sandbox) in [
        (
            "CONNECT tunnel (loopback forward)",
            "--noproxy '*'",
            &plain,
            &allowlist,
            &sandbox,
        ),
        ("plain HTTP via the proxy", "", &plain, &allowlist, &sandbox),
        (
            "read-only HTTPS, read and re-encrypted by the proxy",
            "",
            &https,
            &read_only,
            &reading,
        ),
    ] {
        let times = curl_in_sandbox(
            runtime,
            sandbox,
            allowlist,
            (&workspace, &scratch),
            Transfers {
                target: &format!("{curl_flags} {url}"),
                count: downloads.count,
                bytes,
                curls: Curls::Each,
            },
        )?;
        let mut sorted = times.clone();
        sorted.sort();
        let rate = bytes as f64 / sorted[sorted.len() / 2].as_secs_f64() / 1e6;
        table.row(
            &format!(
                "{mib} MiB download in the sandbox through bridge and egress proxy, {path} \
                 (median {rate:.0} MB/s)"
            ),
            &times,
        );
    }

    // What reading HTTPS costs a request (a CONNECT, two TLS handshakes, one request per
    // connection), against plain HTTP through the same proxy: small answers, many requests.
    let small = 1024;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let small_origin = listener.local_addr()?;
    runtime.spawn(serve(listener, small));
    let small_secure = runtime.block_on(ckrv_test_support::HttpsStandIn::serving(small));
    let small_read_only = read_only
        .clone()
        .allow_local(format!("localhost:{}", small_secure.port).parse()?);
    let small_reading = SandboxRuntime {
        egress_roots: Some(small_secure.roots.clone()),
        ..SandboxRuntime::default()
    };
    let small_allowlist = allowlist
        .clone()
        .allow_local(format!("{small_origin}").parse()?);
    for (path, url, allowlist, sandbox) in [
        (
            "plain HTTP via the proxy",
            format!("http://{small_origin}/small"),
            &small_allowlist,
            &sandbox,
        ),
        (
            "read-only HTTPS, read by the proxy",
            format!("https://localhost:{}/small", small_secure.port),
            &small_read_only,
            &small_reading,
        ),
    ] {
        let times = curl_in_sandbox(
            runtime,
            sandbox,
            allowlist,
            (&workspace, &scratch),
            Transfers {
                target: &url,
                count: downloads.small,
                bytes: small,
                curls: Curls::One,
            },
        )?;
        table.row(
            &format!("1 KiB GET in the sandbox, one curl, a new connection each, {path}"),
            &times,
        );
    }
    Ok(())
}

/// How `curl_in_sandbox` runs curl.
#[derive(Clone, Copy)]
enum Curls {
    /// A curl each transfer.
    Each,
    /// One curl for all of them: its start is paid once, but it still opens a connection,
    /// and (curl 7.88) reads its CA bundle, for each (docs/benchmarks.md).
    One,
}

/// `count` transfers of `curl TARGET`, each `bytes` long.
struct Transfers<'a> {
    target: &'a str,
    count: usize,
    bytes: usize,
    curls: Curls,
}

/// Runs the transfers in the sandbox under `allowlist`; each one's time, its length checked.
fn curl_in_sandbox(
    runtime: &tokio::runtime::Runtime,
    sandbox: &SandboxRuntime,
    allowlist: &ckrv_agents::Allowlist,
    (workspace, scratch): (&Path, &Path),
    transfers: Transfers<'_>,
) -> Result<Vec<Duration>> {
    let Transfers {
        target,
        count,
        bytes,
        curls,
    } = transfers;
    let write_out = "-w '%{size_download} %{time_total}\\n'";
    let script = match curls {
        Curls::Each => format!(
            "for i in $(seq {count}); do curl -sS -o /dev/null {write_out} {target} || exit 1; done"
        ),
        Curls::One => format!(
            "curl -sS {write_out}{}",
            format!(" -o /dev/null {target}").repeat(count)
        ),
    };
    let mut request = RunRequest::new(
        vec!["sh".into(), "-c".into(), script],
        workspace.to_path_buf(),
        scratch.to_path_buf(),
        "bench-egress",
    );
    request.egress = Some(allowlist.clone());
    let (status, lines) = runtime.block_on(run_collecting(sandbox, &request))?;
    let text = |stream| {
        lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    ensure!(
        status.success(),
        "curl in the sandbox failed: {}{}",
        text(Stream::Stderr),
        text(Stream::Egress)
    );
    let mut times = Vec::new();
    for line in text(Stream::Stdout).lines() {
        let (size, seconds) = line.split_once(' ').context("curl's -w line")?;
        ensure!(
            size.parse::<usize>()? == bytes,
            "a download of {target} got {size} of {bytes} bytes"
        );
        times.push(Duration::from_secs_f64(seconds.parse()?));
    }
    ensure!(times.len() == count, "{} downloads of {count}", times.len());
    Ok(times)
}

/// Answers every request on `listener` with `bytes` bytes.
async fn serve(listener: tokio::net::TcpListener, bytes: usize) {
    let chunk = vec![b'x'; 1024 * 1024];
    let chunk: &'static [u8] = chunk.leak();
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(header.as_bytes()).await.is_err() {
                return;
            }
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n;
            }
            let _ = stream.shutdown().await;
        });
    }
}
