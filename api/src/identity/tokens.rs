//! Tokens: opaque random secrets handed out once and stored only as SHA-256 hashes. Sessions
//! (access and refresh pairs), personal access tokens, and the primitives the job engine uses
//! for worker tokens.

use std::time::Duration;

use ckrv_wit::protocol::BEARER;
use ckrv_wit::types::TokenResponse;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::store::{NewToken, Store, StoreError, TokenKind, TokenOwner};

pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60 * 60);
/// The prefix of worker credentials, so that one pasted in the wrong place is recognisable.
pub const WORKER_CREDENTIAL_PREFIX: &str = "ckrv_wk";

/// The worker name of every job this server's own dispatcher starts (a local process or a
/// Kubernetes Job). No external worker may take it: removing that worker would revoke them all.
pub const SERVER_WORKER: &str = "local";

pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A new secret: a readable kind prefix and 256 random bits.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{prefix}_{}", hex::encode(bytes))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The model token of the claim whose worker token is `worker_token`: what the job's agent
/// sends the model gateway instead of a key. Derived one way, so the worker and the job pod
/// can be handed it without the API storing it, and the agent, which holds it, learns nothing
/// of the worker's token.
pub fn model_token(worker_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"ckrv model token\0")
        .chain_update(worker_token.as_bytes())
        .finalize();
    format!("{MODEL_TOKEN_PREFIX}{}", hex::encode(digest))
}

/// How every model token starts: the gateway finds it by this among a request's headers.
pub const MODEL_TOKEN_PREFIX: &str = "ckrv_mt_";

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
