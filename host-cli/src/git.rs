//! The few git operations the CLI needs, through the `git` the developer already uses.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// Runs git in `dir`, feeding `input` on stdin; the error carries git's own message.
pub fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> anyhow::Result<String> {
    git_with_env(dir, args, input, &[])
}

/// [`git`] with extra environment (`GIT_INDEX_FILE`, say).
pub fn git_with_env(
    dir: &Path,
    args: &[&str],
    input: Option<&[u8]>,
    env: &[(&str, &Path)],
) -> anyhow::Result<String> {
    let mut child = Command::new("git")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not run git; is it installed?")?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).context("writing to git")?;
    }
    let out = child.wait_with_output().context("waiting for git")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        anyhow::bail!(if stderr.is_empty() {
            format!("git {} failed ({})", args.join(" "), out.status)
        } else {
            stderr
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The top of the worktree containing `dir`.
pub fn toplevel(dir: &Path) -> anyhow::Result<PathBuf> {
    git(dir, &["rev-parse", "--show-toplevel"], None)
        .map(|s| PathBuf::from(s.trim()))
        .map_err(|_| anyhow::anyhow!("{} is not inside a git worktree", dir.display()))
}

/// `origin`'s URL, the default repository of `ckrv run`.
pub fn origin_url(dir: &Path) -> anyhow::Result<String> {
    git(dir, &["remote", "get-url", "origin"], None)
        .map(|s| s.trim().to_string())
        .map_err(|_| anyhow::anyhow!("no --repo given and this directory has no `origin` remote"))
}

/// The checked-out branch, the default base of `ckrv run`.
pub fn current_branch(dir: &Path) -> anyhow::Result<String> {
    let branch = git(dir, &["rev-parse", "--abbrev-ref", "HEAD"], None)
        .map(|s| s.trim().to_string())
        .map_err(|_| anyhow::anyhow!("no --base-branch given and no branch is checked out here"))?;
    if branch == "HEAD" {
        anyhow::bail!("no --base-branch given and HEAD is detached");
    }
    Ok(branch)
}

/// One file of a diffstat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileStat {
    pub path: String,
    pub insertions: u32,
    pub deletions: u32,
    pub binary: bool,
}

/// Parses `git apply --numstat -z` output: `ins\tdel\tpath\0`, or for a rename
/// `ins\tdel\t\0from\0to\0` (the new path is the one kept). NUL-separated, so any file name
/// comes through as it is, unquoted.
pub fn parse_numstat_z(text: &str) -> Vec<FileStat> {
    let mut fields = text.split('\0');
    let mut stats = Vec::new();
    while let Some(record) = fields.next() {
        let mut parts = record.splitn(3, '\t');
        let (Some(ins), Some(del), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let path = if path.is_empty() {
            // A rename: the old path, then the new one.
            let _from = fields.next();
            fields.next().unwrap_or_default().to_string()
        } else {
            path.to_string()
        };
        stats.push(FileStat {
            path,
            insertions: ins.parse().unwrap_or(0),
            deletions: del.parse().unwrap_or(0),
            binary: ins == "-" && del == "-",
        });
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_records_become_file_stats() {
        let records = [
            "3\t1\tsrc/a.rs",
            "-\t-\tlogo.png",
            "0\t2\tdir/with\ttab",
            "0\t0\t",
            "old name",
            "café/ü.txt",
        ];
        let stats = parse_numstat_z(&(records.join("\0") + "\0"));
        assert_eq!(
            stats,
            [
                FileStat {
                    path: "src/a.rs".into(),
                    insertions: 3,
                    deletions: 1,
                    binary: false
                },
                FileStat {
                    path: "logo.png".into(),
                    insertions: 0,
                    deletions: 0,
                    binary: true
                },
                FileStat {
                    path: "dir/with\ttab".into(),
                    insertions: 0,
                    deletions: 2,
                    binary: false
                },
                FileStat {
                    path: "café/ü.txt".into(),
                    insertions: 0,
                    deletions: 0,
                    binary: false
                },
            ]
        );
    }

    #[test]
    fn git_errors_carry_git_s_message() {
        let dir = tempfile::tempdir().unwrap();
        let err = toplevel(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not inside a git worktree"), "{err}");
        let err = git(dir.path(), &["no-such-command"], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-command"), "{err}");
    }
}
