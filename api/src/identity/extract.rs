//! The extractors that turn a request's bearer token into the account, worker or job it speaks
//! for. They need only the store, so any domain's state that holds one can use them.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ckrv_wit::types::ErrorKind;

use crate::clock;
use crate::error::AppError;
use crate::identity::tokens::hash_secret;
use crate::store::{Account, Store, TokenKind, TokenOwner};

/// The request's bearer token: what a worker's requests and a session's carry.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, AppError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| AppError::new(ErrorKind::NotAuthenticated, "missing bearer token"))?;
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::NotAuthenticated,
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

/// The bearer token's hash and, if it is a live token of one of `kinds`, its owner.
async fn owner_of_bearer(
    parts: &Parts,
    store: &Store,
    kinds: &[TokenKind],
) -> Result<(String, Option<TokenOwner>), AppError> {
    let hash = hash_secret(bearer(&parts.headers)?);
    let owner = store
        .token_owner(&hash, kinds, clock::millis(clock::now()))
        .await?;
    Ok((hash, owner))
}

/// The signed-in account of a user request.
#[derive(Debug, Clone)]
pub struct Session {
    pub account_id: String,
    /// What the request proved itself with, so logout can end exactly this session.
    pub via: Via,
}

/// How a user request is signed in.
#[derive(Debug, Clone)]
pub enum Via {
    /// A bearer token; its hash.
    Token(String),
    /// A signed-in browser's session cookie (the console's pages call the API this way); the
    /// session id's hash.
    Browser(String),
}

/// What `identity::web::browser_api` found: a browser request to the API, signed in by its
/// session cookie, with the session's CSRF token checked where the request changes something.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub account_id: String,
    pub session_hash: String,
}

impl<S> FromRequestParts<S> for Session
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        if let Some(browser) = parts.extensions.get::<BrowserSession>() {
            return Ok(Self {
                account_id: browser.account_id.clone(),
                via: Via::Browser(browser.session_hash.clone()),
            });
        }
        let store = Store::from_ref(state);
        let kinds = [TokenKind::Access, TokenKind::Personal];
        let (access_hash, owner) = owner_of_bearer(parts, &store, &kinds).await?;
        match owner {
            Some(TokenOwner::Account(account_id)) => Ok(Self {
                account_id,
                via: Via::Token(access_hash),
            }),
            _ => Err(AppError::new(
                ErrorKind::NotAuthenticated,
                "the access token is invalid, expired or revoked; refresh it or log in again",
            )),
        }
    }
}

impl Session {
    /// The session's account; a session can outlive nothing but its account's deletion.
    pub async fn account(&self, store: &Store) -> Result<Account, AppError> {
        store
            .account(&self.account_id)
            .await?
            .filter(|account| !account.disabled)
            .ok_or_else(|| {
                AppError::new(
                    ErrorKind::NotAuthenticated,
                    "the account is disabled or no longer exists",
                )
            })
    }
}

/// An external worker, proven by the credential an operator issued it.
#[derive(Debug, Clone)]
pub struct ExternalWorker {
    pub name: String,
}

impl<S> FromRequestParts<S> for ExternalWorker
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let store = Store::from_ref(state);
        let hash = hash_secret(bearer(&parts.headers)?);
        let now = clock::millis(clock::now());
        match store.worker_by_credential(&hash, now).await? {
            Some(name) => Ok(Self { name }),
            None => Err(AppError::new(
                ErrorKind::NotAuthenticated,
                "the worker credential is not known; an operator issues one with \
                 `ckrv-api workers add NAME`",
            )),
        }
    }
}

/// The job a worker request may act on.
#[derive(Debug, Clone)]
pub struct WorkerGrant {
    pub job_id: String,
    /// The claim the token was issued under.
    pub generation: i64,
}

impl<S> FromRequestParts<S> for WorkerGrant
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let store = Store::from_ref(state);
        match owner_of_bearer(parts, &store, &[TokenKind::Worker])
            .await?
            .1
        {
            Some(TokenOwner::Worker { job_id, generation }) => Ok(Self { job_id, generation }),
            _ => Err(AppError::new(
                ErrorKind::NotAuthenticated,
                "the worker token is invalid",
            )),
        }
    }
}

impl WorkerGrant {
    /// A worker token acts on its own job only.
    pub fn check(&self, job_id: &str) -> Result<(), AppError> {
        if self.job_id == job_id {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorKind::Forbidden,
                "this worker token belongs to another job",
            ))
        }
    }
}
