//! Where a job's agent runs (its sandbox, its container of a job pod, or, when the operator
//! said so, unsandboxed), and running a command there: the agent itself, the repository's
//! setup and the job's verification all run the same way.

use std::path::Path;

use ckrv_agents::pod::PodRun;
use ckrv_agents::{
    AgentRuntime, ExitStatus, PodRuntime, ProcessRuntime, RunRequest, SandboxLimits,
    SandboxRuntime, SandboxUnavailable, Stream,
};
use ckrv_wit::protocol::EGRESS_LOG_SOURCE as EGRESS_SOURCE;
use ckrv_wit::types::LogLevel;

use crate::logs::JobLog;

const SOURCE: &str = "orchestrator";

/// Where a job's agent runs.
#[derive(Debug, Clone)]
pub enum AgentPlace {
    /// In bubblewrap, on this machine, within these limits.
    Sandbox(SandboxLimits),
    /// As a plain process with the worker's rights: only when the operator said so, insecurely.
    Unsandboxed,
    /// In its own container of the job's Kubernetes pod, which is its sandbox
    /// (docs/job-pod.md).
    Pod(PodRuntime),
}

impl AgentPlace {
    /// The sandbox within `limits`, unless `sandbox` is false.
    pub fn local(sandbox: bool, limits: SandboxLimits) -> Self {
        if sandbox {
            Self::Sandbox(limits)
        } else {
            Self::Unsandboxed
        }
    }
}

/// How many of a run's last output lines an error quotes.
pub(crate) const LAST_LINES: usize = 10;

/// Runs `request` where the job's agent runs (its sandbox, its pod's agent container, or
/// unsandboxed), its output streamed to the job log under `name`; in a job pod, as the agent
/// container's `run`. Returns how it ended and its last [`LAST_LINES`] lines of output.
pub(crate) async fn run_where_the_agent_runs(
    place: &AgentPlace,
    egress_bridge: Option<&Path>,
    log: &JobLog,
    name: &str,
    run: PodRun,
    request: &RunRequest,
) -> Result<(std::io::Result<ExitStatus>, Vec<String>), SandboxUnavailable> {
    let (lines, mut output) = tokio::sync::mpsc::channel::<ckrv_agents::OutputLine>(256);
    let mut last = std::collections::VecDeque::with_capacity(LAST_LINES);
    let forward = async {
        while let Some(line) = output.recv().await {
            let level = match line.stream {
                Stream::Stdout => LogLevel::Info,
                Stream::Stderr => LogLevel::Warn,
                // A connection the job's egress policy refused: one line under its own source,
                // which the API counts for `ckrv status`.
                Stream::Egress => {
                    log.send(LogLevel::Warn, EGRESS_SOURCE, line.line).await;
                    continue;
                }
            };
            if last.len() == LAST_LINES {
                last.pop_front();
            }
            last.push_back(line.line.clone());
            log.send(level, name, line.line).await;
        }
    };
    let pod_run: PodRuntime;
    let mut sandbox = match place {
        AgentPlace::Sandbox(limits) => SandboxRuntime::new(*limits),
        _ => SandboxRuntime::default(),
    };
    if let Some(bridge) = egress_bridge {
        sandbox.bridge = Some(bridge.to_path_buf());
    }
    let runtime: &dyn AgentRuntime = match place {
        AgentPlace::Sandbox(_) => {
            sandbox.probe().await?;
            &sandbox
        }
        AgentPlace::Unsandboxed => {
            log.warn(
                SOURCE,
                "WARNING: this agent runs without a sandbox, with the worker's rights: the server was started with --insecure-no-sandbox",
            );
            &ProcessRuntime
        }
        AgentPlace::Pod(pod) => {
            log.info(
                SOURCE,
                match run {
                    PodRun::Agent => "The agent runs in its own container of the job's pod",
                    PodRun::Setup => "Setup runs in the agent's container of the job's pod",
                    PodRun::Verify => {
                        "The verification runs in the agent's container of the job's pod"
                    }
                },
            );
            pod_run = PodRuntime { run, ..pod.clone() };
            &pod_run
        }
    };
    let run = runtime.run(request, lines);
    let (status, ()) = tokio::join!(run, forward);
    Ok((status, last.into()))
}
