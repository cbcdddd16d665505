//! Accounts: created the first time a person approves a device code with their email.

use ckrv_wit::types::Tier;
use sqlx::Row;

use super::{Store, StoreError, parse_enum};
use crate::clock;

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub tier: Tier,
}

impl Store {
    /// The account for `email`, created on the free tier if there is none.
    pub async fn account_for_email(&self, email: &str) -> Result<Account, StoreError> {
        sqlx::query(
            "INSERT INTO accounts (id, email, tier, created_at) VALUES (?, ?, 'free', ?)
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(email)
        .bind(clock::rfc3339(clock::now()))
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT id, email, tier FROM accounts WHERE email = ?")
            .bind(email)
            .fetch_one(&self.pool)
            .await?;
        account_from_row(&row)
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT id, email, tier FROM accounts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }
}

fn account_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        tier: parse_enum("tier", row.try_get("tier")?)?,
    })
}
