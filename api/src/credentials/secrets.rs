//! Secrets at rest. Git credentials are sealed with XChaCha20-Poly1305 under a server key; each
//! sealed value names the key that sealed it, so a new key can take over while older values
//! stay readable, and carries associated data that binds it to its owner, so a ciphertext moved
//! to another row does not open.
//!
//! The keys live in one file, one `<key id> <64 hex digits>` line per key, the last one active.
//! It must be readable by its owner only.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::Rng as _;
use zeroize::Zeroizing;

use crate::store::Sealed;

/// The key file in the data directory, unless the operator names another.
pub const DEFAULT_KEY_FILE: &str = "secrets.key";

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{action} the secrets key file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the secrets key file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the secrets key file {path}, line {line}: {why}")]
    Malformed {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
    #[error("the secrets key file {0} holds no key")]
    Empty(PathBuf),
    #[error("a stored secret was sealed with key {0}, which the secrets key file no longer holds")]
    UnknownKey(String),
    #[error("a stored secret does not open: it was altered, or it belongs to another record")]
    Tampered,
    #[error("key {0} is the active key: add a new one first (`ckrv-api keys rotate`)")]
    Active(String),
}

/// The server's keys for secrets at rest.
pub struct SecretKeys {
    keys: BTreeMap<String, Zeroizing<[u8; KEY_BYTES]>>,
    /// Key ids in the file's order.
    order: Vec<String>,
    active: String,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeys")
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretKeys {
    /// Loads the key file, first creating it (mode 0600) with one new key when there is none.
    /// The flag says whether it was created, so the caller can tell the operator to keep it.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SecretsError> {
        let io = |action, source| SecretsError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let line = Zeroizing::new(format!("{} {}\n", new_key_id(), new_key_hex().as_str()));
                file.write_all(line.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io("writing", e))?;
                Ok((Self::load(path)?, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::load(path)?, false))
            }
            Err(e) => Err(io("creating", e)),
        }
    }

    /// Loads an existing key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let io = |source| SecretsError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if let Some(mode) = crate::private_file::exposure(path, &meta) {
            return Err(SecretsError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let malformed = |line, why| SecretsError::Malformed {
            path: path.to_path_buf(),
            line,
            why,
        };
        let mut keys = BTreeMap::new();
        let mut order = Vec::new();
        let mut active = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, hex_key) = line
                .split_once(' ')
                .ok_or_else(|| malformed(index + 1, "expected `<key id> <64 hex digits>`"))?;
            let mut key = Zeroizing::new([0u8; KEY_BYTES]);
            hex::decode_to_slice(hex_key.trim(), key.as_mut_slice())
                .map_err(|_| malformed(index + 1, "the key is not 64 hex digits"))?;
            if keys.insert(id.to_string(), key).is_some() {
                return Err(malformed(index + 1, "the key id is used twice"));
            }
            order.push(id.to_string());
            active = Some(id.to_string());
        }
        let active = active.ok_or_else(|| SecretsError::Empty(path.to_path_buf()))?;
        Ok(Self {
            keys,
            order,
            active,
        })
    }

    /// The key ids, oldest first; the last is active.
    pub fn ids(&self) -> Vec<&str> {
        self.order.iter().map(String::as_str).collect()
    }

    pub fn active(&self) -> &str {
        &self.active
    }

    /// Adds a new key to the end of the file at `path`, making it the active one, and returns
    /// its id. The file is replaced whole (written beside it, then renamed), so a reader never
    /// sees half of it.
    pub fn add_key(path: &Path) -> Result<String, SecretsError> {
        let current = Self::load(path)?;
        let id = new_key_id();
        let mut text = Zeroizing::new(String::new());
        for old in &current.order {
            if let Some(key) = current.keys.get(old) {
                text.push_str(&format!("{old} {}\n", hex::encode(key.as_slice())));
            }
        }
        text.push_str(&format!("{id} {}\n", new_key_hex().as_str()));
        replace_file(path, &text)?;
        Ok(id)
    }

    /// Removes key `id` from the file at `path`; the active key cannot be removed.
    pub fn remove_key(path: &Path, id: &str) -> Result<(), SecretsError> {
        let current = Self::load(path)?;
        if !current.keys.contains_key(id) {
            return Err(SecretsError::UnknownKey(id.to_string()));
        }
        if current.active == id {
            return Err(SecretsError::Active(id.to_string()));
        }
        let mut text = Zeroizing::new(String::new());
        for old in current.order.iter().filter(|k| *k != id) {
            if let Some(key) = current.keys.get(old) {
                text.push_str(&format!("{old} {}\n", hex::encode(key.as_slice())));
            }
        }
        replace_file(path, &text)
    }

    /// Seals `plaintext` under the active key, bound to `associated`.
    pub fn seal(&self, associated: &[u8], plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        let nonce: [u8; NONCE_BYTES] = rand::rng().random();
        let ciphertext = self
            .cipher(&self.active)?
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated,
                },
            )
            .map_err(|_| SecretsError::Tampered)?;
        Ok(Sealed {
            key_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed value; fails unless `associated` is what it was sealed with.
    pub fn open(
        &self,
        sealed: &Sealed,
        associated: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(SecretsError::Tampered);
        }
        self.cipher(&sealed.key_id)?
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: associated,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SecretsError::Tampered)
    }

    /// A key for another `purpose` (signing cookies, say), derived from the active key with
    /// HKDF-SHA256, so one key file serves every secret the server keeps. It changes when the
    /// active key does.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        if let Some(key) = self.keys.get(&self.active) {
            let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, key.as_slice());
            // 64 bytes is far below HKDF-SHA256's limit of 255 blocks, so this cannot fail.
            let _ = hkdf.expand(purpose.as_bytes(), out.as_mut_slice());
        }
        out
    }

    fn cipher(&self, key_id: &str) -> Result<XChaCha20Poly1305, SecretsError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| SecretsError::UnknownKey(key_id.to_string()))?;
        Ok(XChaCha20Poly1305::new(key.as_slice().into()))
    }
}

/// The key file as a running server uses it: reread when it changes on disk (after
/// `ckrv-api keys rotate` or `retire`), so a server never seals under a retired key and opens
/// what a rotation re-encrypted without a restart.
pub struct KeyRing {
    path: PathBuf,
    current: std::sync::RwLock<(Option<std::time::SystemTime>, std::sync::Arc<SecretKeys>)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(path: PathBuf, keys: SecretKeys) -> Self {
        let modified = modified(&path);
        Self {
            path,
            current: std::sync::RwLock::new((modified, std::sync::Arc::new(keys))),
        }
    }

    /// The keys, reloaded first when the file changed since they were read. A file that no
    /// longer loads keeps the keys in memory (and says so), rather than stopping the server.
    pub fn keys(&self) -> std::sync::Arc<SecretKeys> {
        let now = modified(&self.path);
        {
            let current = self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.0 == now {
                return std::sync::Arc::clone(&current.1);
            }
        }
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match SecretKeys::load(&self.path) {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), active = keys.active(), "reloaded the secrets key file");
                *current = (now, std::sync::Arc::new(keys));
            }
            Err(e) => {
                tracing::error!(error = %e, "the changed secrets key file does not load; keeping the keys in memory")
            }
        }
        std::sync::Arc::clone(&current.1)
    }

    pub fn seal(&self, associated: &[u8], plaintext: &[u8]) -> Result<Sealed, SecretsError> {
        self.keys().seal(associated, plaintext)
    }

    pub fn open(
        &self,
        sealed: &Sealed,
        associated: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        self.keys().open(sealed, associated)
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What a sealed git credential is bound to: opening it under another account or name fails.
pub fn credential_binding(account_id: &str, name: &str) -> Vec<u8> {
    format!("ckrv-credential/v1\0{account_id}\0{name}").into_bytes()
}

/// What a sealed webhook secret is bound to: it opens only as this webhook's. Here, beside the
/// credentials' binding, because key rotation reseals both.
pub fn webhook_binding(webhook_id: &str) -> Vec<u8> {
    format!("ckrv-webhook/v1\0{webhook_id}").into_bytes()
}

/// Writes `text` to a new 0600 file beside `path` and renames it over `path`.
fn replace_file(path: &Path, text: &str) -> Result<(), SecretsError> {
    let io = |source| SecretsError::Io {
        action: "rewriting",
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("new{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

fn new_key_id() -> String {
    let id: [u8; 4] = rand::rng().random();
    format!("k{}", hex::encode(id))
}

fn new_key_hex() -> Zeroizing<String> {
    let key = Zeroizing::new(rand::rng().random::<[u8; KEY_BYTES]>());
    Zeroizing::new(hex::encode(key.as_slice()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_new_key_file_is_private_and_seals_values_that_open_only_with_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (keys, created) = SecretKeys::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let sealed = keys.seal(b"account-a/github", b"ghp_s3cret").unwrap();
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"s3cret"));
        assert!(!format!("{sealed:?}").contains("ciphertext"));
        assert_eq!(
            keys.open(&sealed, b"account-a/github").unwrap().as_slice(),
            b"ghp_s3cret"
        );
        assert!(matches!(
            keys.open(&sealed, b"account-b/github"),
            Err(SecretsError::Tampered)
        ));
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert!(matches!(
            keys.open(&altered, b"account-a/github"),
            Err(SecretsError::Tampered)
        ));

        // Loading again reads the same key: the value still opens.
        let (again, created) = SecretKeys::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(
            again.open(&sealed, b"account-a/github").unwrap().as_slice(),
            b"ghp_s3cret"
        );
    }

    #[test]
    fn older_keys_still_open_what_they_sealed_and_the_last_key_seals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (old, _) = SecretKeys::load_or_create(&path).unwrap();
        let sealed_before = old.seal(b"x", b"before").unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "knew {}", "ab".repeat(32)).unwrap();
        let keys = SecretKeys::load(&path).unwrap();
        assert_eq!(
            keys.open(&sealed_before, b"x").unwrap().as_slice(),
            b"before"
        );
        assert_eq!(keys.seal(b"x", b"after").unwrap().key_id, "knew");
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_follow_the_active_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let (keys, _) = SecretKeys::load_or_create(&path).unwrap();
        let cookies = keys.derive("cookies");
        assert_ne!(*cookies, [0u8; 64]);
        assert_ne!(*cookies, *keys.derive("other"));
        assert_eq!(
            *cookies,
            *SecretKeys::load(&path).unwrap().derive("cookies")
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "knew {}", "cd".repeat(32)).unwrap();
        assert_ne!(
            *cookies,
            *SecretKeys::load(&path).unwrap().derive("cookies")
        );
    }

    #[test]
    fn exposed_or_malformed_key_files_are_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        SecretKeys::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretKeys::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "k1 not-hex\n").unwrap();
        let err = SecretKeys::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("64 hex digits"),
            "{err}"
        );
        std::fs::write(&path, "# nothing yet\n").unwrap();
        assert!(matches!(
            SecretKeys::load(&path),
            Err(SecretsError::Empty(_))
        ));
    }
}
