//! What the web pages keep: signed-in browser sessions, one-time setup links, and settings
//! the server records for its admin commands.

use sqlx::Row;

use super::{Store, StoreError};

/// A single sign-on attempt in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoLogin {
    pub state_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to go once signed in.
    pub next: String,
}

/// A live browser session of an enabled account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub account_id: String,
    /// The token every form of this session must carry back.
    pub csrf_token: String,
}

impl Store {
    pub async fn create_web_session(
        &self,
        id_hash: &str,
        account_id: &str,
        csrf_token: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, account_id, csrf_token, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(account_id)
        .bind(csrf_token)
        .bind(created_ms)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn web_session(
        &self,
        id_hash: &str,
        now_ms: i64,
    ) -> Result<Option<WebSession>, StoreError> {
        let row = sqlx::query(
            "SELECT s.account_id, s.csrf_token FROM web_sessions s
             JOIN accounts a ON a.id = s.account_id
             WHERE s.id_hash = $1 AND s.expires_ms > $2 AND a.disabled_at IS NULL",
        )
        .bind(id_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(WebSession {
                account_id: row.try_get("account_id")?,
                csrf_token: row.try_get("csrf_token")?,
            })
        })
        .transpose()
    }

    pub async fn delete_web_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a one-time setup link; `account_id` is `None` for the first administrator.
    pub async fn create_setup_token(
        &self,
        token_hash: &str,
        account_id: Option<&str>,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO setup_tokens (token_hash, account_id, expires_ms) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(account_id)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whom an unused, unexpired setup link is for: `Some(None)` is the first administrator.
    pub async fn setup_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Option<String>>, StoreError> {
        let row = sqlx::query(
            "SELECT account_id FROM setup_tokens WHERE token_hash = $1 AND used = 0 AND expires_ms > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| row.try_get("account_id"))
            .transpose()
            .map_err(Into::into)
    }

    /// Uses a setup link up; false when it was already used or has expired.
    pub async fn use_setup_token(&self, token_hash: &str, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE setup_tokens SET used = 1 WHERE token_hash = $1 AND used = 0 AND expires_ms > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes expired web sessions and setup links.
    pub async fn purge_web(&self, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM web_sessions WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM setup_tokens WHERE expires_ms <= $1 OR used = 1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM sso_logins WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a single sign-on attempt until its answer comes back.
    pub async fn create_sso_login(
        &self,
        login: &SsoLogin,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sso_logins (state_hash, nonce, pkce_verifier, next, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&login.state_hash)
        .bind(&login.nonce)
        .bind(&login.pkce_verifier)
        .bind(&login.next)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The unexpired attempt whose state hashes to `state_hash`, removed as it is read.
    pub async fn take_sso_login(
        &self,
        state_hash: &str,
        now_ms: i64,
    ) -> Result<Option<SsoLogin>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM sso_logins WHERE state_hash = $1
             RETURNING state_hash, nonce, pkce_verifier, next, expires_ms",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let expires_ms: i64 = row.try_get("expires_ms")?;
        if expires_ms <= now_ms {
            return Ok(None);
        }
        Ok(Some(SsoLogin {
            state_hash: row.try_get("state_hash")?,
            nonce: row.try_get("nonce")?,
            pkce_verifier: row.try_get("pkce_verifier")?,
            next: row.try_get("next")?,
        }))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
