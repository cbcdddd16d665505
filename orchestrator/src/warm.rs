//! Warm snapshots: unpacked copies of snapshot archives that a worker keeps on its own disk,
//! named by the archive's SHA-256. On a hit, a job moves its cache paths into place (one
//! rename each) instead of unpacking every file while the agent waits.
//!
//! A copy is made only from an archive whose digest was checked, by the same hostile-safe
//! restore as any snapshot, and it is looked up by the digest the API names for the job's own
//! account: a job can only ever get the bytes its account's snapshot holds. A job takes its
//! copy and never gives it back, so nothing a job changes reaches the next one; the copy is
//! made again in the background for the next job.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ckrv_agents::environment::CachePath;

use crate::snapshot::{self, SnapshotError};

/// How many copies a worker keeps by default: the latest of its most recent repositories.
pub const DEFAULT_KEEP: usize = 2;
/// A copy still being made after this long was left by a worker that ended: removed.
const STALE_FILLING: Duration = Duration::from_secs(60 * 60);
/// The prefix of a copy being made.
const FILLING: &str = ".filling-";

/// Why a taken copy could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("`{0}` is already in the workspace")]
    Occupied(String),
    #[error("the way to `{0}` goes through a link or a file")]
    Through(String),
    #[error("moving `{path}` into place: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A worker's directory of warm copies.
#[derive(Debug)]
pub struct WarmSnapshots {
    root: PathBuf,
    keep: usize,
    /// Copies being made in the background for later jobs.
    filling: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl WarmSnapshots {
    /// The copies in `root` (made 0700 when the first is made), keeping the `keep` most recent.
    /// A `root` that is a link, another user's, or open to others is refused: whoever could
    /// write there could plant a copy.
    pub fn open(root: &Path, keep: usize) -> io::Result<Self> {
        let warm = Self {
            root: root.to_path_buf(),
            keep,
            filling: std::sync::Mutex::default(),
        };
        if std::fs::symlink_metadata(root).is_ok() {
            warm.checked_root()?;
        }
        Ok(warm)
    }

    /// The directory, made if missing, once it is this user's alone.
    fn checked_root(&self) -> io::Result<&Path> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        let meta = std::fs::symlink_metadata(&self.root)?;
        let mine = meta.uid() == rustix::process::geteuid().as_raw();
        if !meta.is_dir() || !mine || meta.mode() & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} must be a directory of this user's that no one else may enter",
                    self.root.display()
                ),
            ));
        }
        Ok(&self.root)
    }

    /// Keeps `task`, which makes a copy in the background, until [`Self::settle`].
    pub fn making(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut filling) = self.filling.lock() {
            filling.retain(|task| !task.is_finished());
            filling.push(task);
        }
    }

    /// Waits for the copies being made: before a job's end is told, since the dispatcher may
    /// stop its worker then.
    pub async fn settle(&self) {
        let tasks = match self.filling.lock() {
            Ok(mut filling) => std::mem::take(&mut *filling),
            Err(_) => return,
        };
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Where the copy of the archive with `digest` lives: `None` for what is not a digest.
    fn copy_of(&self, digest: &str) -> Option<PathBuf> {
        let is_digest = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        is_digest.then(|| self.root.join(digest.to_ascii_lowercase()))
    }

    /// Moves the copy of the archive with `digest` to `to` (absent, on the same disk): true
    /// when this worker had one, false when it has none (or another job just took it).
    pub fn take(&self, digest: &str, to: &Path) -> io::Result<bool> {
        let Some(copy) = self.copy_of(digest) else {
            return Ok(false);
        };
        if std::fs::symlink_metadata(&self.root).is_err() {
            return Ok(false);
        }
        self.checked_root()?;
        match std::fs::rename(&copy, to) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// A new file in this directory, out of any job's reach, for an archive a copy will be
    /// made from; removed when the path is dropped.
    pub fn archive_file(&self) -> io::Result<tempfile::TempPath> {
        Ok(tempfile::Builder::new()
            .prefix(FILLING)
            .suffix(".tar.zst")
            .tempfile_in(self.checked_root()?)?
            .into_temp_path())
    }

    /// Makes a copy of `archive` (whose SHA-256 must be `digest`) for a later job, unpacking
    /// at most `limit` bytes, then drops the oldest copies past what it keeps.
    pub fn fill(&self, archive: &Path, digest: &str, limit: u64) -> Result<(), SnapshotError> {
        let io_error = |doing| move |source| SnapshotError::Io { doing, source };
        let Some(copy) = self.copy_of(digest) else {
            return Ok(());
        };
        if copy.exists() {
            return Ok(());
        }
        let root = self
            .checked_root()
            .map_err(io_error("making a warm copy"))?;
        let filling = tempfile::Builder::new()
            .prefix(FILLING)
            .tempdir_in(root)
            .map_err(io_error("making a warm copy"))?;
        let (workspace, home) = (
            filling.path().join("workspace"),
            filling.path().join("home"),
        );
        for dir in [&workspace, &home] {
            std::fs::create_dir(dir).map_err(io_error("making a warm copy"))?;
        }
        snapshot::restore(archive, digest, &workspace, Some(&home), limit)?;
        // Another job's copy of the same archive may have landed first: the same bytes.
        let made = filling.keep();
        if std::fs::rename(&made, &copy).is_err() {
            let _ = std::fs::remove_dir_all(&made);
        }
        self.evict();
        Ok(())
    }

    /// Drops the oldest copies past [`Self::keep`], and copies a worker left half made.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let now = SystemTime::now();
        let mut copies: Vec<(SystemTime, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let made = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if entry.file_name().to_string_lossy().starts_with(FILLING) {
                if now.duration_since(made).unwrap_or_default() > STALE_FILLING {
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
                continue;
            }
            copies.push((made, path));
        }
        copies.sort_by_key(|(made, _)| std::cmp::Reverse(*made));
        for (_, path) in copies.into_iter().skip(self.keep) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Moves the `cache` paths of a taken copy (`copy/workspace`, `copy/home`) into `workspace`
/// and `home`, making the directories on the way; returns how many it moved. A path already
/// in place, or one whose way goes through a link or a file (the repository is hostile),
/// stops it: the caller restores the archive as usual instead.
pub fn place(
    copy: &Path,
    cache: &[CachePath],
    workspace: &Path,
    home: &Path,
) -> Result<u64, PlaceError> {
    let mut moved = 0;
    for path in cache {
        let (from, root, relative) = match path {
            CachePath::Workspace(relative) => (copy.join("workspace"), workspace, relative),
            CachePath::Home(relative) => (copy.join("home"), home, relative),
        };
        let shown = || relative.display().to_string();
        let from = from.join(relative);
        if std::fs::symlink_metadata(&from).is_err() {
            // Setup made nothing there.
            continue;
        }
        let target = root.join(relative);
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(PlaceError::Occupied(shown()));
        }
        // The directories on the way are made, refusing a link or a file, as a restore does.
        let placed = snapshot::place(root, relative, &mut std::collections::HashSet::new())
            .map_err(|source| PlaceError::Io {
                path: shown(),
                source,
            })?;
        if placed.is_none() {
            return Err(PlaceError::Through(shown()));
        }
        std::fs::rename(&from, &target).map_err(|source| PlaceError::Io {
            path: shown(),
            source,
        })?;
        moved += 1;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ckrv_agents::environment::Environment;

    const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn cache(text: &str) -> Vec<CachePath> {
        Environment::parse_bytes(text.as_bytes()).unwrap().cache
    }

    /// A packed snapshot of `deps/tool` and `~/.cache/x` (the `cache` of [`cache`]'s text).
    fn archive(dir: &Path) -> (PathBuf, String, Vec<CachePath>) {
        let cache = cache("cache = [\"deps/\", \"~/.cache/x\"]");
        let (workspace, home) = (dir.join("w"), dir.join("h"));
        std::fs::create_dir_all(workspace.join("deps")).unwrap();
        std::fs::create_dir_all(home.join(".cache/x")).unwrap();
        std::fs::write(workspace.join("deps/tool"), "tool\n").unwrap();
        std::fs::write(home.join(".cache/x/index"), "index\n").unwrap();
        let file = dir.join("s.tar.zst");
        let packed = snapshot::pack(&workspace, Some(&home), &cache, &file).unwrap();
        (file, packed.sha256, cache)
    }

    #[test]
    fn a_copy_is_taken_once_and_moved_into_the_workspace_and_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let (file, digest, cache) = archive(dir.path());
        let warm = WarmSnapshots::open(&dir.path().join("warm"), 2).unwrap();
        warm.fill(&file, &digest, 1 << 30).unwrap();
        let (taken, workspace, home) = (
            dir.path().join("taken"),
            dir.path().join("ws"),
            dir.path().join("home"),
        );
        std::fs::create_dir(&workspace).unwrap();
        std::fs::create_dir(&home).unwrap();
        assert!(warm.take(&digest, &taken).unwrap());
        assert!(
            !warm.take(&digest, &dir.path().join("again")).unwrap(),
            "taken twice"
        );
        assert_eq!(place(&taken, &cache, &workspace, &home).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(workspace.join("deps/tool")).unwrap(),
            "tool\n"
        );
        assert_eq!(
            std::fs::read_to_string(home.join(".cache/x/index")).unwrap(),
            "index\n"
        );
    }

    #[test]
    fn a_directory_others_may_enter_or_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = WarmSnapshots::open(&open, 2).unwrap_err();
        assert!(
            error.to_string().contains("no one else may enter"),
            "{error}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(WarmSnapshots::open(&link, 2).is_err());
        // A new one is made only when a copy is.
        let new = dir.path().join("new");
        let warm = WarmSnapshots::open(&new, 2).unwrap();
        assert!(!new.exists());
        assert!(!warm.take(DIGEST_A, &dir.path().join("t")).unwrap());
        assert!(!new.exists());
        warm.archive_file().unwrap();
        assert!(new.is_dir());
    }

    #[test]
    fn a_damaged_archive_or_a_name_that_is_no_digest_makes_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _, _) = archive(dir.path());
        let warm = WarmSnapshots::open(&dir.path().join("warm"), 2).unwrap();
        assert!(matches!(
            warm.fill(&file, DIGEST_A, 1 << 30),
            Err(SnapshotError::Damaged { .. })
        ));
        assert!(warm.fill(&file, "../../etc", 1 << 30).is_ok());
        assert!(!warm.take("../../etc", &dir.path().join("t")).unwrap());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("warm"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn only_the_most_recent_copies_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let warm = WarmSnapshots::open(&dir.path().join("warm"), 1).unwrap();
        let mut digests = Vec::new();
        for n in 0..2 {
            let made = dir.path().join(format!("m{n}"));
            std::fs::create_dir(&made).unwrap();
            let (file, digest, _) = archive(&made);
            std::fs::write(made.join("w/deps/tool"), format!("tool {n}\n")).unwrap();
            let cache = cache("cache = [\"deps/\"]");
            let packed = snapshot::pack(&made.join("w"), None, &cache, &file).unwrap();
            assert_ne!(packed.sha256, digest);
            warm.fill(&file, &packed.sha256, 1 << 30).unwrap();
            digests.push(packed.sha256);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!warm.take(&digests[0], &dir.path().join("t0")).unwrap());
        assert!(warm.take(&digests[1], &dir.path().join("t1")).unwrap());
    }

    #[test]
    fn a_hostile_workspace_link_or_a_path_in_place_stops_the_move() {
        let dir = tempfile::tempdir().unwrap();
        let (file, digest, _) = archive(dir.path());
        let warm = WarmSnapshots::open(&dir.path().join("warm"), 2).unwrap();
        let cache = cache("cache = [\"build/deps\"]");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        // The repository holds `build` -> a directory outside: nothing may land there.
        let (workspace, home) = (dir.path().join("ws"), dir.path().join("home"));
        std::fs::create_dir(&workspace).unwrap();
        std::os::unix::fs::symlink(&elsewhere, workspace.join("build")).unwrap();
        let taken = dir.path().join("taken");
        std::fs::create_dir_all(taken.join("workspace/build/deps")).unwrap();
        assert!(matches!(
            place(&taken, &cache, &workspace, &home),
            Err(PlaceError::Through(_))
        ));
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // A path the clone already holds is not replaced.
        warm.fill(&file, &digest, 1 << 30).unwrap();
        assert!(warm.take(&digest, &dir.path().join("t")).unwrap());
        let workspace = dir.path().join("ws2");
        std::fs::create_dir_all(workspace.join("deps")).unwrap();
        assert!(matches!(
            place(&dir.path().join("t"), &cache_deps(), &workspace, &home),
            Err(PlaceError::Occupied(_))
        ));
    }

    fn cache_deps() -> Vec<CachePath> {
        cache("cache = [\"deps/\"]")
    }
}
