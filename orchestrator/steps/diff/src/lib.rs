//! Worker step `diff`: takes the workspace's diff against the base branch, summarizes it and
//! enforces the size policy before anything leaves the worker.

ckrv_wit::guest_bindings!("../../../wit", "ckrv:cloud/worker-step", generate_all);

use ckrv::cloud::{git, log};
use ckrv_wit::types::{DiffStats, FileChange, LogLevel};
use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

/// Default `max_diff_bytes`: larger diffs are almost certainly generated or vendored files.
const DEFAULT_MAX_DIFF_BYTES: usize = 10 * 1024 * 1024;

struct Diff;

impl Guest for Diff {
    fn run(ctx: StepContext) -> Result<StepOutput, String> {
        let max = match param(&ctx.params, "max_diff_bytes") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("param max_diff_bytes is not a number: {v}"))?,
            None => DEFAULT_MAX_DIFF_BYTES,
        };
        log::write(
            LogLevel::Info,
            &format!("comparing the workspace with {}", ctx.git_base_branch),
        );
        let patch = git::diff(&ctx.git_base_branch)?;
        if patch.len() > max {
            return Err(format!(
                "diff is {} bytes, above the policy limit max_diff_bytes = {max}",
                patch.len()
            ));
        }
        let stats = summarize(&patch);
        // The host logs `summary` under this step's name; logging it here too would repeat it.
        let json = serde_json::to_string(&stats).map_err(|e| format!("summary: {e}"))?;
        Ok(StepOutput {
            outputs: vec![("diff".into(), patch), ("summary".into(), json)],
            summary: stats.summary_line(),
        })
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Counts insertions and deletions per file of a `git diff` unified patch.
fn summarize(patch: &str) -> DiffStats {
    let mut files: Vec<FileChange> = Vec::new();
    let mut in_hunk = false;
    for line in patch.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            files.push(FileChange {
                path: path_of(rest),
                insertions: 0,
                deletions: 0,
                binary: false,
            });
            in_hunk = false;
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if line.starts_with("GIT binary patch") || line.starts_with("Binary files ") {
            file.binary = true;
            in_hunk = false;
        } else if line.starts_with("@@") {
            in_hunk = true;
        } else if in_hunk && line.starts_with('+') {
            file.insertions += 1;
        } else if in_hunk && line.starts_with('-') {
            file.deletions += 1;
        } else if !in_hunk && let Some(p) = line.strip_prefix("+++ b/") {
            file.path = p.to_string();
        }
    }
    DiffStats {
        files_changed: u32::try_from(files.len()).unwrap_or(u32::MAX),
        insertions: files.iter().map(|f| f.insertions).sum(),
        deletions: files.iter().map(|f| f.deletions).sum(),
        files,
    }
}

/// The `b/` path of a `diff --git a/X b/Y` header (good enough for paths without " b/").
fn path_of(header: &str) -> String {
    match header.rfind(" b/") {
        Some(i) => header[i + 3..].to_string(),
        None => header.to_string(),
    }
}

export!(Diff);
