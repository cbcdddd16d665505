//! Running an agent's command in the workspace, streaming its output line by line.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::output::pump;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of the agent's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    pub line: String,
}

/// How the agent ended: its exit code, or `None` when a signal killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self.code == Some(0)
    }
}

/// What to run and where.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub command: Vec<String>,
    pub workspace: PathBuf,
    pub job_id: String,
    /// The agent's definition asks for network access.
    pub network: bool,
}

/// Runs an agent; implementations decide the isolation (a process here, a container later).
pub trait AgentRuntime: Send + Sync {
    /// Runs to completion, sending every output line to `lines` in the order it was read; a
    /// full channel makes the agent wait.
    fn run<'a>(
        &'a self,
        request: &'a RunRequest,
        lines: mpsc::Sender<OutputLine>,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send + 'a>>;
}

/// Runs the agent and gathers its whole output: for tests and small tools, where the output is
/// known to be small.
pub async fn run_collecting(
    runtime: &dyn AgentRuntime,
    request: &RunRequest,
) -> std::io::Result<(ExitStatus, Vec<OutputLine>)> {
    let (tx, mut rx) = mpsc::channel(64);
    let collect = async {
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines
    };
    let (status, lines) = tokio::join!(runtime.run(request, tx), collect);
    Ok((status?, lines))
}

/// Runs the agent as a child process with a minimal environment, so the worker's own secrets
/// (its token) never reach the agent.
#[derive(Debug, Clone, Default)]
pub struct ProcessRuntime;

impl AgentRuntime for ProcessRuntime {
    fn run<'a>(
        &'a self,
        request: &'a RunRequest,
        lines: mpsc::Sender<OutputLine>,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send + 'a>> {
        Box::pin(async move {
            let (program, args) = request.command.split_first().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty agent command")
            })?;
            let path = std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
            let mut command = Command::new(program);
            command
                .args(args)
                .current_dir(&request.workspace)
                .env_clear()
                .env("PATH", path)
                .env("HOME", &request.workspace)
                .env("CKRV_JOB_ID", &request.job_id);
            run_streaming(command, lines).await
        })
    }
}

/// Runs `command` with no input, sending each line it writes to `lines`, in order read.
pub(crate) async fn run_streaming(
    mut command: Command,
    lines: mpsc::Sender<OutputLine>,
) -> std::io::Result<ExitStatus> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = child
        .stdout
        .take()
        .map(|out| tokio::spawn(pump(out, Stream::Stdout, lines.clone())));
    let err = child
        .stderr
        .take()
        .map(|err| tokio::spawn(pump(err, Stream::Stderr, lines)));
    // Every line is sent before the exit is reported.
    for reader in [out, err].into_iter().flatten() {
        reader.await.map_err(std::io::Error::other)?;
    }
    let status = child.wait().await?;
    Ok(ExitStatus {
        code: status.code(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(dir: &std::path::Path, script: &str) -> RunRequest {
        RunRequest {
            command: vec!["sh".into(), "-c".into(), script.into()],
            workspace: dir.to_path_buf(),
            job_id: "job-1".into(),
            network: false,
        }
    }

    #[tokio::test]
    async fn runs_a_script_in_the_workspace_and_captures_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (status, lines) = run_collecting(
            &ProcessRuntime,
            &request(
                dir.path(),
                "echo one; echo two; echo \"$CKRV_JOB_ID\" > out.txt; echo \"home=$HOME\"; echo oops >&2",
            ),
        )
        .await
        .unwrap();
        assert!(status.success());
        let stdout: Vec<_> = lines
            .iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.line.clone())
            .collect();
        assert_eq!(
            stdout,
            ["one", "two", &format!("home={}", dir.path().display())]
        );
        assert!(lines.contains(&OutputLine {
            stream: Stream::Stderr,
            line: "oops".into()
        }));
        let written = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
        assert_eq!(written.trim(), "job-1");
    }

    #[tokio::test]
    async fn reports_a_non_zero_exit() {
        let dir = tempfile::tempdir().unwrap();
        let (status, _) = run_collecting(&ProcessRuntime, &request(dir.path(), "echo bye; exit 3"))
            .await
            .unwrap();
        assert_eq!(status.code, Some(3));
        assert!(!status.success());
    }

    #[tokio::test]
    async fn the_worker_environment_does_not_leak() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo \"token=${CKRV_WORKER_TOKEN:-none}\"";
        let (_, lines) = run_collecting(&ProcessRuntime, &request(dir.path(), script))
            .await
            .unwrap();
        let lines: Vec<String> = lines.into_iter().map(|l| l.line).collect();
        assert_eq!(lines, ["token=none"]);
    }
}
