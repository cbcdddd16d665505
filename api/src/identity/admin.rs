//! `ckrv-api users …` and `ckrv-api workers …`: what an administrator does to accounts, their
//! tokens and external workers' credentials, on the same data directory as `serve` (SQLite
//! takes the two at once).

use std::time::Duration;

use ckrv_wit::types::SubscriptionTier;

use crate::identity::accounts::{self, IdentityError, NewUser};
use crate::identity::tokens;
use crate::store::{Account, PersonalToken, Store};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no token {id} of {email}: see them with `ckrv-api users tokens {email}`")]
    NoSuchToken { email: String, id: String },
    #[error(
        "the server's public URL is unknown: start `ckrv-api serve` once, or pass --public-url"
    )]
    NoPublicUrl,
    #[error("worker name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.' (e.g. build-host-1)")]
    BadWorkerName(String),
    #[error("worker name {0:?} is reserved for the jobs the server starts itself; choose another")]
    ReservedWorkerName(String),
    #[error("a worker named {0} exists; remove it first or choose another name")]
    WorkerExists(String),
    #[error("no worker named {0}: see them with `ckrv-api workers list`")]
    NoSuchWorker(String),
}

/// The URL links are made with: the one given, else the one `serve` last recorded.
pub async fn public_url(store: &Store, given: Option<&str>) -> Result<String, AdminError> {
    match given {
        Some(url) => Ok(url.trim_end_matches('/').to_string()),
        None => store
            .setting("public_url")
            .await?
            .ok_or(AdminError::NoPublicUrl),
    }
}

/// Adds an account; without a password, also returns the link at which the person sets one.
pub async fn add_user(
    store: &Store,
    user: NewUser,
    public_url: Option<&str>,
) -> Result<(Account, Option<String>), AdminError> {
    // Known before anything is written, so a missing URL leaves no half-made account.
    let link_base = match user.password {
        Some(_) => None,
        None => Some(self::public_url(store, public_url).await?),
    };
    let account = accounts::add_user(store, user).await?;
    let link = match link_base {
        Some(base) => Some(accounts::setup_link(store, Some(&account.id), &base).await?),
        None => None,
    };
    Ok((account, link))
}

/// A new one-time link at which the account sets a new password.
pub async fn reset_password(
    store: &Store,
    email: &str,
    public_url: Option<&str>,
) -> Result<String, AdminError> {
    let account = accounts::find_account(store, email).await?;
    let base = self::public_url(store, public_url).await?;
    Ok(accounts::setup_link(store, Some(&account.id), &base).await?)
}

pub async fn set_tier(
    store: &Store,
    email: &str,
    tier: SubscriptionTier,
) -> Result<Account, AdminError> {
    let account = accounts::find_account(store, email).await?;
    store.set_tier(&account.id, tier).await?;
    Ok(accounts::find_account(store, email).await?)
}

/// Disables (or enables again) an account; disabling revokes its tokens and ends its sessions
/// at once, for good: enabling it again does not bring them back.
pub async fn set_disabled(
    store: &Store,
    email: &str,
    disabled: bool,
) -> Result<Account, AdminError> {
    let account = accounts::find_account(store, email).await?;
    store.set_disabled(&account.id, disabled).await?;
    Ok(accounts::find_account(store, email).await?)
}

/// A personal access token for CI: its id and the secret, shown once.
pub async fn issue_token(
    store: &Store,
    email: &str,
    name: &str,
    ttl: Option<Duration>,
) -> Result<(String, String), AdminError> {
    let account = accounts::find_account(store, email).await?;
    Ok(tokens::issue_personal_token(store, &account.id, name, ttl).await?)
}

pub async fn tokens(store: &Store, email: &str) -> Result<Vec<PersonalToken>, AdminError> {
    let account = accounts::find_account(store, email).await?;
    Ok(store.personal_tokens(&account.id).await?)
}

pub async fn revoke_token(store: &Store, email: &str, id: &str) -> Result<(), AdminError> {
    let account = accounts::find_account(store, email).await?;
    if store.revoke_personal_token(&account.id, id).await? {
        Ok(())
    } else {
        Err(AdminError::NoSuchToken {
            email: account.email,
            id: id.to_string(),
        })
    }
}

/// Issues a credential for an external worker called `name`; returns the secret, shown once.
pub async fn add_worker(store: &Store, name: &str) -> Result<String, AdminError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid {
        return Err(AdminError::BadWorkerName(name.to_string()));
    }
    if name == tokens::SERVER_WORKER {
        return Err(AdminError::ReservedWorkerName(name.to_string()));
    }
    let secret = tokens::new_secret(tokens::WORKER_CREDENTIAL_PREFIX);
    let now = crate::clock::millis(crate::clock::now());
    if store
        .add_worker_credential(name, &tokens::hash_secret(&secret), now)
        .await?
    {
        Ok(secret)
    } else {
        Err(AdminError::WorkerExists(name.to_string()))
    }
}

/// Revokes an external worker's credential at once, and the tokens of the jobs it is running:
/// returns those jobs' ids. The serving API (every replica of it) re-queues or fails each of
/// them by the lost-worker rules on its next reaper pass; this command writes no job state.
pub async fn remove_worker(store: &Store, name: &str) -> Result<Vec<String>, AdminError> {
    store
        .remove_worker_credential(name)
        .await?
        .ok_or_else(|| AdminError::NoSuchWorker(name.to_string()))
}
