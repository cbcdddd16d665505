//! Accounts: created by an administrator (or for a person an OpenID provider vouched for),
//! signed in with a password, disabled rather than deleted.

use ckrv_wit::types::SubscriptionTier;
use sqlx::Row;

use super::{Store, StoreError, parse_enum};
use crate::clock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub email: String,
    /// How the account is addressed; the email's local part unless someone named it.
    pub name: String,
    pub tier: SubscriptionTier,
    pub is_admin: bool,
    pub disabled: bool,
    /// Whether a password is set (sign-in needs one, or single sign-on).
    pub has_password: bool,
}

/// An account about to be created.
#[derive(Debug)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub tier: SubscriptionTier,
    pub is_admin: bool,
    pub password_hash: Option<&'a str>,
}

const COLUMNS: &str = "id, email, name, tier, is_admin, disabled_at, CASE WHEN password_hash IS NULL THEN 0 ELSE 1 END AS has_password";

impl Store {
    /// Creates the account; `None` when the email already has one.
    pub async fn create_account(
        &self,
        new: &NewAccount<'_>,
    ) -> Result<Option<Account>, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = clock::now();
        let done = sqlx::query(
            "INSERT INTO accounts (id, email, name, tier, is_admin, password_hash, created_at,
                                   created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(&id)
        .bind(new.email)
        .bind(new.name)
        .bind(new.tier.as_str())
        .bind(i64::from(new.is_admin))
        .bind(new.password_hash)
        .bind(clock::rfc3339(now))
        .bind(clock::millis(now))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.account(&id).await
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// The account for a normalized (lowercase) email.
    pub async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE email = $1"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// Every account, oldest first.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM accounts ORDER BY created_ms, email"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account_from_row).collect()
    }

    /// The stored password hash of an enabled account.
    pub async fn password_hash(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        let hash: Option<Option<String>> = sqlx::query_scalar(
            "SELECT password_hash FROM accounts WHERE id = $1 AND disabled_at IS NULL",
        )
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(hash.flatten())
    }

    pub async fn set_password_hash(&self, account_id: &str, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// False when there is no such account.
    pub async fn set_tier(
        &self,
        account_id: &str,
        tier: SubscriptionTier,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE accounts SET tier = $1 WHERE id = $2")
            .bind(tier.as_str())
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables or enables the account. Disabling also revokes every token it holds (access,
    /// refresh and personal access tokens), ends its web sessions and refuses the device
    /// requests approved for it but not yet redeemed, all at once: enabling it again brings
    /// none of them back, so it signs in anew.
    pub async fn set_disabled(&self, account_id: &str, disabled: bool) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE accounts SET disabled_at = CASE WHEN $1 = 1 THEN COALESCE(disabled_at, $2) END
             WHERE id = $3",
        )
        .bind(i64::from(disabled))
        .bind(clock::rfc3339(clock::now()))
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if disabled {
            sqlx::query("DELETE FROM web_sessions WHERE account_id = $1")
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE tokens SET revoked = 1 WHERE account_id = $1 AND revoked = 0")
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE device_codes SET denied = 1 WHERE account_id = $1 AND consumed = 0",
            )
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether any enabled administrator exists.
    pub async fn has_admin(&self) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM accounts WHERE is_admin = 1 AND disabled_at IS NULL LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}

fn account_from_row(row: &sqlx::any::AnyRow) -> Result<Account, StoreError> {
    let disabled_at: Option<String> = row.try_get("disabled_at")?;
    Ok(Account {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        tier: parse_enum("tier", row.try_get("tier")?)?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        disabled: disabled_at.is_some(),
        has_password: row.try_get::<i64, _>("has_password")? != 0,
    })
}
