//! The agent in a Kubernetes job pod (docs/job-pod.md), from the orchestrator's side.
//!
//! On Kubernetes the agent runs in its own container of the job's pod, from its own image, and
//! the container is its sandbox: it shares the workspace with the orchestrator and a few files,
//! nothing else. The two sides speak through those files: the orchestrator writes the agent's
//! invocation ([`Launch`], `launch.json`), `ckrv-agent-entrypoint` (the agent container's first
//! process, `src/bin/ckrv-agent-entrypoint.rs`) runs it, appends its output to files the
//! orchestrator follows as they grow, and writes how it ended ([`AgentExit`], `exit.json`).
//! This module holds that protocol, once, for both sides, and [`PodRuntime`], the
//! [`AgentRuntime`] that drives it.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::output::{OutputLine, Stream, pump};
use crate::runtime::{AgentRuntime, ExitStatus, RunRequest};
use crate::spec::Prompt;

/// In the control directory (the orchestrator's): the agent's invocation, run it now.
pub const LAUNCH: &str = "launch.json";
/// In the control directory: the spec's text, for an agent that reads it on stdin or in a file.
pub const PROMPT: &str = "prompt";
/// In the control directory: stop the agent now.
pub const STOP: &str = "stop";
/// In the control directory: the orchestrator has ended; nothing more will be launched.
pub const DONE: &str = "done";
/// In the output directory (the entrypoint's): the agent container runs and waits.
pub const READY: &str = "ready";
/// In the output directory: its modification time is the entrypoint's heartbeat.
pub const ALIVE: &str = "alive";
/// In the output directory: the agent's standard output, raw, appended.
pub const STDOUT: &str = "stdout";
/// In the output directory: the agent's standard error, raw, appended.
pub const STDERR: &str = "stderr";
/// In the output directory: how the agent ended.
pub const EXIT: &str = "exit.json";
/// The prefix of the setup run's files ([`PodRun::Setup`]): `setup.launch.json`,
/// `setup.stdout`, and so on.
pub const SETUP_PREFIX: &str = "setup.";
/// The prefix of the verification run's files ([`PodRun::Verify`]).
pub const VERIFY_PREFIX: &str = "verify.";

/// Which of the agent container's runs a file belongs to: the repository's setup
/// (docs/environments.md) runs first, when there is one, then the agent, then the job's
/// verification (docs/verification.md) when it has one, each with its own launch, stop, output
/// and exit status; `ready`, `alive` and `done` are the container's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodRun {
    Setup,
    #[default]
    Agent,
    Verify,
}

impl PodRun {
    /// The name of this run's `file` (one of [`LAUNCH`], [`PROMPT`], [`STOP`], [`STDOUT`],
    /// [`STDERR`], [`EXIT`]).
    pub fn file(self, file: &str) -> String {
        match self {
            Self::Setup => format!("{SETUP_PREFIX}{file}"),
            Self::Agent => file.to_string(),
            Self::Verify => format!("{VERIFY_PREFIX}{file}"),
        }
    }
}

/// The version of `launch.json` this crate writes and reads.
pub const LAUNCH_VERSION: u32 = 1;
/// How often the entrypoint touches [`ALIVE`].
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How old [`ALIVE`] may get while the agent runs before the orchestrator gives up on it.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the agent has between SIGTERM and SIGKILL when it is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a follower looks for more output when it has read all there is: a line reaches
/// the job log this soon after the agent wrote it.
const OUTPUT_POLL: Duration = Duration::from_millis(10);
/// How often the orchestrator looks for the exit status and the heartbeat.
const EXIT_POLL: Duration = Duration::from_millis(20);
/// How often the orchestrator looks for the agent container's `ready`.
const READY_POLL: Duration = Duration::from_millis(50);
/// The buffer between a follower and the line reader.
const FOLLOW_BUFFER: usize = 64 * 1024;

/// `launch.json`: what the entrypoint runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// [`LAUNCH_VERSION`].
    pub version: u32,
    /// Program and arguments, `{prompt_file}` already replaced by the control directory's
    /// [`PROMPT`].
    pub argv: Vec<String>,
    /// The definition's fixed, non-secret environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The names of the secrets the entrypoint copies from its own environment (the agent
    /// container has them from the job's Secret); never their values.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The agent's standard input is [`PROMPT`] (else nothing).
    #[serde(default)]
    pub stdin: bool,
}

impl Launch {
    /// Parses `launch.json`, refusing a version this build does not speak.
    pub fn parse(bytes: &[u8]) -> Result<Self, PodError> {
        let launch: Self = serde_json::from_slice(bytes).map_err(PodError::BadLaunch)?;
        if launch.version != LAUNCH_VERSION {
            return Err(PodError::LaunchVersion(launch.version));
        }
        if launch.argv.is_empty() {
            return Err(PodError::EmptyCommand);
        }
        Ok(launch)
    }
}

/// `exit.json`: `{"code": N}`, `{"signal": N}` or `{"error": "why it could not start"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentExit {
    Code(i32),
    Signal(i32),
    Error(String),
}

/// What can go wrong between the orchestrator and the agent's container.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("the agent's container stopped answering (no heartbeat for {}s)", .0.as_secs())]
    NoHeartbeat(Duration),
    /// The entrypoint could not run the agent: its words.
    #[error("{0}")]
    NotStarted(String),
    /// One launch of each run per pod: the launch file's name.
    #[error("already launched in this pod ({0} exists)")]
    AlreadyLaunched(String),
    #[error("empty agent command")]
    EmptyCommand,
    #[error("{LAUNCH} is not valid: {0}")]
    BadLaunch(#[source] serde_json::Error),
    #[error("{LAUNCH} has version {0}; this entrypoint speaks version {LAUNCH_VERSION}")]
    LaunchVersion(u32),
    #[error("the agent's {EXIT} is not valid: {0}")]
    BadExit(#[source] serde_json::Error),
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PodError {
    fn file(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::File { what, path, source }
    }
}

impl From<PodError> for std::io::Error {
    fn from(error: PodError) -> Self {
        Self::other(error)
    }
}

/// The arguments `ckrv-agent-entrypoint` runs with in the agent container, after its own name:
/// what the dispatcher writes into the job pod, and what tests start it with.
pub fn entrypoint_args(control: &Path, output: &Path) -> Vec<std::ffi::OsString> {
    vec![
        "run".into(),
        "--control".into(),
        control.as_os_str().to_owned(),
        "--output".into(),
        output.as_os_str().to_owned(),
    ]
}

/// Writes `bytes` to `path` whole or not at all, for a reader in another container: a
/// temporary file in the same directory, readable by all (the two containers may run as
/// different users), renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "no file name"))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::write(&temporary, bytes)
        .and_then(|()| {
            std::fs::set_permissions(
                &temporary,
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Writes the control directory's [`DONE`]: the orchestrator is ending, and an agent container
/// still waiting for a launch may end too.
pub fn write_done(control: &Path) -> std::io::Result<()> {
    write_atomic(&control.join(DONE), b"")
}

/// With egress, the variables naming the API's egress proxy, which the pod's agent container
/// holds when the API runs one (from the job's Secret: its URL carries the job's model token):
/// the agent gets them, or nothing where the container has none.
fn proxy_variables(request: &RunRequest) -> impl Iterator<Item = String> + '_ {
    let names = crate::egress::PROXY_VARIABLES
        .into_iter()
        .chain(crate::egress::NO_PROXY_VARIABLES);
    names
        .filter(|_| request.egress.is_some())
        .map(str::to_string)
}

/// Runs the agent in the job pod's agent container, through the files in `control` (the
/// orchestrator's, read-only to the agent) and `output` (the entrypoint's, read-only here).
#[derive(Debug, Clone)]
pub struct PodRuntime {
    pub control: PathBuf,
    pub output: PathBuf,
    /// The run this runtime launches: the agent, or the repository's setup before it.
    pub run: PodRun,
    /// The agent container's home as the orchestrator mounts it, where the environment's
    /// `~/` cache paths are restored and packed; without it they stay out of the pod.
    pub home: Option<PathBuf>,
    /// How old the entrypoint's heartbeat may get while the agent runs ([`HEARTBEAT_TIMEOUT`]).
    pub heartbeat_timeout: Duration,
}

impl PodRuntime {
    pub fn new(control: PathBuf, output: PathBuf) -> Self {
        Self {
            control,
            output,
            run: PodRun::Agent,
            home: None,
            heartbeat_timeout: HEARTBEAT_TIMEOUT,
        }
    }

    /// The same container, launching the repository's setup.
    pub fn for_setup(&self) -> Self {
        Self {
            run: PodRun::Setup,
            ..self.clone()
        }
    }

    fn control_file(&self, file: &str) -> PathBuf {
        self.control.join(self.run.file(file))
    }

    fn output_file(&self, file: &str) -> PathBuf {
        self.output.join(self.run.file(file))
    }

    /// The `launch.json` for `request`: the secrets by name only.
    pub fn launch(&self, request: &RunRequest) -> Launch {
        let prompt = self.control_file(PROMPT);
        Launch {
            version: LAUNCH_VERSION,
            argv: request.command_with_prompt_file(&prompt.display().to_string()),
            env: request.env.iter().cloned().collect(),
            secrets: request
                .secrets
                .iter()
                .map(|(name, _)| name.clone())
                .chain(proxy_variables(request))
                .collect(),
            stdin: matches!(request.prompt, Prompt::Stdin(_)),
        }
    }

    async fn run_agent(
        &self,
        request: &RunRequest,
        lines: mpsc::Sender<OutputLine>,
    ) -> Result<ExitStatus, PodError> {
        if request.command.is_empty() {
            return Err(PodError::EmptyCommand);
        }
        let launch_path = self.control_file(LAUNCH);
        if launch_path.exists() {
            return Err(PodError::AlreadyLaunched(self.run.file(LAUNCH)));
        }
        if let Prompt::Stdin(text) | Prompt::File(text) = &request.prompt {
            let path = self.control_file(PROMPT);
            write_atomic(&path, text.as_bytes())
                .map_err(PodError::file("writing the prompt", &path))?;
        }
        let launch = serde_json::to_vec(&self.launch(request)).map_err(PodError::BadLaunch)?;
        write_atomic(&launch_path, &launch)
            .map_err(PodError::file("writing the launch", &launch_path))?;
        // From here on, a run that does not see the agent's end tells it to stop.
        let stop = StopOnDrop(Some(self.control_file(STOP)));
        self.wait_ready().await;
        let ended = AtomicBool::new(false);
        tokio::try_join!(
            self.watch(&ended),
            follow_lines(
                self.output_file(STDOUT),
                Stream::Stdout,
                &ended,
                lines.clone()
            ),
            follow_lines(self.output_file(STDERR), Stream::Stderr, &ended, lines),
        )?;
        stop.disarm();
        let path = self.output_file(EXIT);
        let bytes = std::fs::read(&path).map_err(PodError::file("reading", &path))?;
        match serde_json::from_slice(&bytes).map_err(PodError::BadExit)? {
            AgentExit::Code(code) => Ok(ExitStatus { code: Some(code) }),
            AgentExit::Signal(_) => Ok(ExitStatus { code: None }),
            AgentExit::Error(why) => Err(PodError::NotStarted(why)),
        }
    }

    /// Waits, however long, for the agent container to start: its image may still be pulling,
    /// and the API's watcher fails a pod that cannot start.
    async fn wait_ready(&self) {
        let ready = self.output.join(READY);
        if ready.exists() {
            return;
        }
        tracing::info!("waiting for the agent's container to start");
        while !ready.exists() {
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Returns once the agent's exit status is there (and `ended` says so to the followers),
    /// or fails when the entrypoint's heartbeat stops.
    async fn watch(&self, ended: &AtomicBool) -> Result<(), PodError> {
        let exit = self.output_file(EXIT);
        loop {
            if exit.exists() {
                ended.store(true, Ordering::Release);
                return Ok(());
            }
            if self.heartbeat_age() > self.heartbeat_timeout {
                return Err(PodError::NoHeartbeat(self.heartbeat_timeout));
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// How long ago the entrypoint last touched [`ALIVE`] (or, before that, wrote [`READY`]).
    fn heartbeat_age(&self) -> Duration {
        let touched = |name| std::fs::metadata(self.output.join(name))?.modified();
        match touched(ALIVE).or_else(|_| touched(READY)) {
            // A time ahead of ours is a heartbeat now.
            Ok(at) => SystemTime::now().duration_since(at).unwrap_or_default(),
            Err(_) => Duration::MAX,
        }
    }
}

impl AgentRuntime for PodRuntime {
    fn run<'a>(
        &'a self,
        request: &'a RunRequest,
        lines: mpsc::Sender<OutputLine>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<ExitStatus>> + Send + 'a>> {
        Box::pin(async move { Ok(self.run_agent(request, lines).await?) })
    }
}

/// Writes `stop` when dropped armed: the run was abandoned (the job was cancelled or timed
/// out) or failed before the agent's end.
struct StopOnDrop(Option<PathBuf>);

impl StopOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            tracing::info!("telling the agent's container to stop the agent");
            if let Err(e) = write_atomic(&path, b"") {
                tracing::warn!(error = %e, path = %path.display(), "writing the agent's stop failed");
            }
        }
    }
}

/// Turns the output file at `path` into lines of `stream`, as it grows, until `ended` and all
/// of it is read.
async fn follow_lines(
    path: PathBuf,
    stream: Stream,
    ended: &AtomicBool,
    lines: mpsc::Sender<OutputLine>,
) -> Result<(), PodError> {
    let (writer, reader) = tokio::io::duplex(FOLLOW_BUFFER);
    let (followed, ()) = tokio::join!(follow(&path, ended, writer), pump(reader, stream, lines));
    followed.map_err(PodError::file("reading the agent's output", &path))
}

/// Copies the file at `path` to `out` as it grows. Once `ended` is set (the writer has closed
/// it), one more read to its end, then `out` is closed. A file that does not exist yet is
/// empty.
async fn follow(
    path: &Path,
    ended: &AtomicBool,
    mut out: tokio::io::DuplexStream,
) -> std::io::Result<()> {
    let mut file: Option<tokio::fs::File> = None;
    let mut buf = vec![0u8; FOLLOW_BUFFER];
    let mut last_pass = false;
    loop {
        if file.is_none() {
            match tokio::fs::File::open(path).await {
                Ok(opened) => file = Some(opened),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let read = match &mut file {
            Some(file) => file.read(&mut buf).await?,
            None => 0,
        };
        if read > 0 {
            if out.write_all(&buf[..read]).await.is_err() {
                // Nobody reads the lines any more.
                return Ok(());
            }
            continue;
        }
        if last_pass {
            return Ok(());
        }
        // Everything written before the exit status is in the file: read up to its end once
        // more, and stop there.
        if ended.load(Ordering::Acquire) {
            last_pass = true;
            continue;
        }
        tokio::time::sleep(OUTPUT_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request(prompt: Prompt) -> RunRequest {
        let mut request = RunRequest::new(
            vec![
                "aider".into(),
                "--message-file".into(),
                "{prompt_file}".into(),
            ],
            "/workspace".into(),
            "/scratch".into(),
            "job-1",
        );
        request.env = vec![("PYTHONUNBUFFERED".into(), "1".into())];
        request.secrets = vec![("ANTHROPIC_API_KEY".into(), "sk-ant-secret".into())];
        request.prompt = prompt;
        request
    }

    #[test]
    fn the_launch_names_the_secrets_but_holds_no_value() {
        let pod = PodRuntime::new("/ckrv/control".into(), "/ckrv/agent".into());
        let launch = pod.launch(&request(Prompt::File("Do it\n".into())));
        assert_eq!(
            launch.argv,
            ["aider", "--message-file", "/ckrv/control/prompt"]
        );
        assert_eq!(launch.secrets, ["ANTHROPIC_API_KEY"]);
        assert!(!launch.stdin);
        let json = String::from_utf8(serde_json::to_vec(&launch).unwrap()).unwrap();
        assert!(!json.contains("sk-ant-secret"), "{json}");
        assert_eq!(
            json,
            r#"{"version":1,"argv":["aider","--message-file","/ckrv/control/prompt"],"env":{"PYTHONUNBUFFERED":"1"},"secrets":["ANTHROPIC_API_KEY"],"stdin":false}"#
        );
        assert_eq!(Launch::parse(json.as_bytes()).unwrap(), launch);
        assert!(pod.launch(&request(Prompt::Stdin("x".into()))).stdin);
    }

    #[test]
    fn with_egress_the_launch_names_the_proxy_variables_too() {
        let pod = PodRuntime::new("/ckrv/control".into(), "/ckrv/agent".into());
        let mut request = request(Prompt::Stdin("x".into()));
        request.egress = crate::Policy::Model.allowlist(None);
        let launch = pod.launch(&request);
        assert_eq!(
            launch.secrets,
            [
                "ANTHROPIC_API_KEY",
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "http_proxy",
                "https_proxy",
                "NO_PROXY",
                "no_proxy"
            ]
        );
        request.egress = None;
        assert_eq!(pod.launch(&request).secrets, ["ANTHROPIC_API_KEY"]);
    }

    #[test]
    fn a_launch_of_another_version_or_shape_is_refused() {
        let other = r#"{"version":2,"argv":["sh"]}"#;
        assert!(matches!(
            Launch::parse(other.as_bytes()),
            Err(PodError::LaunchVersion(2))
        ));
        let unknown = r#"{"version":1,"argv":["sh"],"workdir":"/"}"#;
        assert!(matches!(
            Launch::parse(unknown.as_bytes()),
            Err(PodError::BadLaunch(_))
        ));
        let empty = r#"{"version":1,"argv":[]}"#;
        assert!(matches!(
            Launch::parse(empty.as_bytes()),
            Err(PodError::EmptyCommand)
        ));
        // The optional fields may be left out.
        let minimal = Launch::parse(br#"{"version":1,"argv":["true"]}"#).unwrap();
        assert!(minimal.env.is_empty() && minimal.secrets.is_empty() && !minimal.stdin);
    }

    #[test]
    fn exit_statuses_are_the_documented_json() {
        for (exit, json) in [
            (AgentExit::Code(3), r#"{"code":3}"#),
            (AgentExit::Signal(15), r#"{"signal":15}"#),
            (
                AgentExit::Error("could not start `claude`: No such file or directory".into()),
                r#"{"error":"could not start `claude`: No such file or directory"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&exit).unwrap(), json);
            assert_eq!(serde_json::from_str::<AgentExit>(json).unwrap(), exit);
        }
    }

    #[test]
    fn an_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("launch.json"), b"{}").unwrap();
        write_atomic(&dir.path().join("launch.json"), b"{\"a\":1}").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["launch.json"]);
        assert_eq!(
            std::fs::read(dir.path().join("launch.json")).unwrap(),
            b"{\"a\":1}"
        );
    }

    #[tokio::test]
    async fn a_dropped_run_writes_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (control, output) = (dir.path().join("control"), dir.path().join("agent"));
        std::fs::create_dir_all(&control).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        let pod = PodRuntime::new(control.clone(), output);
        let request = request(Prompt::Stdin("Do it\n".into()));
        let (tx, _rx) = mpsc::channel(1);
        // No container answers: the run waits for `ready` until it is dropped.
        let run = pod.run(&request, tx);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), run)
                .await
                .is_err()
        );
        assert_eq!(std::fs::read(control.join(PROMPT)).unwrap(), b"Do it\n");
        assert!(control.join(LAUNCH).exists());
        assert!(control.join(STOP).exists());
        // One launch per pod.
        let (tx, _rx) = mpsc::channel(1);
        let error = pod.run(&request, tx).await.unwrap_err();
        assert!(error.to_string().contains("already launched"), "{error}");
    }
}
