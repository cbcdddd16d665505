//! Snapshots of a repository's setup (docs/environments.md): packing a generated tree of many
//! files, and restoring it with the worker's restore (digest checked, every entry placed
//! inside the workspace) against `tar -x` with zstd of the same archive, side by side.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, ensure};
use ckrv_agents::environment::CachePath;
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
