//! Snapshots of a repository's setup (docs/environments.md): packing a generated tree of many
//! files, and restoring it with the worker's restore (digest checked, every entry placed
//! inside the workspace) against `tar -x` with zstd of the same archive, side by side. Then
//! whole jobs through the API on a snapshot hit of such a tree: how long from the clone's end
//! (phase `setup`) until the agent starts (phase `agent`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use ckrv_agents::environment::CachePath;
use ckrv_e2e::{StaticServer, create_served_repo};
use ckrv_orchestrator::snapshot;

use crate::table::Table;

/// How big a tree, and how many restores each way.
pub struct Tree {
    pub files: usize,
    pub mib: usize,
    pub restores: usize,
}

pub fn run(root: &Path, tree: &Tree, table: &mut Table) -> Result<()> {
    let zstd = Command::new("zstd").arg("--version").output();
    ensure!(
        zstd.is_ok_and(|out| out.status.success()),
        "the snapshot measurement compares with `tar -I zstd`: install zstd"
    );
    let workspace = root.join("snapshots/workspace");
    let bytes = generate(
        &workspace.join("node_modules"),
        tree.files,
        tree.mib * 1024 * 1024,
    )?;
    let archive = root.join("snapshots/snapshot.tar.zst");
    let cache = [CachePath::Workspace("node_modules".into())];
    let started = Instant::now();
    let packed = snapshot::pack(&workspace, None, &cache, &archive)?;
    let pack = started.elapsed();
    let label = format!(
        "{} files, {:.0} MiB ({:.1} MB packed)",
        tree.files,
        bytes as f64 / (1024.0 * 1024.0),
        packed.bytes as f64 / 1e6
    );
    table.row(&format!("snapshot: pack, {label}"), &[pack]);

    let mut ours = Vec::new();
    let mut tars = Vec::new();
    for run in 0..tree.restores {
        let into = root.join(format!("snapshots/ours-{run}"));
        std::fs::create_dir_all(&into)?;
        // Each starts with the disk idle: the writes of the one before are not its cost.
        settle()?;
        let started = Instant::now();
        let restored = snapshot::restore(&archive, &packed.sha256, &into, None, u64::MAX)?;
        ours.push(started.elapsed());
        ensure!(restored.entries as usize > tree.files, "{restored:?}");
        let into = root.join(format!("snapshots/tar-{run}"));
        std::fs::create_dir_all(&into)?;
        settle()?;
        let started = Instant::now();
        let status = Command::new("tar")
            .args(["-I", "zstd", "-xf"])
            .arg(&archive)
            .arg("-C")
            .arg(&into)
            .status()?;
        tars.push(started.elapsed());
        ensure!(status.success(), "tar -x failed");
        std::fs::remove_dir_all(root.join(format!("snapshots/ours-{run}")))?;
        std::fs::remove_dir_all(&into)?;
    }
    table.row(
        &format!("snapshot: restore (digest checked), {label}"),
        &ours,
    );
    table.row(
        &format!("`tar -I zstd -x` of the same archive, {label}"),
        &tars,
    );
    let _ = std::fs::remove_dir_all(root.join("snapshots"));
    Ok(())
}

/// Waits for the disk to take what is written (`sync`).
fn settle() -> Result<()> {
    ensure!(Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

/// `files` files of about `bytes` together, 100 to a directory, of text that compresses about
/// as source and packages do; the bytes written.
fn generate(dir: &Path, files: usize, bytes: usize) -> Result<u64> {
    let each = (bytes / files.max(1)).max(1);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut written = 0u64;
    for i in 0..files {
        let sub = dir.join(format!("pkg-{}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let mut text = String::with_capacity(each + 64);
        while text.len() < each {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(&format!(
                "export const v{:x} = {};\n",
                state >> 40,
                state % 1000
            ));
        }
        text.truncate(each);
        std::fs::write(sub.join(format!("f{i}.js")), &text)?;
        written += text.len() as u64;
    }
    Ok(written)
}

/// The generator a repository's setup runs: `files` files of about `mib` MiB together under
/// `node_modules/`, 100 to a directory, hex text (it compresses about as packages do).
const GENERATE: &str = r#"import os, random, sys
root, files, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
each = max(1, mib * 1024 * 1024 // files)
for i in range(files):
    sub = f"{root}/pkg-{i // 100}"
    if i % 100 == 0:
        os.makedirs(sub, exist_ok=True)
    with open(f"{sub}/f{i}.js", "w") as f:
        f.write(random.Random(i).randbytes(each // 2 + 1).hex()[:each])
"#;

/// Jobs through the API (local workers, sandboxed) of a repository whose setup makes `tree`:
/// the first runs setup and saves the snapshot; `tree.restores` more start from it with the
/// worker holding its unpacked copy, and as many again without one (the copy removed first:
/// a worker's first job of that snapshot), so they unpack the archive. Before each, the copy
/// the last job made in the background is waited for. For each, the time from phase `setup`
/// (the clone has ended) to phase `agent` as the API saw them (polled every 5 ms), and the
/// worker's own count of its restore.
pub fn job_on_hit(
    root: &Path,
    tree: &Tree,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    let root = root.join("snapshot-jobs");
    let served = root.join("served");
    std::fs::create_dir_all(&served)?;
    let environment = format!(
        "setup = \"python3 .ckrv/generate.py node_modules {} {}\"\ncache = [\"node_modules/\"]\n",
        tree.files, tree.mib
    );
    create_served_repo(
        &served,
        "env",
        &[
            ("README.md", "draft\n"),
            (".ckrv/environment.toml", &environment),
            (".ckrv/generate.py", GENERATE),
        ],
    );
    let server = StaticServer::start(&served);
    let repo_url = format!("http://{}/env.git", server.addr);
    // Local workers' directories, and their snapshot copies, under the bench's root: the
    // sandboxed agent's user passes through to its workspace.
    let workers = root.join("workers");
    for dir in [root.parent().unwrap_or(&root), &root] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    }
    let stage = crate::Stage::new(&root, &["--work-dir", &workers.display().to_string()])?;
    let copies = workers.join("ckrv-snapshot-cache");
    let (first, _, _) = stage.job(&repo_url, runtime)?;
    let url = |id: &str| format!("{}/v1/jobs/{id}", stage.api.url);
    let saved = runtime.block_on(stage.get_job(&url(&first)))?;
    let bytes = saved["setup"]["snapshot_bytes"]
        .as_u64()
        .unwrap_or_default();
    ensure!(
        saved["setup"]["saved"] == true,
        "the first job saved no snapshot: {saved}"
    );
    let label = format!(
        "{} files, {} MiB ({:.1} MB packed)",
        tree.files,
        tree.mib,
        bytes as f64 / 1e6
    );
    for warm in [true, false] {
        let (mut gaps, mut restores) = (Vec::new(), Vec::new());
        for _ in 0..tree.restores {
            wait_for_copy(&copies)?;
            if !warm {
                std::fs::remove_dir_all(&copies)?;
            }
            let id = stage.dispatch(&repo_url)?;
            let (setup, agent) = runtime.block_on(phase_times(&stage, &url(&id)))?;
            gaps.push(agent.saturating_duration_since(setup));
            let job = runtime.block_on(stage.get_job(&url(&id)))?;
            ensure!(
                job["state"] == "succeeded" && job["setup"]["snapshot_hit"] == true,
                "job {id} did not end succeeded on a snapshot hit: {job}"
            );
            let worker = job["setup"]["duration_ms"]
                .as_u64()
                .context("the job says how long its restore took")?;
            restores.push(Duration::from_millis(worker));
        }
        let (how, restore) = if warm {
            (
                "the worker holding its unpacked copy",
                "the worker's restore (ask the API, move into place)",
            )
        } else {
            (
                "no copy on the worker",
                "the worker's restore (fetch, digest, unpack)",
            )
        };
        table.row(
            &format!(
                "job on a snapshot hit, {how}: clone's end (phase setup) → agent starts, {label}"
            ),
            &gaps,
        );
        table.row(&format!("of which {restore}, {label}"), &restores);
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Waits (up to ten minutes) until `copies` holds a worker's unpacked copy of a snapshot.
fn wait_for_copy(copies: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let made = std::fs::read_dir(copies).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')))
        });
        if made {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no unpacked copy appeared in {}",
            copies.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// When the job at `url` was first seen in phase `setup` (else last seen cloning) and first
/// seen in phase `agent` or later, polling every 5 ms until it ends.
async fn phase_times(stage: &crate::Stage, url: &str) -> Result<(Instant, Instant)> {
    let (mut cloning, mut setup, mut agent) = (None, None, None);
    loop {
        let job = stage.get_job(url).await?;
        let now = Instant::now();
        match job["phase"].as_str() {
            Some("queued" | "cloning") => cloning = Some(now),
            Some("setup") => setup = setup.or(Some(now)),
            Some("agent" | "diffing" | "uploading" | "finished") => agent = agent.or(Some(now)),
            _ => {}
        }
        if !matches!(job["state"].as_str(), Some("pending" | "running")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A restore quicker than a poll: the clone was last seen going on.
    match (setup.or(cloning), agent) {
        (Some(setup), Some(agent)) => Ok((setup, agent)),
        _ => anyhow::bail!("the job's phases setup and agent were not both seen at {url}"),
    }
}
