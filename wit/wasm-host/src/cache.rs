//! Compiled components, kept so a guest is compiled once.
//!
//! On disk (the CLI, a new process per command): loading compiled code is loading native code,
//! so the cache is used only where no one else can write: a directory of this user's with mode
//! 0700, files of this user's with mode 0600, each beside the SHA-256 of its bytes, checked
//! before the bytes are handed to wasmtime (from memory, so the file cannot change between
//! check and use). Anything else is compiled afresh, which costs time and nothing else.
//!
//! In memory (the worker): keyed by the component's SHA-256, never by a name or path that
//! could point at other bytes later.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::HostError;

/// Where compiled components are kept.
pub enum CompileCache {
    /// Under this directory, when it is private to this user.
    Disk(PathBuf),
    Memory(Mutex<HashMap<[u8; 32], Component>>),
}

impl CompileCache {
    pub fn disk(dir: impl Into<PathBuf>) -> Self {
        Self::Disk(dir.into())
    }

    pub fn memory() -> Self {
        Self::Memory(Mutex::default())
    }

    /// The compiled `bytes`; `digest` is their SHA-256 when the caller has checked it already
    /// (it names the cache entry, so it must be theirs).
    pub(crate) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: Option<[u8; 32]>,
    ) -> Result<Component, HostError> {
        let key = digest.unwrap_or_else(|| Sha256::digest(bytes).into());
        match self {
            Self::Disk(dir) => load_or_compile(engine, bytes, &key, dir).map_err(HostError::Load),
            Self::Memory(compiled) => {
                let mut compiled = compiled
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(component) = compiled.get(&key) {
                    return Ok(component.clone());
                }
                let component = Component::new(engine, bytes).map_err(HostError::Load)?;
                compiled.insert(key, component.clone());
                Ok(component)
            }
        }
    }
}

/// The compiled `bytes`, from `dir` when it holds a verified copy, else compiled (and cached
/// when `dir` is private).
fn load_or_compile(
    engine: &Engine,
    bytes: &[u8],
    key: &[u8; 32],
    dir: &Path,
) -> wasmtime::Result<Component> {
    let private = match private_dir(dir) {
        Ok(private) => private,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "not caching the compiled component");
            false
        }
    };
    if !private {
        tracing::warn!(dir = %dir.display(), "the compile cache is not private to this user; compiling in memory");
        return Component::new(engine, bytes);
    }
    let path = dir.join(file_name(engine, key));
    if let Some(compiled) = verified(&path) {
        // SAFETY: the bytes are what this program wrote with `Component::serialize` for the same
        // component (the file is named by its hash) and an engine with the same compatibility
        // hash, in a directory and file only this user can write, and they match the digest
        // recorded beside them; wasmtime checks the header and version as well.
        match unsafe { Component::deserialize(engine, &compiled) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "recompiling the component")
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(&component, &path) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
    }
    Ok(component)
}

/// `<sha256 of the component>-<engine compatibility hash>.cwasm`
fn file_name(engine: &Engine, key: &[u8; 32]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{}-{:016x}.cwasm", hex::encode(key), hasher.finish())
}

fn digest_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.sha256")
}

/// Creates the directory (0700) if needed; true if it is this user's and no one else can write
/// into it.
fn private_dir(dir: &Path) -> std::io::Result<bool> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    Ok(meta.is_dir() && mine_and_closed(&meta, 0o077))
}

/// Owned by this user, with none of `forbidden` mode bits.
fn mine_and_closed(meta: &std::fs::Metadata, forbidden: u32) -> bool {
    meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & forbidden == 0
}

/// The cached bytes, if the file is this user's, private, and matches its recorded digest.
fn verified(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || !mine_and_closed(&meta, 0o077) {
        return None;
    }
    let recorded = std::fs::read_to_string(digest_path(path)).ok()?;
    let compiled = std::fs::read(path).ok()?;
    (hex::encode(Sha256::digest(&compiled)) == recorded.trim()).then_some(compiled)
}

fn store(component: &Component, path: &Path) -> wasmtime::Result<()> {
    let compiled = component.serialize()?;
    write_private(path, &compiled)?;
    write_private(
        &digest_path(path),
        hex::encode(Sha256::digest(&compiled)).as_bytes(),
    )?;
    Ok(())
}

/// Writes a 0600 file by renaming a new one into place, so no reader sees half of it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
