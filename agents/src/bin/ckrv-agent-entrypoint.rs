//! `ckrv-agent-entrypoint`: the first process of a job pod's agent container (docs/job-pod.md).
//!
//! The agent container starts with the pod, from the agent's own image, but the agent must
//! not run before the orchestrator has cloned the repository and the API has closed the pod's
//! network. So the container's command is this small static program, which an init container
//! copied from the worker image (`install`). It waits for the orchestrator's `launch.json`
//! (after `setup.launch.json`, the repository's setup, when there is one), runs the agent with only the environment it is given, its output appended to files the
//! orchestrator follows, stops it when told, and writes how it ended (`run`). The protocol's
//! types are the library's (`ckrv_agents::pod`), shared with the orchestrator's side.
//!
//! It is PID 1 of its container: it reaps whatever is left to it, and it forwards SIGTERM
//! (Kubernetes stopping the pod) to the agent's process group.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use ckrv_agents::pod::{
    ALIVE, AgentExit, DONE, EXIT, HEARTBEAT_INTERVAL, LAUNCH, Launch, PROMPT, PodRun, READY,
    STDERR, STDOUT, STOP, STOP_GRACE, write_atomic,
};
use clap::{Parser, Subcommand};
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use tokio::signal::unix::{SignalKind, signal};

/// How often the control directory is looked at, and the agent's end looked for.
const POLL: Duration = Duration::from_millis(20);
/// Where programs are found when this process has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The name it installs itself under.
const NAME: &str = "ckrv-agent-entrypoint";

#[derive(Parser)]
#[command(
    name = NAME,
    version,
    about = "Runs a ckrv job's agent in its container of the job pod, when the orchestrator says so"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copies this program to DIR/ckrv-agent-entrypoint (mode 0755): the init container puts
    /// it in the volume the agent container runs it from.
    Install {
        /// The directory to copy it into (created if missing)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Waits for the orchestrator's launch.json in --control, runs the agent it names in this
    /// directory, its output and exit status in --output; exits 0 once the status is written,
    /// or when the orchestrator is done without a launch.
    Run {
        /// The orchestrator's directory (read-only here): launch.json, prompt, stop, done
        #[arg(long, value_name = "DIR")]
        control: PathBuf,
        /// This program's directory: ready, alive, stdout, stderr, exit.json
        #[arg(long, value_name = "DIR")]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Install { dir } => install(&dir),
        Command::Run { control, output } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting")
            .and_then(|runtime| runtime.block_on(run(&control, &output))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{NAME}: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `install DIR`.
fn install(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join(NAME);
    let temporary = dir.join(format!(".{NAME}.tmp"));
    std::fs::copy("/proc/self/exe", &temporary)
        .and_then(|_| {
            std::fs::set_permissions(
                &temporary,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
        })
        .and_then(|()| std::fs::rename(&temporary, &target))
        .with_context(|| format!("copying this program to {}", target.display()))?;
    eprintln!("{NAME}: installed {}", target.display());
    Ok(())
}

/// `run --control DIR --output DIR`.
async fn run(control: &Path, output: &Path) -> anyhow::Result<()> {
    if output.join(EXIT).exists() {
        eprintln!("{NAME}: the agent has already run in this pod; nothing to do");
        return Ok(());
    }
    // As PID 1 of the container it is the reaper already; elsewhere (tests, a shell) it
    // becomes one, so the agent's orphans are reaped the same way.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let alive = output.join(ALIVE);
    touch(&alive).with_context(|| {
        format!(
            "writing {} (is the agent-output volume mounted read-write?)",
            alive.display()
        )
    })?;
    let ready = output.join(READY);
    write_atomic(&ready, b"").with_context(|| format!("writing {}", ready.display()))?;
    let heartbeat = tokio::spawn(heartbeat(alive));
    let mut stopping = Stopping::listen()?;

    // The repository's setup may come first; the agent's launch ends the container's work.
    let mut setup_ran = output.join(PodRun::Setup.file(EXIT)).exists();
    loop {
        // A stop or done before the agent started: the orchestrator gave up on it.
        if control.join(DONE).exists() || control.join(STOP).exists() {
            eprintln!("{NAME}: the orchestrator is done; the agent was not started");
            return Ok(());
        }
        if !setup_ran && control.join(PodRun::Setup.file(LAUNCH)).exists() {
            launch(PodRun::Setup, control, output, &mut stopping).await?;
            setup_ran = true;
            // Nothing setup started outlives it: not its processes, nor its connections.
            end_leftovers();
            if stopping.received {
                return Ok(());
            }
            continue;
        }
        if control.join(LAUNCH).exists() {
            launch(PodRun::Agent, control, output, &mut stopping).await?;
            if !stopping.received {
                end_leftovers();
                verification(control, output, &mut stopping).await?;
            }
            heartbeat.abort();
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stopping.signalled() => {
                eprintln!("{NAME}: stopped before a launch");
                return Ok(());
            }
        }
    }
}

/// After the agent, the job's verification may run in this container (docs/verification.md):
/// waits for its launch, and runs it, until the orchestrator says it is done.
async fn verification(
    control: &Path,
    output: &Path,
    stopping: &mut Stopping,
) -> anyhow::Result<()> {
    loop {
        if control.join(DONE).exists() || control.join(STOP).exists() {
            return Ok(());
        }
        if control.join(PodRun::Verify.file(LAUNCH)).exists() {
            launch(PodRun::Verify, control, output, stopping).await?;
            end_leftovers();
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stopping.signalled() => return Ok(()),
        }
    }
}

/// Reads `run`'s launch, runs it to its end and writes how it ended.
async fn launch(
    run: PodRun,
    control: &Path,
    output: &Path,
    stopping: &mut Stopping,
) -> anyhow::Result<()> {
    let launch_path = control.join(run.file(LAUNCH));
    let launch = std::fs::read(&launch_path)
        .map_err(|e| format!("reading {}: {e}", launch_path.display()))
        .and_then(|bytes| Launch::parse(&bytes).map_err(|e| e.to_string()));
    let exit = match launch {
        Ok(launch) => run_agent(&launch, run, control, output, stopping).await,
        Err(why) => AgentExit::Error(why),
    };
    let exit_path = output.join(run.file(EXIT));
    let json = serde_json::to_vec(&exit).context("encoding the exit status")?;
    write_atomic(&exit_path, &json).with_context(|| format!("writing {}", exit_path.display()))?;
    let what = match run {
        PodRun::Setup => "setup",
        PodRun::Agent => "the agent",
        PodRun::Verify => "the verification",
    };
    match exit {
        AgentExit::Code(code) => eprintln!("{NAME}: {what} exited with status {code}"),
        AgentExit::Signal(signal) => eprintln!("{NAME}: {what} was killed by signal {signal}"),
        AgentExit::Error(why) => eprintln!("{NAME}: {what} did not run: {why}"),
    }
    Ok(())
}

/// As the container's PID 1, kills every other process in it: what a run started outside its
/// process group (a daemon that called `setsid`) ends before the next run. Elsewhere (a test,
/// a shell) that would reach the whole machine, so it only reaps.
fn end_leftovers() {
    if rustix::process::getpid().is_init() {
        // kill(-1): every process this one may signal, which in a container is all the others.
        let _ = rustix::process::kill_process_group(Pid::INIT, Signal::KILL);
    }
    reap(Pid::INIT);
}

/// Runs the agent (or setup) to its end, or until it is stopped, and says how it ended.
async fn run_agent(
    launch: &Launch,
    run: PodRun,
    control: &Path,
    output: &Path,
    stopping: &mut Stopping,
) -> AgentExit {
    let Some((program, args)) = launch.argv.split_first() else {
        return AgentExit::Error("empty agent command".into());
    };
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .envs(["HOME", "CKRV_JOB_ID"].into_iter().filter_map(own_var))
        .envs(&launch.env)
        // A secret the container was not given is simply not set.
        .envs(launch.secrets.iter().filter_map(|name| own_var(name)))
        // Its own group, so it and everything it starts are stopped together.
        .process_group(0);
    let stdin = if launch.stdin {
        let prompt = control.join(run.file(PROMPT));
        match std::fs::File::open(&prompt) {
            Ok(file) => Stdio::from(file),
            Err(e) => return AgentExit::Error(format!("reading {}: {e}", prompt.display())),
        }
    } else {
        Stdio::null()
    };
    command.stdin(stdin);
    for (name, to_stderr) in [(STDOUT, false), (STDERR, true)] {
        let path = output.join(run.file(name));
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) if to_stderr => command.stderr(file),
            Ok(file) => command.stdout(file),
            Err(e) => return AgentExit::Error(format!("opening {}: {e}", path.display())),
        };
    }
    let spawned = command.spawn();
    // Its copies of the output files close here: once the agent has ended, nothing of this
    // process holds them open.
    drop(command);
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return AgentExit::Error(format!("could not start `{program}`: {}", plain(&e)));
        }
    };
    let pid = Pid::from_child(&child);
    eprintln!("{NAME}: started `{program}` (pid {pid})");
    let stop = control.join(run.file(STOP));
    let mut term_sent: Option<tokio::time::Instant> = None;
    let mut killed = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = stopping.signalled(), if term_sent.is_none() => {
                eprintln!("{NAME}: signalled; stopping the agent");
                term_sent = Some(stop_group(pid));
            }
        }
        if let Some(status) = reap(pid) {
            // What it left running in its group ends with it.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            return exit_of(status);
        }
        if term_sent.is_none() && (stop.exists() || control.join(DONE).exists()) {
            eprintln!("{NAME}: the orchestrator says stop; stopping the agent");
            term_sent = Some(stop_group(pid));
        }
        if let Some(sent) = term_sent
            && !killed
            && sent.elapsed() >= STOP_GRACE
        {
            eprintln!(
                "{NAME}: the agent is still running {}s after SIGTERM; SIGKILL",
                STOP_GRACE.as_secs()
            );
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            killed = true;
        }
    }
}

/// SIGTERM to the agent's process group; returns when it was sent.
fn stop_group(pid: Pid) -> tokio::time::Instant {
    let _ = rustix::process::kill_process_group(pid, Signal::TERM);
    tokio::time::Instant::now()
}

/// Reaps every child that has ended (as PID 1, orphans come here too); the agent's status
/// when it is among them.
fn reap(agent: Pid) -> Option<WaitStatus> {
    let mut found = None;
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        if pid == agent {
            found = Some(status);
        }
    }
    found
}

fn exit_of(status: WaitStatus) -> AgentExit {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => AgentExit::Code(code),
        (None, Some(signal)) => AgentExit::Signal(signal),
        (None, None) => AgentExit::Error(format!("the agent ended oddly: {status:?}")),
    }
}

/// `name=value` from this process's environment, when set.
fn own_var(name: &str) -> Option<(&str, std::ffi::OsString)> {
    std::env::var_os(name).map(|value| (name, value))
}

/// An OS error's words without the "(os error N)" Rust adds.
fn plain(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// Sets `path`'s modification time to now, creating it if needed.
fn touch(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

/// Touches `alive` every [`HEARTBEAT_INTERVAL`], for as long as this process runs.
async fn heartbeat(alive: PathBuf) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match touch(&alive) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                eprintln!("{NAME}: touching {} failed: {e}", alive.display());
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// SIGTERM and SIGINT to this process: Kubernetes (or a person) stopping the container.
struct Stopping {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    /// A signal came: nothing more is launched.
    received: bool,
}

impl Stopping {
    fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            received: false,
        })
    }

    async fn signalled(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        self.received = true;
    }
}
