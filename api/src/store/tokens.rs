//! Tokens, stored only as hashes of the secrets: access and refresh tokens of a signed-in
//! client (rotating within a family), personal access tokens for CI, and worker tokens.

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
    Worker,
    /// A personal access token: named, long-lived, for CI.
    Personal,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
            Self::Worker => "worker",
            Self::Personal => "pat",
        }
    }
}

/// Whom a live token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    Account(String),
    /// A worker token: it may act on this job only, under the claim of this generation.
    Worker {
        job_id: String,
        generation: i64,
    },
}

/// A token about to be stored.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub hash: &'a str,
    pub kind: TokenKind,
    pub owner: &'a TokenOwner,
    /// For a refresh token: the access token issued with it.
    pub pair_hash: Option<&'a str>,
    /// The refresh family an access or refresh token belongs to.
    pub family: Option<&'a str>,
    /// For a personal access token: its public id and name.
    pub id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Unknown, expired, revoked, or of a disabled account.
    Invalid,
    /// First use: the token and its access token are now revoked.
    Fresh { account_id: String, family: String },
    /// Used moments ago: the client retrying a request whose answer it lost.
    Retry { account_id: String, family: String },
    /// Used before, beyond the grace: stolen or replayed; its whole family is now revoked.
    Reused { account_id: String },
}

/// A personal access token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalToken {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// Whether a listed token still works, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    Expired,
    Revoked,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl PersonalToken {
    /// Its status at `now_ms`, by the rule [`Store::token_owner`] applies: live while neither
    /// revoked nor past its expiry (a revoked token says so whether or not it has expired).
    pub fn status(&self, now_ms: i64) -> TokenStatus {
        if self.revoked {
            TokenStatus::Revoked
        } else if self.expires_ms.is_some_and(|expires| expires <= now_ms) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }
}

impl Store {
    pub async fn insert_token(&self, new: &NewToken<'_>) -> Result<(), StoreError> {
        let (account_id, job_id) = match new.owner {
            TokenOwner::Account(id) => (Some(id.as_str()), None),
            TokenOwner::Worker { job_id, .. } => (None, Some(job_id.as_str())),
        };
        sqlx::query(
            "INSERT INTO tokens (token_hash, kind, account_id, job_id, pair_hash, family, id, name,
                                 created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(new.hash)
        .bind(new.kind.as_str())
        .bind(account_id)
        .bind(job_id)
        .bind(new.pair_hash)
        .bind(new.family)
        .bind(new.id)
        .bind(new.name)
        .bind(new.created_ms)
        .bind(new.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The owner of a live (unrevoked, unexpired) token of one of `kinds`. An account's token
    /// is live only while the account is enabled.
    pub async fn token_owner(
        &self,
        token_hash: &str,
        kinds: &[TokenKind],
        now_ms: i64,
    ) -> Result<Option<TokenOwner>, StoreError> {
        let row = sqlx::query(
            "SELECT t.kind, t.account_id, t.job_id, t.lease_generation FROM tokens t
             LEFT JOIN accounts a ON a.id = t.account_id
             WHERE t.token_hash = $1 AND t.revoked = 0
               AND (t.expires_ms IS NULL OR t.expires_ms > $2)
               AND (t.account_id IS NULL OR a.disabled_at IS NULL)",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let kind: String = row.try_get("kind")?;
        if !kinds.iter().any(|k| k.as_str() == kind) {
            return Ok(None);
        }
        let account_id: Option<String> = row.try_get("account_id")?;
        let job_id: Option<String> = row.try_get("job_id")?;
        let generation: Option<i64> = row.try_get("lease_generation")?;
        Ok(match (account_id, job_id) {
            (Some(account_id), _) => Some(TokenOwner::Account(account_id)),
            (None, Some(job_id)) => Some(TokenOwner::Worker {
                job_id,
                generation: generation.unwrap_or(0),
            }),
            (None, None) => None,
        })
    }

    /// Presents a refresh token: the first use revokes it and its access token; a use within
    /// `grace_ms` of the first is a retry; any later use revokes the whole family (RFC 9700).
    pub async fn use_refresh_token(
        &self,
        refresh_hash: &str,
        now_ms: i64,
        grace_ms: i64,
    ) -> Result<RefreshUse, StoreError> {
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(
            "UPDATE tokens SET revoked = 1, used_ms = $1
             WHERE token_hash = $2 AND kind = 'refresh' AND revoked = 0 AND used_ms IS NULL
               AND expires_ms > $3
               AND account_id IN (SELECT id FROM accounts WHERE disabled_at IS NULL)
             RETURNING account_id, family, pair_hash",
        )
        .bind(now_ms)
        .bind(refresh_hash)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = first {
            let pair_hash: Option<String> = row.try_get("pair_hash")?;
            if let Some(pair_hash) = pair_hash {
                sqlx::query("UPDATE tokens SET revoked = 1 WHERE token_hash = $1")
                    .bind(pair_hash)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            return Ok(RefreshUse::Fresh {
                account_id: row.try_get("account_id")?,
                family: family_of(&row, refresh_hash)?,
            });
        }
        let Some(row) = sqlx::query(
            "SELECT t.account_id, t.family, t.used_ms, t.expires_ms FROM tokens t
             JOIN accounts a ON a.id = t.account_id
             WHERE t.token_hash = $1 AND t.kind = 'refresh' AND a.disabled_at IS NULL",
        )
        .bind(refresh_hash)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(RefreshUse::Invalid);
        };
        let used_ms: Option<i64> = row.try_get("used_ms")?;
        let expires_ms: Option<i64> = row.try_get("expires_ms")?;
        let account_id: String = row.try_get("account_id")?;
        let family = family_of(&row, refresh_hash)?;
        let Some(used_ms) = used_ms else {
            // Revoked by a sign-out, or expired: never used, so no theft to answer.
            return Ok(RefreshUse::Invalid);
        };
        if now_ms - used_ms <= grace_ms && expires_ms.is_some_and(|e| e > now_ms) {
            return Ok(RefreshUse::Retry { account_id, family });
        }
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE family = $1 OR token_hash = $2")
            .bind(&family)
            .bind(refresh_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RefreshUse::Reused { account_id })
    }

    /// Revokes an access token and the refresh token issued with it.
    pub async fn revoke_session(&self, access_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE token_hash = $1 OR pair_hash = $2")
            .bind(access_hash)
            .bind(access_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The account's personal access tokens, newest first.
    pub async fn personal_tokens(
        &self,
        account_id: &str,
    ) -> Result<Vec<PersonalToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_ms, expires_ms, revoked FROM tokens
             WHERE account_id = $1 AND kind = 'pat' ORDER BY created_ms DESC",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PersonalToken {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    created_ms: row.try_get("created_ms")?,
                    expires_ms: row.try_get("expires_ms")?,
                    revoked: row.try_get::<i64, _>("revoked")? != 0,
                })
            })
            .collect()
    }

    /// Revokes one of the account's personal access tokens; false when it has none of that id.
    pub async fn revoke_personal_token(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tokens SET revoked = 1
             WHERE account_id = $1 AND kind = 'pat' AND id = $2 AND revoked = 0",
        )
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A refresh token's family; tokens from before families existed are a family of their own.
fn family_of(row: &sqlx::any::AnyRow, refresh_hash: &str) -> Result<String, StoreError> {
    let family: Option<String> = row.try_get("family")?;
    Ok(family.unwrap_or_else(|| refresh_hash.to_string()))
}
