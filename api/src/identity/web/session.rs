//! Browser sessions: a random id in a signed cookie, only its hash in the store, and one CSRF
//! token per session that every form carries back. Before a session exists, a sign-in is bound
//! to the browser that started it the same way: a secret in a signed cookie that what comes
//! back (the sign-in form's nonce, the OpenID provider's `state`) must match.

use std::time::Duration;

use axum_extra::extract::cookie::{Cookie, SameSite, SignedCookieJar};

use crate::clock;
use crate::error::AppError;
use crate::identity::IdentityState;
use crate::identity::tokens::{duration_ms, hash_secret, new_secret};
use crate::store::Account;

pub const SESSION_COOKIE: &str = "ckrv_session";
/// A browser stays signed in for a working day.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// The signed-in person behind a browser request.
#[derive(Debug, Clone)]
pub struct WebUser {
    pub account: Account,
    pub csrf_token: String,
    id_hash: String,
}

impl WebUser {
    /// The session the request's cookie names, if it is live and its account enabled.
    pub async fn from_jar(
        state: &IdentityState,
        jar: &SignedCookieJar,
    ) -> Result<Option<Self>, AppError> {
        let Some(cookie) = jar.get(SESSION_COOKIE) else {
            return Ok(None);
        };
        let id_hash = hash_secret(cookie.value());
        let Some(session) = state
            .store
            .web_session(&id_hash, clock::millis(clock::now()))
            .await?
        else {
            return Ok(None);
        };
        let Some(account) = state.store.account(&session.account_id).await? else {
            return Ok(None);
        };
        Ok(Some(Self {
            account,
            csrf_token: session.csrf_token,
            id_hash,
        }))
    }

    /// Whether a form's token is this session's (compared through hashes, so the comparison
    /// does not leak the token's prefix through its timing).
    pub fn csrf_ok(&self, presented: &str) -> bool {
        tokens_match(&self.csrf_token, presented)
    }

    /// The hash of the session's id, as the store keys it.
    pub fn session_hash(&self) -> &str {
        &self.id_hash
    }

    /// Ends the session here and in the store.
    pub async fn sign_out(
        self,
        state: &IdentityState,
        jar: SignedCookieJar,
    ) -> Result<SignedCookieJar, AppError> {
        state.store.delete_web_session(&self.id_hash).await?;
        Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/")))
    }
}

/// Starts a session for `account_id` and sets its cookie.
pub async fn sign_in(
    state: &IdentityState,
    jar: SignedCookieJar,
    account_id: &str,
) -> Result<SignedCookieJar, AppError> {
    let id = new_secret("ckrv_ws");
    let now = clock::millis(clock::now());
    state
        .store
        .create_web_session(
            &hash_secret(&id),
            account_id,
            &new_secret("csrf"),
            now,
            now + duration_ms(SESSION_TTL),
        )
        .await?;
    Ok(jar.add(cookie(state, SESSION_COOKIE, id, SESSION_TTL)))
}

/// A cookie scripts cannot read, not sent along cross-site subrequests, and over HTTPS only
/// when the service is served over HTTPS.
fn cookie(
    state: &IdentityState,
    name: &'static str,
    value: String,
    ttl: Duration,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.public_url.starts_with("https://"))
        .max_age(time::Duration::seconds(
            i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        ))
        .build()
}

/// A secret handed to one browser in a signed cookie, so that only that browser can finish
/// what it started (login CSRF: another site must not sign a browser in to an account of its
/// choosing).
pub struct Binding {
    cookie: &'static str,
    ttl: Duration,
}

impl Binding {
    pub const fn new(cookie: &'static str, ttl: Duration) -> Self {
        Self { cookie, ttl }
    }

    /// Gives the browser `secret` to present later.
    pub fn bind(
        &self,
        state: &IdentityState,
        jar: SignedCookieJar,
        secret: String,
    ) -> SignedCookieJar {
        jar.add(cookie(state, self.cookie, secret, self.ttl))
    }

    /// Whether `presented` is the secret this browser was given.
    pub fn matches(&self, jar: &SignedCookieJar, presented: &str) -> bool {
        jar.get(self.cookie)
            .is_some_and(|cookie| tokens_match(cookie.value(), presented))
    }

    /// Forgets the secret: it is good once.
    pub fn clear(&self, jar: SignedCookieJar) -> SignedCookieJar {
        jar.remove(Cookie::build(self.cookie).path("/"))
    }
}

/// Whether a presented secret is the expected one (compared through hashes, so the comparison
/// does not leak the secret's prefix through its timing).
fn tokens_match(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && hash_secret(expected) == hash_secret(presented)
}
