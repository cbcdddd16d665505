//! Sessions: opaque random tokens handed out once and stored only as SHA-256 hashes, and the
//! extractors that turn a bearer token into the account or job it speaks for.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ckrv_wit::protocol::BEARER;
use ckrv_wit::types::{ErrorKind, TokenResponse};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::{NewToken, Store, StoreError, TokenKind, TokenOwner};

pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A new secret: a readable kind prefix and 256 random bits.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}_{}", hex::encode(bytes))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A device-flow user code such as `BCDF-2345`: letters without vowels (no words) and digits.
pub fn new_user_code() -> String {
    const LETTERS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut rng = rand::rng();
    let letters: String = (0..4)
        .map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]))
        .collect();
    let digits: u16 = rng.random_range(0..10_000);
    format!("{letters}-{digits:04}")
}

/// Issues an access/refresh pair for an account, in `family` when the client is refreshing
/// (a new family at sign-in).
pub async fn issue_session(
    store: &Store,
    account_id: &str,
    family: Option<&str>,
) -> Result<TokenResponse, StoreError> {
    let access = new_secret("ckrv_at");
    let refresh = new_secret("ckrv_rt");
    let now = clock::millis(clock::now());
    let access_hash = hash_secret(&access);
    let family = family.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    let owner = TokenOwner::Account(account_id.to_string());
    let token = |hash, kind, pair_hash, ttl| NewToken {
        hash,
        kind,
        owner: &owner,
        pair_hash,
        family: Some(&family),
        id: None,
        name: None,
        created_ms: now,
        expires_ms: Some(now + duration_ms(ttl)),
    };
    store
        .insert_token(&token(
            &access_hash,
            TokenKind::Access,
            None,
            ACCESS_TOKEN_TTL,
        ))
        .await?;
    store
        .insert_token(&token(
            &hash_secret(&refresh),
            TokenKind::Refresh,
            Some(&access_hash),
            REFRESH_TOKEN_TTL,
        ))
        .await?;
    Ok(TokenResponse {
        access_token: access,
        refresh_token: Some(refresh),
        token_type: BEARER.to_string(),
        expires_in: u32::try_from(ACCESS_TOKEN_TTL.as_secs()).unwrap_or(u32::MAX),
    })
}

/// A personal access token for CI, shown once. Its id (`pat_…`) names it in lists.
pub async fn issue_personal_token(
    store: &Store,
    account_id: &str,
    name: &str,
    ttl: Option<Duration>,
) -> Result<(String, String), StoreError> {
    let token = new_secret("ckrv_pat");
    let id = format!("pat_{}", &hash_secret(&token)[..12]);
    let now = clock::millis(clock::now());
    store
        .insert_token(&NewToken {
            hash: &hash_secret(&token),
            kind: TokenKind::Personal,
            owner: &TokenOwner::Account(account_id.to_string()),
            pair_hash: None,
            family: None,
            id: Some(&id),
            name: Some(name),
            created_ms: now,
            expires_ms: ttl.map(|ttl| now + duration_ms(ttl)),
        })
        .await?;
    Ok((id, token))
}

pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn bearer(parts: &Parts) -> Result<&str, AppError> {
    let header = parts
        .headers
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
    state: &AppState,
    kinds: &[TokenKind],
) -> Result<(String, Option<TokenOwner>), AppError> {
    let hash = hash_secret(bearer(parts)?);
    let owner = state
        .store
        .token_owner(&hash, kinds, clock::millis(clock::now()))
        .await?;
    Ok((hash, owner))
}

/// The signed-in account of a user request.
#[derive(Debug, Clone)]
pub struct Session {
    pub account_id: String,
    /// Hash of the access token, so logout can revoke exactly this session.
    pub access_hash: String,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let kinds = [TokenKind::Access, TokenKind::Personal];
        let (access_hash, owner) = owner_of_bearer(parts, state, &kinds).await?;
        match owner {
            Some(TokenOwner::Account(account_id)) => Ok(Self {
                account_id,
                access_hash,
            }),
            _ => Err(AppError::new(
                ErrorKind::NotAuthenticated,
                "the access token is invalid, expired or revoked; refresh it or log in again",
            )),
        }
    }
}

/// An external worker, proven by the credential an operator issued it.
#[derive(Debug, Clone)]
pub struct ExternalWorker {
    pub name: String,
}

/// The prefix of worker credentials, so that one pasted in the wrong place is recognisable.
pub const WORKER_CREDENTIAL_PREFIX: &str = "ckrv_wk";

impl FromRequestParts<AppState> for ExternalWorker {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let hash = hash_secret(bearer(parts)?);
        let now = clock::millis(clock::now());
        match state.store.worker_by_credential(&hash, now).await? {
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

impl FromRequestParts<AppState> for WorkerGrant {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match owner_of_bearer(parts, state, &[TokenKind::Worker]).await?.1 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_have_the_documented_shape() {
        for _ in 0..100 {
            let code = new_user_code();
            let (letters, digits) = code.split_once('-').expect("dash");
            assert_eq!(letters.len(), 4, "{code}");
            assert!(letters.bytes().all(|b| b.is_ascii_uppercase()), "{code}");
            assert_eq!(digits.len(), 4, "{code}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{code}");
        }
    }

    #[test]
    fn secrets_are_unique_and_hashes_hide_them() {
        let a = new_secret("ckrv_at");
        let b = new_secret("ckrv_at");
        assert_ne!(a, b);
        assert!(a.starts_with("ckrv_at_"));
        assert_eq!(hash_secret(&a).len(), 64);
        assert!(!hash_secret(&a).contains(&a[8..]));
    }
}
