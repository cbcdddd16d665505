//! Putting a change into the developer's worktree, for `ckrv pull` and local runs alike: what
//! it touches, what needs a look first, where it conflicts with local edits, and applying it.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::Context as _;

use crate::git::{self, FileStat};
use crate::output;
use crate::review::{self, Risk};

/// What a change would do to the worktree.
pub struct Inspection {
    pub files: Vec<FileStat>,
    /// What it does beyond editing ordinary files.
    pub risks: Vec<Risk>,
    /// Files it does not apply to cleanly (empty: it applies).
    pub blocked: Vec<String>,
}

/// Reads `diff` against the worktree at `top` without changing anything.
pub fn inspect(top: &Path, diff: &[u8]) -> anyhow::Result<Inspection> {
    let files = git::parse_numstat_z(&git::git(
        top,
        &["apply", "--numstat", "-z", "-"],
        Some(diff),
    )?);
    let risks = review::risks(top, diff, &files)?;
    let blocked = check(top, diff)?;
    Ok(Inspection {
        files,
        risks,
        blocked,
    })
}

/// Applies `diff` (which [`inspect`] found clean) and marks the files it creates
/// intent-to-add, so `git diff HEAD` shows the whole change.
pub fn apply(top: &Path, diff: &[u8], files: &[FileStat]) -> anyhow::Result<()> {
    let created: Vec<&str> = files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|path| !top.join(path).exists())
        .collect();
    git::git(top, &["apply", "-"], Some(diff)).context("applying the diff")?;
    // (Not `git apply --intent-to-add`: git 2.47 drops the rest of the index with it.)
    if !created.is_empty() {
        let mut args = vec!["add", "--intent-to-add", "--"];
        args.extend(&created);
        git::git(top, &args, None).context("marking the new files intent-to-add")?;
    }
    Ok(())
}

/// Shows what `what` does beyond editing files and asks before going on; without a terminal
/// to ask on, refuses, saying how to read it and go on (`hint`).
pub fn confirm(what: &str, hint: &str, risks: &[Risk], json: bool) -> anyhow::Result<()> {
    let listed: Vec<String> = risks
        .iter()
        .map(|r| format!("{}: {}", output::printable(&r.path), r.why))
        .collect();
    let interactive = !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !interactive {
        anyhow::bail!(
            "{what} needs a look before it is applied (nothing was changed):\n  {}\n  {hint}",
            listed.join("\n  ")
        );
    }
    output::blank();
    output::line("This change does more than edit files:");
    for line in &listed {
        output::line(format!("  {line}"));
    }
    if output::ask_yes("Apply it?")? {
        Ok(())
    } else {
        anyhow::bail!("not applied; nothing was changed")
    }
}

/// The files the diff does not apply to in the worktree, from git's own errors; empty when it
/// applies cleanly.
pub fn check(top: &Path, diff: &[u8]) -> anyhow::Result<Vec<String>> {
    let Err(e) = git::git(top, &["apply", "--check", "-"], Some(diff)) else {
        return Ok(Vec::new());
    };
    let message = e.to_string();
    let mut paths: Vec<String> = message
        .lines()
        .filter_map(|line| line.strip_prefix("error: "))
        .filter_map(|rest| {
            [
                ": patch does not apply",
                ": already exists in working directory",
                ": No such file or directory",
                ": does not exist in index",
                ": does not match index",
            ]
            .iter()
            .find_map(|suffix| rest.strip_suffix(suffix))
        })
        .map(str::to_string)
        .collect();
    paths.dedup();
    if paths.is_empty() {
        anyhow::bail!("the diff cannot be applied here (nothing was changed): {message}");
    }
    Ok(paths)
}
