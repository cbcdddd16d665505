//! The bridge inside the sandbox: agent CLIs take a proxy as a TCP address (`HTTPS_PROXY`),
//! but the sandbox's network namespace has only loopback, and the egress proxy is a Unix
//! socket bound in from the worker. The bridge listens on the sandbox's loopback, relays each
//! connection to that socket, and runs the agent as its child, ending with it.
//!
//! Inside the sandbox `127.0.0.1` is the sandbox's own loopback, so a URL naming a service on
//! the worker's loopback (the model gateway, `http://127.0.0.1:PORT/v1/gateway/...`) would
//! reach nothing, and clients differ on whether they send loopback URLs to a proxy at all. So
//! the bridge also listens on each such address (`--forward`) and tunnels every connection
//! there through the proxy (`CONNECT`), which checks it like any other: the URL works the same
//! inside, proxy or not.
//!
//! It is the `ckrv-egress-bridge` program (`src/bin/`): bound read-only into the sandbox, it
//! is the sandbox's command, and the agent's command follows its `--`.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

/// The bridge program's name: [`crate::SandboxRuntime`] looks for it beside the worker's own.
pub const BRIDGE_PROGRAM: &str = "ckrv-egress-bridge";

/// Where the bridge listens, and where it relays to.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The proxy address the agent is given.
    pub listen: SocketAddr,
    /// The egress proxy's Unix socket.
    pub socket: PathBuf,
    /// Loopback addresses of the worker's (the model gateway's) to answer on inside as well,
    /// each connection tunnelled to the same address outside.
    pub forwards: Vec<SocketAddr>,
}

/// Listens on `config.listen` (relaying every connection to the Unix socket) and on each
/// forward (tunnelling it), and runs `command` with this process's standard input and output;
/// returns the command's exit code, 128 + n when signal n ended it. SIGTERM and SIGINT are
/// passed on to it.
pub async fn run_bridge(config: BridgeConfig, command: &[OsString]) -> io::Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command to run"))?;
    let socket = Arc::new(config.socket);
    // Listening before the agent starts, so its first connection finds the bridge.
    let mut relays = tokio::task::JoinSet::new();
    let listener = TcpListener::bind(config.listen).await?;
    relays.spawn(accept(listener, socket.clone(), None));
    for forward in config.forwards {
        match TcpListener::bind(forward).await {
            Ok(listener) => {
                relays.spawn(accept(listener, socket.clone(), Some(forward)));
            }
            // The agent can still reach it through the proxy.
            Err(error) => eprintln!("{BRIDGE_PROGRAM}: cannot listen on {forward}: {error}"),
        }
    }
    let mut child = tokio::process::Command::new(program).args(args).spawn()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = terminate.recv() => pass_on(&child, rustix::process::Signal::TERM),
            _ = interrupt.recv() => pass_on(&child, rustix::process::Signal::INT),
        }
    };
    relays.abort_all();
    Ok(exit_code(status))
}

fn pass_on(child: &tokio::process::Child, signal: rustix::process::Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// A shell's way of saying how a process ended.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

/// Relays each connection to the proxy: as it comes, or tunnelled to `forward`.
async fn accept(listener: TcpListener, socket: Arc<PathBuf>, forward: Option<SocketAddr>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // A relay: each write goes on at once (a TLS handshake's small writes would
                // otherwise wait for delayed ACKs).
                let _ = stream.set_nodelay(true);
                tokio::spawn(relay(stream, socket.clone(), forward));
            }
            Err(error) => {
                eprintln!("{BRIDGE_PROGRAM}: cannot accept a connection: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn relay(mut client: TcpStream, socket: Arc<PathBuf>, forward: Option<SocketAddr>) {
    let mut proxy = match UnixStream::connect(socket.as_path()).await {
        Ok(proxy) => proxy,
        // The agent sees its connection closed; its log says why.
        Err(error) => {
            eprintln!(
                "{BRIDGE_PROGRAM}: cannot reach the egress proxy at {}: {error}",
                socket.display()
            );
            return;
        }
    };
    if let Some(to) = forward
        && let Err(error) = tunnel(&mut proxy, to).await
    {
        eprintln!("{BRIDGE_PROGRAM}: no tunnel to {to}: {error}");
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut proxy).await;
}

/// Asks the proxy for a tunnel to `to`, reading its answer and nothing past it.
async fn tunnel(proxy: &mut UnixStream, to: SocketAddr) -> io::Result<()> {
    proxy
        .write_all(format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > super::MAX_HEAD_BYTES || proxy.read(&mut byte).await? == 0 {
            return Err(io::Error::other(
                "the proxy's answer ended early or is too long",
            ));
        }
        answer.push(byte[0]);
    }
    if answer.starts_with(b"HTTP/1.1 200 ") {
        return Ok(());
    }
    let answer = String::from_utf8_lossy(&answer);
    Err(io::Error::other(format!(
        "the proxy answered {}",
        answer.lines().next().unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn relays_connections_to_the_socket_and_ends_with_the_childs_status() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("proxy.sock");
        let proxy = tokio::net::UnixListener::bind(&socket).unwrap();
        // In place of the proxy: answers a CONNECT with 200, then echoes; echoes anything else
        // from its first byte.
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = proxy.accept().await {
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    stream.read_exact(&mut first).await.unwrap();
                    if &first == b"CONNECT " {
                        let mut head = Vec::from(first);
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            stream.read_exact(&mut byte).await.unwrap();
                            head.push(byte[0]);
                        }
                        let said = String::from_utf8(head).unwrap();
                        let target = said.split(' ').nth(1).unwrap().to_string();
                        stream
                            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                            .await
                            .unwrap();
                        stream.write_all(target.as_bytes()).await.unwrap();
                    } else {
                        stream.write_all(&first).await.unwrap();
                    }
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let free = || {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let (listen, forward) = (free(), free());
        let send = |to: SocketAddr, bytes: &'static [u8], expect: usize| async move {
            let mut stream = loop {
                if let Ok(stream) = TcpStream::connect(to).await {
                    break stream;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            stream.write_all(bytes).await.unwrap();
            let mut answer = vec![0u8; expect];
            stream.read_exact(&mut answer).await.unwrap();
            String::from_utf8(answer).unwrap()
        };
        let config = BridgeConfig {
            listen,
            socket: socket.clone(),
            forwards: vec![forward],
        };
        // The child ends once both connections were relayed (a loaded machine may take a
        // while to get there), so the bridge's end follows the child's.
        let relayed_flag = dir.path().join("relayed");
        let script = format!(
            "while [ ! -e '{}' ]; do sleep 0.05; done; exit 7",
            relayed_flag.display()
        );
        let command: Vec<OsString> = vec!["sh".into(), "-c".into(), script.into()];
        let sends = async {
            let both = tokio::join!(
                send(listen, b"ping-pong", 9),
                send(forward, b"ping", forward.to_string().len() + 4),
            );
            std::fs::write(&relayed_flag, "").unwrap();
            both
        };
        let all = async { tokio::join!(run_bridge(config.clone(), &command), sends) };
        let (code, (relayed, tunnelled)) =
            tokio::time::timeout(std::time::Duration::from_secs(60), all)
                .await
                .expect("the bridge relays and ends in time");
        assert_eq!(code.unwrap(), 7);
        assert_eq!(relayed, "ping-pong");
        assert_eq!(
            tunnelled,
            format!("{forward}ping"),
            "tunnelled to the same address"
        );
        let killed: Vec<OsString> = ["sh", "-c", "kill -9 $$"].map(Into::into).to_vec();
        let config = BridgeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            forwards: Vec::new(),
            ..config
        };
        assert_eq!(run_bridge(config.clone(), &killed).await.unwrap(), 128 + 9);
        assert!(run_bridge(config, &[]).await.is_err());
    }
}
