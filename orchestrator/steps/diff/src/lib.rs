//! Worker step `diff`: takes the workspace's diff against the base branch, summarizes it and
//! enforces the policy before anything leaves the worker: `max_diff_bytes`, and
//! `forbidden_paths` (comma-separated; an entry ending in `/` is a directory at any depth,
//! any other entry a path from the repository's root; default `.git/`).

ckrv_wit::guest_bindings!("../../../wit", "ckrv:cloud/worker-step", generate_all);

use ckrv::cloud::{git, log};
use ckrv_wit::types::{DiffStats, FileChange, LogLevel};
use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

/// Default `max_diff_bytes`: larger diffs are almost certainly generated or vendored files.
const DEFAULT_MAX_DIFF_BYTES: usize = 10 * 1024 * 1024;
/// Default `forbidden_paths`.
const DEFAULT_FORBIDDEN_PATHS: &str = ".git/";

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
        let forbidden = param(&ctx.params, "forbidden_paths").unwrap_or(DEFAULT_FORBIDDEN_PATHS);
        let entries: Vec<&str> = forbidden
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let touched: Vec<String> = paths_of(&patch)
            .into_iter()
            .filter(|path| entries.iter().any(|e| forbids(e, path)))
            .collect();
        if !touched.is_empty() {
            return Err(format!(
                "the change touches {}, which the policy forbids (forbidden_paths = {forbidden})",
                touched.join(", ")
            ));
        }
        let mut stats = summarize(&patch);
        stats.base_commit = Some(git::resolve(&ctx.git_base_branch)?);
        // The host logs `summary` under this step's name; logging it here too would repeat it.
        let json = serde_json::to_string(&stats).map_err(|e| format!("summary: {e}"))?;
        Ok(StepOutput {
            outputs: vec![("diff".into(), patch), ("summary".into(), json)],
            summary: stats.summary_line(),
        })
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    ckrv_wit::guest::named(params, name)
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
        base_commit: None,
    }
}

/// Whether `entry` of `forbidden_paths` covers `path`.
fn forbids(entry: &str, path: &str) -> bool {
    match entry.strip_suffix('/') {
        Some(dir) => path
            .split('/')
            .collect::<Vec<_>>()
            .windows(dir.split('/').count())
            .any(|w| w.join("/") == dir),
        None => path == entry || path.starts_with(&format!("{entry}/")),
    }
}

/// Every path a patch touches, old and new names alike.
fn paths_of(patch: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    let mut add = |path: &str| {
        let path = unquote(path);
        if path != "/dev/null" && !paths.contains(&path) {
            paths.push(path);
        }
    };
    for line in patch.lines() {
        if let Some(header) = line.strip_prefix("diff --git ") {
            // `a/P b/P` when the path stays (always so without a rename); renames are named
            // again below.
            let (half, rest) = header.split_at(header.len() / 2);
            if let (Some(a), Some(b)) = (half.strip_prefix("a/"), rest.strip_prefix(" b/"))
                && a == b
            {
                add(a);
            }
        } else if let Some(p) = line
            .strip_prefix("--- ")
            .or_else(|| line.strip_prefix("+++ "))
        {
            let p = unquote(p);
            if let Some(p) = p.strip_prefix("a/").or_else(|| p.strip_prefix("b/")) {
                add(p);
            }
        } else if let Some(p) = line
            .strip_prefix("rename from ")
            .or_else(|| line.strip_prefix("rename to "))
            .or_else(|| line.strip_prefix("copy from "))
            .or_else(|| line.strip_prefix("copy to "))
        {
            add(p);
        }
    }
    paths
}

/// A path as git wrote it, its quotes (for unusual characters) taken off.
fn unquote(path: &str) -> String {
    match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\\", "\\").replace("\\\"", "\""),
        None => path.to_string(),
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
