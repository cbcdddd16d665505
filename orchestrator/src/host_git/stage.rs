//! What the diff stages, found without git walking the workspace. Git's own walk (`git add -A`)
//! takes a directory holding a `.git` for a repository of its own: it follows a `.git` file's
//! `gitdir:` wherever it points, opens that repository and stages its `HEAD` as a submodule
//! commit. The agent writes the workspace, so it would name the repository the host opens.
//! Here the workspace is listed level by level with no link followed, every `.git` is passed
//! over (the root's is the clone's own; any deeper one is noted, for the log), and git is then
//! handed files and links by name only.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// A path relative to the workspace, as git spells it: `/`-separated bytes.
pub(super) type RelPath = Vec<u8>;

/// The private index as the walk needs it.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// Files and links the index holds.
    pub files: HashSet<RelPath>,
    /// Submodule commits (gitlinks): the base's, which the workspace cannot change.
    pub gitlinks: HashSet<RelPath>,
    /// Every directory that holds something the index holds.
    pub dirs: HashSet<RelPath>,
}

impl Tracked {
    /// Reads `git ls-files -s -z`: `MODE OID STAGE\tPATH\0` per entry.
    pub fn parse(listing: &[u8]) -> Self {
        let mut tracked = Self::default();
        for (mode, path) in entries(listing) {
            let mut end = path.len();
            while let Some(slash) = path[..end].iter().rposition(|b| *b == b'/') {
                if !tracked.dirs.insert(path[..slash].to_vec()) {
                    break;
                }
                end = slash;
            }
            if mode == b"160000" {
                tracked.gitlinks.insert(path.to_vec());
            } else {
                tracked.files.insert(path.to_vec());
            }
        }
        tracked
    }
}

/// The entries of `git ls-files -s -z` output: each entry's mode and path.
pub(super) fn entries(listing: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    listing.split(|b| *b == 0).filter_map(|record| {
        let tab = record.iter().position(|b| *b == b'\t')?;
        let (meta, path) = (&record[..tab], &record[tab + 1..]);
        let mode = meta.split(|b| *b == b' ').next()?;
        Some((mode, path))
    })
}

/// One level of the workspace: what the directories of the level hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Level {
    /// Regular files and symbolic links (a link to a directory too: it is not followed).
    pub files: Vec<RelPath>,
    pub dirs: Vec<RelPath>,
    /// Every `.git` (any case) below the workspace's root: never read, never staged.
    pub git_entries: Vec<RelPath>,
}

/// Lists `dirs` (relative to `workspace`; the empty path is the root). Sockets, FIFOs and
/// devices are not files git keeps and are left out, as git's own walk leaves them.
pub(super) fn list(workspace: &Path, dirs: &[RelPath]) -> std::io::Result<Level> {
    let mut level = Level::default();
    for dir in dirs {
        let full = workspace.join(OsStr::from_bytes(dir));
        for entry in std::fs::read_dir(&full)? {
            let entry = entry?;
            let name = entry.file_name();
            let path = join(dir, name.as_bytes());
            if name.as_bytes().eq_ignore_ascii_case(b".git") {
                if !dir.is_empty() {
                    level.git_entries.push(path);
                }
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                level.dirs.push(path);
            } else if kind.is_file() || kind.is_symlink() {
                level.files.push(path);
            }
        }
    }
    level.files.sort();
    level.dirs.sort();
    level.git_entries.sort();
    Ok(level)
}

/// Whether the agent put anything at `path`, a submodule's place (the clone leaves an empty
/// directory there).
pub(super) fn holds_anything(workspace: &Path, path: &[u8]) -> bool {
    let full = workspace.join(OsStr::from_bytes(path));
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(&full).is_ok_and(|mut d| d.next().is_some()),
        Ok(_) => true,
        Err(_) => false,
    }
}

fn join(dir: &[u8], name: &[u8]) -> RelPath {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut path = Vec::with_capacity(dir.len() + 1 + name.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

/// `paths` as `git … --stdin -z` reads them.
pub(super) fn nul_separated(paths: &[RelPath]) -> Vec<u8> {
    let mut input = Vec::with_capacity(paths.iter().map(|p| p.len() + 1).sum());
    for path in paths {
        input.extend_from_slice(path);
        input.push(0);
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_listing_gives_files_gitlinks_and_their_directories() {
        let oid = "0123456789012345678901234567890123456789";
        let listing = format!(
            "100644 {oid} 0\tREADME.md\0120000 {oid} 0\tdocs/deep/link\0160000 {oid} 0\tvendor/lib\0100755 {oid} 0\tdocs/run.sh\0"
        );
        let tracked = Tracked::parse(listing.as_bytes());
        let set = |items: &[&str]| -> HashSet<RelPath> {
            items.iter().map(|s| s.as_bytes().to_vec()).collect()
        };
        assert_eq!(
            tracked.files,
            set(&["README.md", "docs/deep/link", "docs/run.sh"])
        );
        assert_eq!(tracked.gitlinks, set(&["vendor/lib"]));
        assert_eq!(tracked.dirs, set(&["docs", "docs/deep", "vendor"]));
    }

    #[test]
    fn every_git_entry_below_the_root_is_noted_and_none_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        std::fs::create_dir_all(ws.join(".git/objects")).unwrap();
        std::fs::create_dir_all(ws.join("sub2/.git")).unwrap();
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::write(ws.join("sub/.git"), "gitdir: /elsewhere\n").unwrap();
        std::fs::write(ws.join("sub/kept.txt"), "kept\n").unwrap();
        std::fs::create_dir_all(ws.join("sub3/.GIT")).unwrap();
        std::os::unix::fs::symlink("/etc", ws.join("etc-link")).unwrap();
        std::fs::write(ws.join("README.md"), "hi\n").unwrap();

        let root = list(ws, &[Vec::new()]).unwrap();
        let names = |paths: &[RelPath]| -> Vec<String> {
            paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        };
        assert_eq!(names(&root.files), ["README.md", "etc-link"]);
        assert_eq!(names(&root.dirs), ["sub", "sub2", "sub3"]);
        assert!(
            root.git_entries.is_empty(),
            "the root's .git is the clone's"
        );
        let next = list(ws, &root.dirs).unwrap();
        assert_eq!(names(&next.files), ["sub/kept.txt"]);
        assert!(next.dirs.is_empty());
        assert_eq!(
            names(&next.git_entries),
            ["sub/.git", "sub2/.git", "sub3/.GIT"]
        );
    }
}
