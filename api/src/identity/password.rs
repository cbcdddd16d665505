//! Passwords: argon2id (the `argon2` crate's defaults, OWASP's recommended parameters), hashed
//! and checked off the async threads because the work is meant to be slow.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use zeroize::Zeroizing;

/// Shorter passwords are guessable; longer ones are a denial-of-service vector.
pub const MIN_CHARS: usize = 10;
pub const MAX_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password needs at least {MIN_CHARS} characters")]
    TooShort,
    #[error("a password may be at most {MAX_BYTES} bytes")]
    TooLong,
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

/// Refuses a password too short or too long to accept.
pub fn check(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// The PHC string to store for `password`.
pub async fn hash(password: Zeroizing<String>) -> Result<String, PasswordError> {
    check(&password)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Hash(e.to_string()))?
}

/// Whether `password` matches `stored`. Without a stored hash the same work is done against a
/// throwaway one, so the answer's timing does not tell whether the account exists.
pub async fn verify(password: Zeroizing<String>, stored: Option<String>) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| DECOY.clone());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        known && matches
    })
    .await
    .unwrap_or(false)
}

/// A hash, with the same parameters, of a random password nobody knows.
static DECOY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let secret: [u8; 32] = rand::random();
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(&secret, &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_only_against_its_own_hash() {
        let stored = hash(Zeroizing::new("correct horse battery".into()))
            .await
            .unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(
            verify(
                Zeroizing::new("correct horse battery".into()),
                Some(stored.clone())
            )
            .await
        );
        assert!(!verify(Zeroizing::new("correct horse batterY".into()), Some(stored)).await);
        assert!(!verify(Zeroizing::new("correct horse battery".into()), None).await);
    }

    #[tokio::test]
    async fn weak_and_huge_passwords_are_refused() {
        assert!(matches!(
            hash(Zeroizing::new("short".into())).await,
            Err(PasswordError::TooShort)
        ));
        assert!(matches!(
            check(&"x".repeat(MAX_BYTES + 1)),
            Err(PasswordError::TooLong)
        ));
        assert!(check("ten chars!").is_ok());
    }
}
