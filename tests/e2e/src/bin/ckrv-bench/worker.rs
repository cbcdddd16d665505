//! The worker's own costs, in process: the WASM diff step against plain `git diff --binary` on
//! a large change, and creating and tearing down the agent's sandbox.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ckrv_agents::{Entry, Policy, RunRequest, SandboxRuntime, run_collecting};
use ckrv_e2e::git;
use ckrv_orchestrator::host_git::HostGit;
use ckrv_orchestrator::logs::JobLog;
use ckrv_orchestrator::step_host::{
    DEFAULT_LIMITS, StepContext, StepEnv, StepRunner, builtin_component,
};
use ckrv_wasm_host::OriginPolicy;

use crate::table::Table;

/// Sizes of the worker measurements.
pub struct Sizes {
    /// Files in the repository the diff is taken of.
    pub files: usize,
    /// Of them, changed by the "agent".
    pub changed: usize,
    /// Diffs taken each way.
    pub diffs: usize,
    /// Sandboxes made.
    pub sandboxes: usize,
}

pub fn run(
    root: &Path,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    diff(root, sizes, runtime, table)?;
    sandbox(root, sizes, runtime, table)
}

/// A repository of `files` files in 100 directories, `changed` of them then edited in a clone
/// made by the host's git, as the clone step makes it; both ways of diffing are timed on it.
fn diff(
    root: &Path,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    let origin = root.join("diff-origin");
    for i in 0..sizes.files {
        let dir = origin.join(format!("dir{:02}", i % 100));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join(format!("file{i}.txt")),
            format!("line one of {i}\nline two\n"),
        )?;
    }
    git(&origin, &["init", "-q", "-b", "main"]);
    git(&origin, &["add", "-A"]);
    git(&origin, &["commit", "-q", "-m", "many files"]);

    let job = root.join("diff-job");
    let workspace = job.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let host = HostGit::new(&workspace, &job.join("git"), true)?;
    let repo = origin.display().to_string();
    runtime
        .block_on(host.clone_repo(&repo, "main"))
        .map_err(anyhow::Error::msg)?;
    let plain = root.join("diff-plain");
    git(root, &["clone", "-q", &repo, &plain.display().to_string()]);
    for tree in [&workspace, &plain] {
        for i in (0..sizes.files)
            .step_by((sizes.files / sizes.changed.max(1)).max(1))
            .take(sizes.changed)
        {
            let file = tree.join(format!("dir{:02}/file{i}.txt", i % 100));
            std::fs::write(file, format!("line one of {i}\nchanged by the agent\n"))?;
        }
    }

    let runner = StepRunner::new()?;
    let diff_step = builtin_component("diff").unwrap_or_default();
    let (log, mut lines) = JobLog::channel();
    runtime.spawn(async move { while lines.recv().await.is_some() {} });
    let mut wasm = Vec::with_capacity(sizes.diffs);
    let mut plain_times = Vec::with_capacity(sizes.diffs);
    let mut bytes = (0, 0);
    for _ in 0..sizes.diffs {
        let ctx = StepContext {
            job_id: "bench".into(),
            git_repo_url: repo.clone(),
            git_base_branch: "main".into(),
            feature_branch_name: "ckrv/bench".into(),
            api_url: "http://api.invalid".into(),
            params: vec![("max_diff_bytes".into(), "1000000000".into())],
            inputs: vec![],
        };
        let env = StepEnv {
            name: "diff",
            git: &host,
            log: &log,
            policy: OriginPolicy::deny_all(),
            limits: DEFAULT_LIMITS,
        };
        let start = Instant::now();
        let output = runtime
            .block_on(runner.run(diff_step, ctx, env))
            .into_result("diff")
            .map_err(anyhow::Error::msg)?;
        wasm.push(start.elapsed());
        bytes.0 = output
            .outputs
            .iter()
            .find(|(k, _)| k == "diff")
            .map_or(0, |(_, v)| v.len());

        let start = Instant::now();
        let out = std::process::Command::new("git")
            .current_dir(&plain)
            .args(["diff", "--binary"])
            .output()?;
        plain_times.push(start.elapsed());
        if !out.status.success() {
            bail!("git diff failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        bytes.1 = out.stdout.len();
    }
    let median = |t: &mut Vec<Duration>| {
        t.sort();
        t[t.len() / 2].as_secs_f64()
    };
    let ratio = median(&mut wasm.clone()) / median(&mut plain_times.clone());
    table.row(
        &format!(
            "diff step (WASM), {} files, {} changed ({} KiB patch; {ratio:.2}× plain git)",
            sizes.files,
            sizes.changed,
            bytes.0 / 1024
        ),
        &wasm,
    );
    table.row(
        &format!(
            "plain `git diff --binary`, same change ({} KiB)",
            bytes.1 / 1024
        ),
        &plain_times,
    );
    Ok(())
}

/// Creating the agent's sandbox, running `true` in it, and tearing it down: with no network,
/// and with the egress proxy and the bridge a job with the `model` policy gets (the gateway
/// at an address on loopback nothing listens on; `true` connects nowhere).
fn sandbox(
    root: &Path,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    let workspace = root.join("sandbox/workspace");
    let scratch = root.join("sandbox/scratch");
    std::fs::create_dir_all(&workspace)?;
    std::fs::create_dir_all(&scratch)?;
    for dir in [root, &root.join("sandbox")] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    }
    let sandbox = SandboxRuntime::default();
    runtime.block_on(sandbox.probe())?;
    let offline = RunRequest::new(vec!["true".into()], workspace, scratch, "bench");
    let mut bridged = offline.clone();
    bridged.egress = Policy::Model.allowlist(Some(Entry::origin_of("http://127.0.0.1:9")?));
    sandbox.egress_bridge()?;
    for (what, request) in [
        ("agent sandbox: create, run `true`, tear down", &offline),
        (
            "agent sandbox with egress proxy and bridge: create, run `true`, tear down",
            &bridged,
        ),
    ] {
        let mut times = Vec::with_capacity(sizes.sandboxes);
        for _ in 0..sizes.sandboxes {
            let start = Instant::now();
            let (status, _) = runtime.block_on(run_collecting(&sandbox, request))?;
            times.push(start.elapsed());
            if !status.success() {
                bail!("`true` failed in the sandbox ({what})");
            }
        }
        table.row(what, &times);
    }
    Ok(())
}
