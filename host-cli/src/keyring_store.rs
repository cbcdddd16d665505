//! The OS keyring through keyring-core: the Secret Service on Linux, the Keychain on macOS, the
//! Credential Manager on Windows. Every call runs on a thread
//! of its own and is given up after [`TIMEOUT`]: a locked keyring waiting for a password that
//! no one will type, or a bus that never answers, must not hang the CLI.

use std::sync::mpsc;
use std::time::Duration;

/// How long one keyring call may take before the keyring counts as unusable.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The keyring's service name for every entry of ckrv's.
const SERVICE: &str = "ckrv";

/// Why the keyring could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("no OS keyring is available ({0})")]
    Unavailable(String),
    #[error("the OS keyring did not answer within {}s", TIMEOUT.as_secs())]
    Timeout,
}

/// One entry: ckrv's session with one provider at one API URL.
#[derive(Debug, Clone)]
pub struct KeyringEntry {
    user: String,
}

impl KeyringEntry {
    pub fn new(provider: &str, api_url: &str) -> Self {
        Self {
            user: format!("{provider}@{api_url}"),
        }
    }

    /// The stored text, `None` when there is no entry.
    pub fn get(&self) -> Result<Option<String>, KeyringError> {
        let user = self.user.clone();
        with_timeout(move || match entry(&user)?.get_password() {
            Ok(text) => Ok(Some(text)),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(KeyringError::Unavailable(e.to_string())),
        })
    }

    pub fn set(&self, text: &str) -> Result<(), KeyringError> {
        let (user, text) = (self.user.clone(), zeroize::Zeroizing::new(text.to_string()));
        with_timeout(move || {
            entry(&user)?
                .set_password(&text)
                .map_err(|e| KeyringError::Unavailable(e.to_string()))
        })
    }

    /// Removes the entry; true if there was one.
    pub fn delete(&self) -> Result<bool, KeyringError> {
        let user = self.user.clone();
        with_timeout(move || match entry(&user)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring_core::Error::NoEntry) => Ok(false),
            Err(e) => Err(KeyringError::Unavailable(e.to_string())),
        })
    }
}

fn entry(user: &str) -> Result<keyring_core::Entry, KeyringError> {
    use_native_store()?;
    keyring_core::Entry::new(SERVICE, user).map_err(|e| KeyringError::Unavailable(e.to_string()))
}

/// Makes the platform's store keyring-core's default, once per process.
fn use_native_store() -> Result<(), KeyringError> {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let store = native_store()?;
            keyring_core::set_default_store(store);
            Ok(())
        })
        .clone()
        .map_err(KeyringError::Unavailable)
}

#[cfg(target_os = "linux")]
fn native_store() -> Result<std::sync::Arc<keyring_core::CredentialStore>, String> {
    let store = zbus_secret_service_keyring_store::Store::new().map_err(|e| e.to_string())?;
    Ok(store)
}

#[cfg(target_os = "macos")]
fn native_store() -> Result<std::sync::Arc<keyring_core::CredentialStore>, String> {
    let store = apple_native_keyring_store::keychain::Store::new().map_err(|e| e.to_string())?;
    Ok(store)
}

#[cfg(target_os = "windows")]
fn native_store() -> Result<std::sync::Arc<keyring_core::CredentialStore>, String> {
    let store = windows_native_keyring_store::Store::new().map_err(|e| e.to_string())?;
    Ok(store)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn native_store() -> Result<std::sync::Arc<keyring_core::CredentialStore>, String> {
    Err("this build knows no keyring for this platform".into())
}

/// Runs `call` on a thread of its own and waits at most [`TIMEOUT`] for it.
fn with_timeout<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(call());
    });
    rx.recv_timeout(TIMEOUT)
        .map_err(|_| KeyringError::Timeout)?
}
