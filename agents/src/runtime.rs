//! Running an agent's command in the workspace, streaming its output line by line.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::egress::Allowlist;
use crate::output::{OutputLine, Stream, pump};
use crate::spec::{PROMPT_FILE, Prompt};

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

/// The agent's home on the worker's disk for the runs whose scratch directory is `scratch`
/// ([`RunRequest::home_dir`]).
pub fn home_in(scratch: &Path) -> PathBuf {
    scratch.join("home")
}

/// What to run and where.
#[derive(Clone)]
pub struct RunRequest {
    pub command: Vec<String>,
    pub workspace: PathBuf,
    /// A directory of the worker's beside the workspace (never inside it, so nothing here
    /// becomes part of the change) for the agent's home and its prompt file.
    pub scratch: PathBuf,
    pub job_id: String,
    /// Where the agent may connect, through the sandbox's egress proxy; `None`: nowhere, its
    /// sandbox has no network. Only [`crate::SandboxRuntime`] enforces it: [`ProcessRuntime`]
    /// cannot (the agent has the worker's network either way).
    pub egress: Option<Allowlist>,
    /// The definition's fixed, non-secret environment.
    pub env: Vec<(String, String)>,
    /// The secrets it declared that the operator configured, by name. A process or sandbox
    /// gets them in its environment after `env`; a job pod's agent container already holds
    /// them, so only their names travel (see [`crate::PodRuntime`]).
    pub secrets: Vec<(String, String)>,
    pub prompt: Prompt,
    /// A directory of agent programs installed outside the system's (`--agent-bin`), searched
    /// first.
    pub agent_bin: Option<PathBuf>,
    /// Directories under the agent's home (relative, checked: no `..`, not absolute) that
    /// outlive one run: they are kept in [`RunRequest::home_dir`] on the worker's disk, so
    /// what setup puts there (`~/.cargo/registry`) the agent finds, and a snapshot keeps it.
    /// The rest of the home is the run's own.
    pub home_cache: Vec<PathBuf>,
}

impl std::fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the names of the environment and the secrets are shown, never a value.
        f.debug_struct("RunRequest")
            .field("command", &self.command)
            .field("workspace", &self.workspace)
            .field("job_id", &self.job_id)
            .field("egress", &self.egress.as_ref().map(Allowlist::policy))
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field(
                "secrets",
                &self.secrets.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RunRequest {
    /// A request with no extra environment and no prompt (the `script` agent, tests).
    pub fn new(command: Vec<String>, workspace: PathBuf, scratch: PathBuf, job_id: &str) -> Self {
        Self {
            command,
            workspace,
            scratch,
            job_id: job_id.to_string(),
            egress: None,
            env: Vec::new(),
            secrets: Vec::new(),
            prompt: Prompt::None,
            agent_bin: None,
            home_cache: Vec::new(),
        }
    }

    /// The agent's home on the worker's disk, in the scratch directory: a process's `HOME`,
    /// and where a sandbox keeps [`RunRequest::home_cache`].
    pub fn home_dir(&self) -> PathBuf {
        home_in(&self.scratch)
    }

    /// The command with `{prompt_file}` replaced by `path`.
    pub(crate) fn command_with_prompt_file(&self, path: &str) -> Vec<String> {
        self.command
            .iter()
            .map(|a| a.replace(PROMPT_FILE, path))
            .collect()
    }

    /// Writes a file prompt into the scratch directory, readable by the agent's user, and
    /// returns its path there.
    pub(crate) fn write_prompt_file(&self) -> std::io::Result<Option<PathBuf>> {
        let Prompt::File(text) = &self.prompt else {
            return Ok(None);
        };
        let path = self.scratch.join("prompt.md");
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        Ok(Some(path))
    }

    /// The agent's extra environment, for a runtime that sets every variable itself: the fixed
    /// variables, then the secrets' values.
    pub(crate) fn environment(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env
            .iter()
            .chain(&self.secrets)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// What the agent reads on standard input.
    pub(crate) fn stdin(&self) -> Option<String> {
        match &self.prompt {
            Prompt::Stdin(text) => Some(text.clone()),
            _ => None,
        }
    }
}

/// Runs an agent; implementations decide the isolation (a process here, bubblewrap in
/// [`crate::SandboxRuntime`], the job pod's agent container in [`crate::PodRuntime`]).
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
/// (its token) never reach the agent. It is not a sandbox: the agent has the worker's network
/// whatever its request's egress says (`--insecure-no-sandbox`).
#[derive(Debug, Clone, Default)]
pub struct ProcessRuntime;

impl AgentRuntime for ProcessRuntime {
    fn run<'a>(
        &'a self,
        request: &'a RunRequest,
        lines: mpsc::Sender<OutputLine>,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send + 'a>> {
        Box::pin(async move {
            if let Some(egress) = &request.egress {
                tracing::warn!(
                    job = %request.job_id,
                    policy = egress.policy(),
                    "the egress allowlist is not enforced without a sandbox: the agent has the worker's network"
                );
            }
            let prompt_file = request.write_prompt_file()?;
            let argv = request.command_with_prompt_file(
                &prompt_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
            let (program, args) = argv.split_first().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty agent command")
            })?;
            let system = std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string());
            let path = match &request.agent_bin {
                Some(bin) => format!("{}:{system}", bin.display()),
                None => system,
            };
            let home = request.home_dir();
            std::fs::create_dir_all(&home)?;
            let mut command = Command::new(program);
            command
                .args(args)
                .current_dir(&request.workspace)
                .env_clear()
                .env("PATH", path)
                .env("HOME", &home)
                .env("CKRV_JOB_ID", &request.job_id)
                .envs(request.environment());
            run_streaming(command, request.stdin(), lines).await
        })
    }
}

/// Runs `command` with `stdin` as its input (none: nothing), sending each line it writes to
/// `lines`, in order read.
pub(crate) async fn run_streaming(
    mut command: Command,
    stdin: Option<String>,
    lines: mpsc::Sender<OutputLine>,
) -> std::io::Result<ExitStatus> {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        // Written beside the reading, so a large prompt cannot block on a full pipe; an agent
        // that stops reading early is its own business.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let _ = input.write_all(text.as_bytes()).await;
            let _ = input.shutdown().await;
        });
    }
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
        RunRequest::new(
            vec!["sh".into(), "-c".into(), script.into()],
            dir.to_path_buf(),
            dir.join(".scratch"),
            "job-1",
        )
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
            [
                "one",
                "two",
                &format!("home={}", dir.path().join(".scratch/home").display())
            ]
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
    async fn the_fixed_env_and_the_secrets_reach_the_agent_and_debug_shows_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut request = request(dir.path(), "echo \"$FIXED $API_KEY\"");
        request.env = vec![("FIXED".into(), "fixed-value".into())];
        request.secrets = vec![("API_KEY".into(), "sk-secret-value".into())];
        let (_, lines) = run_collecting(&ProcessRuntime, &request).await.unwrap();
        let lines: Vec<String> = lines.into_iter().map(|l| l.line).collect();
        assert_eq!(lines, ["fixed-value sk-secret-value"]);
        let debug = format!("{request:?}");
        assert!(debug.contains("\"FIXED\"") && debug.contains("\"API_KEY\""));
        assert!(
            !debug.contains("fixed-value") && !debug.contains("sk-secret-value"),
            "{debug}"
        );
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
