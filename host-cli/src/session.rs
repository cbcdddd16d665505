//! The stored login: in the OS keyring (one entry per provider and API URL) when one is usable,
//! else in `<config dir>/credentials.json`, readable by the owner only, which the CLI says once
//! when it falls back. `--insecure-storage` chooses the file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::keyring_store::KeyringEntry;

/// Tokens of one API. Never printed: `Debug` hides them.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub api_url: String,
    pub access_token: String,
    /// Absent for a personal access token (`--with-token`, `CKRV_TOKEN`): there is nothing to
    /// refresh.
    pub refresh_token: Option<String>,
    /// Whether the access token is a personal access token, which other machines and CI may
    /// share: logging out forgets it here and revokes it only when asked. Sessions stored before
    /// this was recorded tell by their missing refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    personal_access_token: Option<bool>,
}

impl Session {
    /// A session from the device flow (or a refresh).
    pub fn device(api_url: String, access_token: String, refresh_token: Option<String>) -> Self {
        Self {
            api_url,
            access_token,
            refresh_token,
            personal_access_token: Some(false),
        }
    }

    /// A session that is a personal access token.
    pub fn personal(api_url: String, token: String) -> Self {
        Self {
            api_url,
            access_token: token,
            refresh_token: None,
            personal_access_token: Some(true),
        }
    }

    pub fn is_personal_access_token(&self) -> bool {
        self.personal_access_token
            .unwrap_or(self.refresh_token.is_none())
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("api_url", &self.api_url)
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where a session is kept.
pub struct SessionStore {
    file: FileStore,
    /// `None`: the file was chosen (`--insecure-storage`).
    keyring: Option<KeyringEntry>,
}

/// Where the session was found or put, for `ckrv cloud whoami`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Keyring,
    File(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keyring => f.write_str("the OS keyring"),
            Self::File(path) => write!(f, "{} (mode 0600)", path.display()),
        }
    }
}

impl SessionStore {
    pub fn new(config_dir: &Path, provider: &str, api_url: &str, insecure_storage: bool) -> Self {
        Self {
            file: FileStore {
                // One file per provider (the built-in one keeps the original name); the API URL
                // inside is checked on load.
                path: config_dir.join(if provider == crate::config::BUILTIN {
                    "credentials.json".to_string()
                } else {
                    format!("credentials-{provider}.json")
                }),
            },
            keyring: (!insecure_storage).then(|| KeyringEntry::new(provider, api_url)),
        }
    }

    /// The stored session and where it was: the file's, when login kept it there (where no
    /// keyring answered, or `--insecure-storage`; a login to the keyring removes the file),
    /// else the keyring's. The file is looked at first because it is cheap: asking a keyring
    /// that is not there costs more than the rest of a command.
    pub fn load(&self) -> anyhow::Result<Option<(Session, Location)>> {
        if let Some(session) = self.file.load()? {
            return Ok(Some((session, Location::File(self.file.path.clone()))));
        }
        if let Some(keyring) = &self.keyring {
            match keyring.get() {
                Ok(Some(text)) => {
                    let session = serde_json::from_str(&text).context(
                        "the session in the OS keyring is damaged; run `ckrv cloud login`",
                    )?;
                    return Ok(Some((session, Location::Keyring)));
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "reading the session from the keyring"),
            }
        }
        Ok(None)
    }

    /// Stores the session in the keyring, removing any file copy; where no keyring is usable,
    /// in the file, saying so.
    pub fn save(&self, session: &Session) -> anyhow::Result<Location> {
        if let Some(keyring) = &self.keyring {
            match keyring.set(&serde_json::to_string(session)?) {
                Ok(()) => {
                    self.file.delete()?;
                    return Ok(Location::Keyring);
                }
                Err(e) => eprintln!(
                    "note: {e}; the session is kept in {} (mode 0600) instead",
                    self.file.path.display()
                ),
            }
        }
        self.file.save(session)?;
        Ok(Location::File(self.file.path.clone()))
    }

    /// Removes the stored session from the keyring and the file; true if there was one.
    pub fn delete(&self) -> anyhow::Result<bool> {
        let mut deleted = false;
        if let Some(keyring) = &self.keyring {
            match keyring.delete() {
                Ok(found) => deleted |= found,
                Err(e) => tracing::debug!(error = %e, "removing the session from the keyring"),
            }
        }
        Ok(self.file.delete()? || deleted)
    }
}

/// The file a session falls back to.
struct FileStore {
    path: PathBuf,
}

impl FileStore {
    fn load(&self) -> anyhow::Result<Option<Session>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "{} is damaged; delete it and run `ckrv cloud login`",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Writes a new file with mode 0600 and renames it into place, so a crash never leaves a
    /// half-written session and the tokens are never readable by others, even briefly.
    fn save(&self, session: &Session) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(session)?)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Removes the file; true if there was one.
    fn delete(&self) -> anyhow::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::device(
            "http://127.0.0.1:8080".into(),
            "ckrv_at_secret".into(),
            Some("ckrv_rt_secret".into()),
        )
    }

    #[test]
    fn a_personal_access_token_is_known_as_one_even_from_an_older_stored_session() {
        let pat = Session::personal("http://x".into(), "ckrv_pat_x".into());
        assert!(pat.is_personal_access_token());
        assert!(!session().is_personal_access_token());
        let older: Session = serde_json::from_str(
            r#"{"api_url":"http://x","access_token":"ckrv_pat_x","refresh_token":null}"#,
        )
        .unwrap();
        assert!(older.is_personal_access_token());
        let round_trip: Session =
            serde_json::from_str(&serde_json::to_string(&session()).unwrap()).unwrap();
        assert!(!round_trip.is_personal_access_token());
    }

    #[test]
    fn a_session_round_trips_in_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::new(&dir.path().join("nested"), "chakravarti", "http://x", true);
        assert_eq!(store.load().unwrap(), None);
        let file = Location::File(dir.path().join("nested/credentials.json"));
        assert_eq!(store.save(&session()).unwrap(), file);
        assert_eq!(store.load().unwrap(), Some((session(), file)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("nested/credentials.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(store.delete().unwrap());
        assert!(!store.delete().unwrap());
        assert_eq!(store.load().unwrap(), None);
    }

    #[test]
    fn debug_output_hides_the_tokens() {
        let shown = format!("{:?}", session());
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:8080"));
    }

    #[test]
    fn a_damaged_file_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("credentials.json"), "{oops").unwrap();
        let store = SessionStore::new(dir.path(), "chakravarti", "http://x", true);
        let err = format!("{:#}", store.load().unwrap_err());
        assert!(err.contains("ckrv cloud login"), "{err}");
    }
}
