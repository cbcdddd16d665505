//! Attempt groups through the real binaries (`ckrv`, `ckrv-api --max-running 4` with local
//! workers, bubblewrap; docs/attempts.md): one attempt alone, then a group of four of the same
//! spec, each timed from `ckrv run --cloud` to the end of its last job. The agent waits as a
//! real one waits on its model, so four side by side should take about as long as one; what
//! they add (four clones, sandboxes, diffs and uploads on the machine's cores) is the figure.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ckrv_e2e::{Api, Developer, serve_repo};

use crate::table::Table;

/// What to run.
pub struct Load {
    /// Times each is measured.
    pub runs: usize,
    /// Attempts in the group.
    pub attempts: u32,
    /// How long each attempt's agent waits, as on its model.
    pub agent_seconds: u32,
}

pub fn run(root: &Path, load: &Load, table: &mut Table) -> Result<()> {
    let root = root.join("groups");
    std::fs::create_dir_all(&root)?;
    // The sandboxed agent's user passes through to its workspace under the work root.
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    let (_repos, repo_url) = serve_repo(&root, "bench", &[("README.md", "draft\n")]);
    let work = root.join("work");
    let slots = load.attempts.to_string();
    let api = Api::start_with(
        &root.join("api"),
        &[
            "--allow-local-repos",
            "--work-dir",
            work.to_str().context("a UTF-8 work directory")?,
            "--max-running",
            &slots,
        ],
    );
    let dev = Developer::new(&api, &root, "groups@example.com", &repo_url);
    let spec = format!(
        "---\nagent: script\nrun: |\n  sleep {}\n  echo \"attempt $CKRV_ATTEMPT\" >> README.md\n---\n# Wait, then write\n",
        load.agent_seconds
    );
    std::fs::create_dir_all(dev.clone.join("specs"))?;
    std::fs::write(dev.clone.join("specs/wait.md"), spec)?;
    let attempts = load.attempts.to_string();
    // Untimed: a worker's first job compiles the pipeline's steps, which no later one does.
    timed(&dev, &repo_url, &["--attempts", "1"])?;
    let mut single = Vec::with_capacity(load.runs);
    let mut group = Vec::with_capacity(load.runs);
    for _ in 0..load.runs {
        single.push(timed(&dev, &repo_url, &["--attempts", "1"])?);
        group.push(timed(&dev, &repo_url, &["--attempts", &attempts])?);
    }
    table.row(
        &format!(
            "attempt group of 1, `ckrv run --cloud` to its end (agent waits {} s)",
            load.agent_seconds
        ),
        &single,
    );
    table.row(
        &format!(
            "attempt group of {}, `--max-running {}`, to the end of the last",
            load.attempts, load.attempts
        ),
        &group,
    );
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64()
    };
    let ratio = median(&mut group) / median(&mut single);
    println!(
        "{} attempts side by side took {ratio:.2}× the time of one (medians)",
        load.attempts
    );
    Ok(())
}

/// Dispatches a group with `flags` and waits for every attempt to end; how long that took.
fn timed(dev: &Developer, repo_url: &str, flags: &[&str]) -> Result<Duration> {
    let mut args = vec![
        "run",
        "--cloud",
        "--spec",
        "specs/wait.md",
        "--repo",
        repo_url,
        "--base-branch",
        "main",
        "--json",
    ];
    args.extend_from_slice(flags);
    let started = Instant::now();
    let made: serde_json::Value = serde_json::from_str(&dev.cli.ok(&dev.clone, &args))?;
    let id = made["id"].as_str().context("the group's id")?.to_string();
    let group = dev
        .cli
        .group_finished(&dev.clone, &id, Duration::from_secs(600));
    let took = started.elapsed();
    for job in group["attempts"].as_array().context("attempts")? {
        ensure!(
            job["state"] == "succeeded",
            "an attempt did not succeed: {job}"
        );
    }
    Ok(took)
}
