//! Snapshots of a repository's setup (docs/environments.md): the `cache` paths after a
//! successful setup, packed as a tar archive compressed with zstd, named by a key that changes
//! whenever anything that shaped them changes, and restored in place of running setup again.
//!
//! A snapshot is made from what a job's setup wrote, so restoring one treats it as hostile: its
//! digest is checked before anything is unpacked, every entry must land inside the workspace
//! or the agent's home (no `..`, no absolute path, nothing through a symbolic link), only
//! files, directories and symbolic links are taken, and the unpacked size is bounded.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use ckrv_agents::AgentDefinition;
use ckrv_agents::environment::{CachePath, Environment};
use sha2::{Digest as _, Sha256};

/// The archive's top-level directories: what is restored where.
const WORKSPACE: &str = "workspace";
const HOME: &str = "home";
/// zstd's level: fast, and most of the gain.
const LEVEL: i32 = 3;

/// Why a snapshot could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the snapshot is damaged: its digest is {found}, not {expected}; it is discarded")]
    Damaged { expected: String, found: String },
    #[error(
        "the snapshot holds `{0}`, which would land outside the workspace and the agent's home"
    )]
    Outside(String),
    #[error(
        "the snapshot holds `{path}`, a {kind}: only files, directories and links are restored"
    )]
    Kind { path: String, kind: &'static str },
    #[error("the snapshot unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(
        "the cache path `{0}` goes through a symbolic link or a file, not directories: it is not packed"
    )]
    Through(String),
}

/// Whether every directory on the way from `root` to `relative` (not `relative` itself) is a
/// real directory or absent, never a link or a file: true also when one is missing (then so is
/// what lies past it).
fn real_dirs_to(root: &Path, relative: &Path) -> io::Result<bool> {
    let mut path = root.to_path_buf();
    let mut parts: Vec<_> = relative.components().collect();
    parts.pop();
    for part in parts {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

fn io_error(doing: &'static str) -> impl Fn(io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { doing, source }
}

/// What decides whether a snapshot still holds, besides the environment itself.
pub struct KeyInputs<'a> {
    pub repo_url: &'a str,
    pub environment: &'a Environment,
    /// Where the `key_files` are read.
    pub workspace: &'a Path,
    pub agent: &'a AgentDefinition,
    /// The image the agent runs in, where it has its own.
    pub image: Option<&'a str>,
}

/// The snapshot key: the SHA-256 (hex) of the repository's URL, the `key_files`' contents (an
/// absent one counts as absent), the setup script and its env and egress, the agent's
/// definition and image, and the platform. Each part is length-prefixed, so no two inputs
/// read alike.
pub fn key(inputs: &KeyInputs<'_>) -> Result<String, SnapshotError> {
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    part(b"ckrv snapshot v1");
    part(inputs.repo_url.as_bytes());
    let environment = inputs.environment;
    for file in &environment.key_files {
        part(file.as_os_str().as_encoded_bytes());
        match read_inside(inputs.workspace, file) {
            Ok(Some(contents)) => {
                part(b"present");
                part(&contents);
            }
            Ok(None) => part(b"absent"),
            Err(source) => {
                return Err(SnapshotError::Io {
                    doing: "reading a key file",
                    source,
                });
            }
        }
    }
    part(environment.setup.as_deref().unwrap_or_default().as_bytes());
    for (name, value) in &environment.env {
        part(name.as_bytes());
        part(value.as_bytes());
    }
    let egress = environment
        .egress
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    part(egress.as_bytes());
    for path in &environment.cache {
        part(path.to_string().as_bytes());
    }
    part(format!("{:?}", inputs.agent).as_bytes());
    part(inputs.image.unwrap_or_default().as_bytes());
    part(format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH).as_bytes());
    Ok(hex::encode(hash.finalize()))
}

/// A key file's contents: `None` when it is not there, or is not a regular file, or the way to
/// it goes through a link (a link is not followed out of the workspace).
fn read_inside(workspace: &Path, file: &Path) -> io::Result<Option<Vec<u8>>> {
    if !real_dirs_to(workspace, file)? {
        return Ok(None);
    }
    let path = workspace.join(file);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => std::fs::read(path).map(Some),
        Ok(_) => Ok(None),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// A packed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The SHA-256 (hex) of the archive's bytes.
    pub sha256: String,
    /// The archive's size.
    pub bytes: u64,
}

/// Packs the `cache` paths (those that exist) of `workspace` and `home` into `out`. Symbolic
/// links are kept as links, never followed.
pub fn pack(
    workspace: &Path,
    home: Option<&Path>,
    cache: &[CachePath],
    out: &Path,
) -> Result<Packed, SnapshotError> {
    let file = File::create(out).map_err(io_error("creating the snapshot"))?;
    let hashing = HashingWriter {
        inner: file,
        hash: Sha256::new(),
        bytes: 0,
    };
    let encoder = zstd::stream::Encoder::new(hashing, LEVEL).map_err(io_error("compressing"))?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    for path in cache {
        let (root, top, relative) = match path {
            CachePath::Workspace(relative) => (workspace, WORKSPACE, relative),
            CachePath::Home(relative) => match home {
                Some(home) => (home, HOME, relative),
                None => continue,
            },
        };
        // A repository or its setup can put a link where a directory on the way was: packing
        // through it would take the worker's own files.
        if !real_dirs_to(root, relative).map_err(io_error("packing the snapshot"))? {
            return Err(SnapshotError::Through(path.to_string()));
        }
        let source = root.join(relative);
        let Ok(meta) = std::fs::symlink_metadata(&source) else {
            continue;
        };
        let name = Path::new(top).join(relative);
        let added = if meta.is_dir() {
            builder.append_dir_all(&name, &source)
        } else {
            builder.append_path_with_name(&source, &name)
        };
        added.map_err(io_error("packing the snapshot"))?;
    }
    let encoder = builder
        .into_inner()
        .map_err(io_error("packing the snapshot"))?;
    let mut hashing = encoder.finish().map_err(io_error("compressing"))?;
    hashing
        .inner
        .flush()
        .map_err(io_error("writing the snapshot"))?;
    Ok(Packed {
        sha256: hex::encode(hashing.hash.finalize()),
        bytes: hashing.bytes,
    })
}

/// Counts and hashes what passes through.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hash.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a restore unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub entries: u64,
    pub bytes: u64,
}

/// Restores `archive` (whose SHA-256 must be `sha256`) into `workspace` and `home`, unpacking
/// at most `limit` bytes. The digest is checked before anything is written.
pub fn restore(
    archive: &Path,
    sha256: &str,
    workspace: &Path,
    home: Option<&Path>,
    limit: u64,
) -> Result<Restored, SnapshotError> {
    let found = digest_of(archive)?;
    if !found.eq_ignore_ascii_case(sha256) {
        return Err(SnapshotError::Damaged {
            expected: sha256.to_string(),
            found,
        });
    }
    let file = File::open(archive).map_err(io_error("opening the snapshot"))?;
    let decoder =
        zstd::stream::Decoder::new(BufReader::new(file)).map_err(io_error("decompressing"))?;
    let mut tar = tar::Archive::new(decoder);
    tar.set_preserve_permissions(false);
    tar.set_overwrite(true);
    let mut restored = Restored {
        entries: 0,
        bytes: 0,
    };
    let mut checked = HashSet::new();
    for entry in tar.entries().map_err(io_error("reading the snapshot"))? {
        let mut entry = entry.map_err(io_error("reading the snapshot"))?;
        let name = entry
            .path()
            .map_err(io_error("reading the snapshot"))?
            .into_owned();
        let shown = name.display().to_string();
        let (root, relative) = destination(&name, workspace, home)
            .ok_or_else(|| SnapshotError::Outside(shown.clone()))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            let kind = if kind.is_hard_link() {
                "hard link"
            } else {
                "special file"
            };
            return Err(SnapshotError::Kind { path: shown, kind });
        }
        restored.bytes = restored.bytes.saturating_add(entry.size());
        if restored.bytes > limit {
            return Err(SnapshotError::TooLarge { limit });
        }
        let Some(target) =
            place(root, &relative, &mut checked).map_err(io_error("unpacking the snapshot"))?
        else {
            return Err(SnapshotError::Outside(shown));
        };
        entry
            .unpack(&target)
            .map_err(io_error("unpacking the snapshot"))?;
        restored.entries += 1;
    }
    Ok(restored)
}

/// The path `relative` names under `root`, its parent directories made, none of them a
/// symbolic link (which an earlier entry could have planted to lead elsewhere); whatever is at
/// the path itself (but a directory) is removed, so a link there is replaced, never followed.
/// `None` when a parent is a link or not a directory.
pub(crate) fn place(
    root: &Path,
    relative: &Path,
    checked: &mut HashSet<PathBuf>,
) -> io::Result<Option<PathBuf>> {
    let mut at = root.to_path_buf();
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        at.push(part);
        let last = parts.peek().is_none();
        // A directory this restore checked or made stays one: only the restore writes, and
        // nothing it unpacks can replace a directory.
        if !last && checked.contains(&at) {
            continue;
        }
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if last && !meta.is_dir() => std::fs::remove_file(&at)?,
            Ok(_) if last => {}
            Ok(meta) if meta.is_dir() => {
                checked.insert(at.clone());
            }
            Ok(_) => return Ok(None),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if !last {
                    std::fs::create_dir(&at)?;
                    checked.insert(at.clone());
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Some(at))
}

/// Where an archive entry goes: its root (the workspace or the home) and its path there.
fn destination<'a>(
    name: &Path,
    workspace: &'a Path,
    home: Option<&'a Path>,
) -> Option<(&'a Path, PathBuf)> {
    let mut components = name.components();
    let root = match components.next()? {
        Component::Normal(top) if top == WORKSPACE => workspace,
        Component::Normal(top) if top == HOME => home?,
        _ => return None,
    };
    let mut relative = PathBuf::new();
    for component in components {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some((root, relative))
}

/// The SHA-256 (hex) of a file.
pub fn digest_of(path: &Path) -> Result<String, SnapshotError> {
    let mut file = File::open(path).map_err(io_error("opening the snapshot"))?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(io_error("reading the snapshot"))?;
        if read == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buffer[..read]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn environment(text: &str) -> Environment {
        Environment::parse_bytes(text.as_bytes()).unwrap()
    }

    fn agent() -> &'static AgentDefinition {
        ckrv_agents::find_agent("script").unwrap()
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_key_follows_what_shaped_the_result_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        write(&ws.join("package-lock.json"), "{\"v\": 1}");
        write(&ws.join("src/main.js"), "1");
        let env = environment(
            "setup = \"npm ci\"\nkey_files = [\"package-lock.json\", \"missing.txt\"]\ncache = [\"node_modules\"]",
        );
        fn inputs<'a>(env: &'a Environment, url: &'a str, ws: &'a Path) -> KeyInputs<'a> {
            KeyInputs {
                repo_url: url,
                environment: env,
                workspace: ws,
                agent: agent(),
                image: None,
            }
        }
        let first = key(&inputs(&env, "https://forge.localhost/a.git", ws)).unwrap();
        assert_eq!(first.len(), 64);
        // Other files change nothing.
        write(&ws.join("src/main.js"), "2");
        assert_eq!(
            key(&inputs(&env, "https://forge.localhost/a.git", ws)).unwrap(),
            first
        );
        // The lockfile, the repository, the script, an absent key file appearing: each does.
        write(&ws.join("package-lock.json"), "{\"v\": 2}");
        let second = key(&inputs(&env, "https://forge.localhost/a.git", ws)).unwrap();
        assert_ne!(second, first);
        assert_ne!(
            key(&inputs(&env, "https://forge.localhost/b.git", ws)).unwrap(),
            second
        );
        let other = environment(
            "setup = \"npm install\"\nkey_files = [\"package-lock.json\", \"missing.txt\"]\ncache = [\"node_modules\"]",
        );
        assert_ne!(
            key(&inputs(&other, "https://forge.localhost/a.git", ws)).unwrap(),
            second
        );
        write(&ws.join("missing.txt"), "");
        assert_ne!(
            key(&inputs(&env, "https://forge.localhost/a.git", ws)).unwrap(),
            second
        );
    }

    #[test]
    fn a_snapshot_restores_what_setup_left_links_and_all() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, home) = (dir.path().join("ws"), dir.path().join("home"));
        write(
            &ws.join("node_modules/left-pad/index.js"),
            "module.exports = 1;\n",
        );
        write(&ws.join("node_modules/.bin/keep"), "");
        std::os::unix::fs::symlink("left-pad/index.js", ws.join("node_modules/pad.js")).unwrap();
        write(&home.join(".npm/_cacache/index"), "cached");
        write(&ws.join("src/app.js"), "not cached");
        let cache = environment("cache = [\"node_modules/\", \"~/.npm\", \"absent/\"]").cache;
        let archive = dir.path().join("snapshot.tar.zst");
        let packed = pack(&ws, Some(&home), &cache, &archive).unwrap();
        assert_eq!(packed.sha256, digest_of(&archive).unwrap());
        assert_eq!(packed.bytes, std::fs::metadata(&archive).unwrap().len());

        let (ws2, home2) = (dir.path().join("ws2"), dir.path().join("home2"));
        std::fs::create_dir_all(&ws2).unwrap();
        std::fs::create_dir_all(&home2).unwrap();
        let restored = restore(&archive, &packed.sha256, &ws2, Some(&home2), 1 << 20).unwrap();
        assert!(restored.entries >= 5, "{restored:?}");
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(ws2.join("node_modules/left-pad/index.js")),
            "module.exports = 1;\n"
        );
        assert_eq!(
            std::fs::read_link(ws2.join("node_modules/pad.js")).unwrap(),
            Path::new("left-pad/index.js")
        );
        assert_eq!(read(home2.join(".npm/_cacache/index")), "cached");
        assert!(!ws2.join("src").exists(), "only the cache paths");
    }

    #[test]
    fn a_link_on_the_way_to_a_cache_path_or_key_file_is_not_followed_to_the_workers_files() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, outside) = (dir.path().join("ws"), dir.path().join("outside"));
        write(&outside.join("etc/secret"), "the worker's own");
        std::fs::create_dir_all(&ws).unwrap();
        // The repository (or its setup) made `deps` a link to the worker's files.
        std::os::unix::fs::symlink(&outside, ws.join("deps")).unwrap();
        let archive = dir.path().join("s.tar.zst");
        let cache = environment("cache = [\"deps/etc\"]").cache;
        let error = pack(&ws, None, &cache, &archive).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`deps/etc` goes through a symbolic link"),
            "{error}"
        );
        // As a key file it counts as absent: its contents never reach the key.
        let with_link = environment("key_files = [\"deps/etc/secret\"]");
        let key_of = |ws: &Path| {
            key(&KeyInputs {
                repo_url: "https://forge.localhost/a.git",
                environment: &with_link,
                workspace: ws,
                agent: agent(),
                image: None,
            })
            .unwrap()
        };
        let linked = key_of(&ws);
        std::fs::remove_file(ws.join("deps")).unwrap();
        let absent = key_of(&ws);
        assert_eq!(linked, absent);
    }

    /// A snapshot of `deps/file` holding `text`, made under `dir`: the archive and its digest.
    fn packed_deps(dir: &Path, text: &str) -> (PathBuf, Packed) {
        let ws = dir.join("ws");
        write(&ws.join("deps/file"), text);
        let archive = dir.join("s.tar.zst");
        let cache = environment("cache = [\"deps\"]").cache;
        let packed = pack(&ws, None, &cache, &archive).unwrap();
        (archive, packed)
    }

    #[test]
    fn a_damaged_snapshot_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, packed) = packed_deps(dir.path(), "a");
        let mut bytes = std::fs::read(&archive).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&archive, bytes).unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let error = restore(&archive, &packed.sha256, &target, None, 1 << 20).unwrap_err();
        assert!(
            error.to_string().starts_with("the snapshot is damaged"),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }

    /// An archive with `entries` (path, kind, link target or contents), as a hostile setup
    /// could make one, digest and all.
    /// An archive entry as written: its path, its kind, and its link target or contents.
    type RawEntry<'a> = (&'a str, tar::EntryType, &'a str);

    fn hostile(dir: &Path, entries: &[RawEntry<'_>]) -> (PathBuf, String) {
        let path = dir.join("hostile.tar.zst");
        let encoder = zstd::stream::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        let mut builder = tar::Builder::new(encoder);
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            // Written raw: tar's own setters refuse `..` and absolute paths.
            let raw = &mut header.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if kind.is_symlink() || kind.is_hard_link() {
                header.set_link_name(data).unwrap();
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, io::empty()).unwrap();
            } else {
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, data.as_bytes()).unwrap();
            }
        }
        builder.into_inner().unwrap().finish().unwrap();
        let digest = digest_of(&path).unwrap();
        (path, digest)
    }

    #[test]
    fn a_hostile_snapshot_writes_nothing_outside_the_workspace_and_home() {
        use tar::EntryType::{Block, Link, Regular, Symlink};
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let cases: [(&[RawEntry<'_>], &str); 6] = [
            (
                &[("workspace/../outside/x", Regular, "x")],
                "would land outside",
            ),
            (&[("/tmp/x", Regular, "x")], "would land outside"),
            (&[("elsewhere/x", Regular, "x")], "would land outside"),
            (
                &[
                    ("workspace/link", Symlink, outside.to_str().unwrap()),
                    ("workspace/link/x", Regular, "x"),
                ],
                "would land outside",
            ),
            (&[("workspace/hard", Link, "/etc/passwd")], "a hard link"),
            (&[("workspace/dev", Block, "")], "a special file"),
        ];
        for (entries, why) in cases {
            let ws = tempfile::tempdir_in(dir.path()).unwrap();
            let (archive, digest) = hostile(dir.path(), entries);
            let error = restore(&archive, &digest, ws.path(), None, 1 << 20).unwrap_err();
            assert!(error.to_string().contains(why), "{entries:?}: {error}");
            assert_eq!(
                std::fs::read_dir(&outside).unwrap().count(),
                0,
                "{entries:?}"
            );
        }
        // Nor does an entry for the home when the job has none.
        let ws = tempfile::tempdir_in(dir.path()).unwrap();
        let (archive, digest) = hostile(dir.path(), &[("home/.profile", Regular, "x")]);
        assert!(restore(&archive, &digest, ws.path(), None, 1 << 20).is_err());
    }

    #[test]
    fn a_snapshot_that_unpacks_past_its_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, packed) = packed_deps(dir.path(), &"0".repeat(100_000));
        assert!(packed.bytes < 10_000, "zeros compress: {packed:?}");
        let target = tempfile::tempdir().unwrap();
        let error = restore(&archive, &packed.sha256, target.path(), None, 50_000).unwrap_err();
        assert!(
            error.to_string().contains("more than 50000 bytes"),
            "{error}"
        );
    }
}
