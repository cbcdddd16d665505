//! `ckrv-orchestrator step run`: a step author's harness. It runs one component against a
//! directory with the worker's own host (same imports, same sandbox, same limits), without an
//! API, and prints the step's log and output.

use anyhow::Context as _;
use ckrv_orchestrator::host_git::HostGit;
use ckrv_orchestrator::logs::JobLog;
use ckrv_orchestrator::step_host::{DEFAULT_LIMITS, StepContext, StepEnv, StepRunner};
use ckrv_wasm_host::{Limits, Origin, OriginPolicy};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum StepCommand {
    /// Runs a step component against a workspace directory, as a worker would, without an API.
    ///
    /// If the workspace is a git checkout, its repository stands in for the job's base, so the
    /// step's `git.diff` compares with `--base`. Exits 0 when the step succeeds, 1 when it fails.
    Run(RunArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The step's component (a `.wasm` built for wasm32-wasip2).
    component: PathBuf,
    /// The directory the step sees as `/workspace`.
    #[arg(long)]
    workspace: PathBuf,
    /// A parameter, as a pipeline's `params` would give it (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
    params: Vec<(String, String)>,
    /// An output of an earlier step (repeatable).
    #[arg(long = "input", value_name = "KEY=VALUE", value_parser = key_value)]
    inputs: Vec<(String, String)>,
    /// The base the step's `git.diff` compares with (a branch or commit of the workspace's
    /// repository).
    #[arg(long, default_value = "HEAD")]
    base: String,
    /// The stage's `timeout_s`.
    #[arg(long, default_value_t = DEFAULT_LIMITS.timeout.as_secs())]
    timeout_s: u64,
    /// The stage's `memory_mb`.
    #[arg(long, default_value_t = DEFAULT_LIMITS.memory_bytes / (1024 * 1024))]
    memory_mb: usize,
    /// An origin the step may call, as in the stage's `allowed_hosts` (repeatable).
    #[arg(long = "allow-host", value_name = "ORIGIN", value_parser = Origin::parse)]
    allowed_hosts: Vec<Origin>,
    /// Print the step's output as JSON (`outputs` and `summary`) on standard output.
    #[arg(long)]
    json: bool,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

pub async fn run(command: StepCommand) -> anyhow::Result<()> {
    let StepCommand::Run(args) = command;
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let workspace = args
        .workspace
        .canonicalize()
        .with_context(|| format!("the workspace {}", args.workspace.display()))?;
    let private = tempfile::Builder::new().prefix("ckrv-step-").tempdir()?;
    let git = HostGit::new(&workspace, private.path(), true)?;
    if workspace.join(".git").exists() {
        git.adopt_workspace_repository(&args.base)
            .await
            .map_err(|e| anyhow::anyhow!("reading the workspace's repository: {e}"))?;
    }
    let name = args
        .component
        .file_stem()
        .map_or_else(|| "step".to_string(), |s| s.to_string_lossy().into_owned());
    let (log, mut lines) = JobLog::channel();
    let printer = tokio::spawn(async move {
        while let Some(message) = lines.recv().await {
            if let Some(line) = message.into_line() {
                eprintln!(
                    "[{}] {}: {}",
                    line.level.as_str(),
                    line.source,
                    line.message
                );
            }
        }
    });
    let ctx = StepContext {
        job_id: "local".into(),
        git_repo_url: workspace.display().to_string(),
        git_base_branch: args.base.clone(),
        feature_branch_name: "ckrv/local".into(),
        // No API here: requests to it are denied like any other origin not allowed.
        api_url: "http://api.invalid".into(),
        params: args.params,
        inputs: args.inputs,
    };
    let policy = args
        .allowed_hosts
        .into_iter()
        .fold(OriginPolicy::deny_all(), OriginPolicy::allow);
    let env = StepEnv {
        name: &name,
        git: &git,
        log: &log,
        policy,
        limits: Limits {
            memory_bytes: args.memory_mb.saturating_mul(1024 * 1024),
            timeout: Duration::from_secs(args.timeout_s),
        },
    };
    let runner = StepRunner::new()?;
    let outcome = runner.run(&bytes, ctx, env).await.into_result(&name);
    drop(log);
    let _ = printer.await;
    match outcome {
        Ok(output) => {
            if args.json {
                let outputs: serde_json::Map<String, serde_json::Value> = output
                    .outputs
                    .into_iter()
                    .map(|(k, v)| (k, v.into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"outputs": outputs, "summary": output.summary})
                );
            } else {
                println!("{}", output.summary);
                for (key, value) in &output.outputs {
                    println!("output {key}: {} bytes", value.len());
                }
            }
            Ok(())
        }
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}
