//! The bridge inside the sandbox: agent CLIs take a proxy as a TCP address (`HTTPS_PROXY`),
//! but the sandbox's network namespace has only loopback, and the egress proxy is a Unix
//! socket bound in from the worker. The bridge listens on the sandbox's loopback, relays each
//! connection to that socket, and runs the agent as its child, ending with it.
//!
//! It is the `ckrv-egress-bridge` program (`src/bin/`): bound read-only into the sandbox, it
//! is the sandbox's command, and the agent's command follows its `--`.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

/// The bridge program's name: [`crate::SandboxRuntime`] looks for it beside the worker's own.
pub const BRIDGE_PROGRAM: &str = "ckrv-egress-bridge";

/// Listens on `listen`, relays every connection to the Unix socket `socket`, and runs
/// `command` with this process's standard input and output; returns the command's exit code,
/// 128 + n when signal n ended it. SIGTERM and SIGINT are passed on to it.
pub async fn run_bridge(
    listen: SocketAddr,
    socket: PathBuf,
    command: &[OsString],
) -> io::Result<i32> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command to run"))?;
    // Listening before the agent starts, so its first connection finds the bridge.
    let listener = TcpListener::bind(listen).await?;
    let relay = tokio::spawn(accept(listener, Arc::new(socket)));
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
    relay.abort();
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

async fn accept(listener: TcpListener, socket: Arc<PathBuf>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(relay(stream, socket.clone()));
            }
            Err(error) => {
                eprintln!("{BRIDGE_PROGRAM}: cannot accept a connection: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn relay(mut client: TcpStream, socket: Arc<PathBuf>) {
    match UnixStream::connect(socket.as_path()).await {
        Ok(mut proxy) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut proxy).await;
        }
        // The agent sees its connection closed; its log says why.
        Err(error) => eprintln!(
            "{BRIDGE_PROGRAM}: cannot reach the egress proxy at {}: {error}",
            socket.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn relays_connections_to_the_socket_and_ends_with_the_childs_status() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("proxy.sock");
        let proxy = tokio::net::UnixListener::bind(&socket).unwrap();
        // An echo server in place of the proxy.
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = proxy.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = async move {
            let mut stream = loop {
                if let Ok(stream) = TcpStream::connect(listen).await {
                    break stream;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            stream.write_all(b"ping").await.unwrap();
            let mut echoed = [0u8; 4];
            stream.read_exact(&mut echoed).await.unwrap();
            echoed
        };
        let command: Vec<OsString> = ["sh", "-c", "sleep 1; exit 7"].map(Into::into).to_vec();
        let both = async { tokio::join!(run_bridge(listen, socket.clone(), &command), client) };
        let (code, echoed) = tokio::time::timeout(std::time::Duration::from_secs(20), both)
            .await
            .expect("the bridge relays and ends in time");
        assert_eq!(code.unwrap(), 7);
        assert_eq!(&echoed, b"ping");
        let killed: Vec<OsString> = ["sh", "-c", "kill -9 $$"].map(Into::into).to_vec();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(run_bridge(listen, socket, &killed).await.unwrap(), 128 + 9);
        assert!(run_bridge(listen, dir.path().into(), &[]).await.is_err());
    }
}
