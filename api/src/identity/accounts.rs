//! Accounts exist because an administrator created them (or, with single sign-on, because a
//! trusted provider vouched for them); a person proves who they are with a password they chose
//! through a one-time setup link or the admin command.

use std::time::Duration;

use ckrv_wit::types::SubscriptionTier;
use zeroize::Zeroizing;

use crate::clock;
use crate::identity::tokens::{duration_ms, hash_secret, new_secret};
use crate::store::{Account, NewAccount, Store, StoreError};

use super::password::{self, PasswordError};

/// How long a setup link may wait to be used.
pub const SETUP_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("“{0}” is not an email address")]
    InvalidEmail(String),
    #[error("an account for {0} already exists")]
    Exists(String),
    #[error("no account for {0}: add it with `ckrv-api users add {0}`")]
    NoSuchAccount(String),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An email as accounts are keyed: trimmed and lowercase, and shaped like an address.
pub fn normalize_email(raw: &str) -> Result<String, IdentityError> {
    let email = raw.trim().to_ascii_lowercase();
    let shaped = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
    });
    let clean = !email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`".contains(c));
    if shaped && clean && email.len() <= 254 {
        Ok(email)
    } else {
        Err(IdentityError::InvalidEmail(raw.trim().to_string()))
    }
}

/// An account an administrator is adding.
#[derive(Debug)]
pub struct NewUser {
    pub email: String,
    pub name: Option<String>,
    pub tier: SubscriptionTier,
    pub admin: bool,
    /// Without one, the person chooses it through a setup link.
    pub password: Option<Zeroizing<String>>,
}

pub async fn add_user(store: &Store, user: NewUser) -> Result<Account, IdentityError> {
    let email = normalize_email(&user.email)?;
    let password_hash = match user.password {
        Some(password) => Some(password::hash(password).await?),
        None => None,
    };
    let default_name = email.split('@').next().unwrap_or_default().to_string();
    let name = user
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or(default_name);
    store
        .create_account(&NewAccount {
            email: &email,
            name: &name,
            tier: user.tier,
            is_admin: user.admin,
            password_hash: password_hash.as_deref(),
        })
        .await?
        .ok_or(IdentityError::Exists(email))
}

/// The account for an email, or an error that says how to create it.
pub async fn find_account(store: &Store, email: &str) -> Result<Account, IdentityError> {
    let email = normalize_email(email)?;
    store
        .account_by_email(&email)
        .await?
        .ok_or(IdentityError::NoSuchAccount(email))
}

/// A one-time link at which `account_id` (or, with `None`, the first administrator) chooses a
/// password. Only the link's hash is stored.
pub async fn setup_link(
    store: &Store,
    account_id: Option<&str>,
    public_url: &str,
) -> Result<String, StoreError> {
    let token = new_secret("ckrv_setup");
    let expires = clock::millis(clock::now()) + duration_ms(SETUP_LINK_TTL);
    store
        .create_setup_token(&hash_secret(&token), account_id, expires)
        .await?;
    Ok(format!(
        "{}/setup?token={token}",
        public_url.trim_end_matches('/')
    ))
}

/// The account whose email and password these are, if they match an enabled account.
pub async fn check_sign_in(
    store: &Store,
    email: &str,
    password: Zeroizing<String>,
) -> Result<Option<Account>, StoreError> {
    let account = match normalize_email(email) {
        Ok(email) => store.account_by_email(&email).await?,
        Err(_) => None,
    };
    let hash = match &account {
        Some(account) if !account.disabled => store.password_hash(&account.id).await?,
        _ => None,
    };
    // Verified even without an account, so the time taken does not tell which emails exist.
    let ok = password::verify(password, hash).await;
    Ok(account.filter(|_| ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked_for_shape() {
        assert_eq!(
            normalize_email(" Dev@Example.COM ").unwrap(),
            "dev@example.com"
        );
        for bad in [
            "",
            "dev",
            "dev@",
            "@example.com",
            "dev@example",
            "a b@example.com",
            "<a>@x.io",
            "a@b@example.com",
            "dev@.example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
