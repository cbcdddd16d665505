//! Attempt groups (docs/attempts.md): an account's several attempts at one spec. Each attempt
//! is an ordinary job that names its group; the group keeps only what is the group's own.

use sqlx::Row;

use super::jobs::{COLUMNS, FULL_ID_LEN, job_from_row};
use super::{JobRow, Store, StoreError};

/// A group as stored.
#[derive(Debug, Clone)]
pub struct GroupRow {
    pub id: String,
    pub account_id: String,
    pub created_at: String,
    /// Cancel the other attempts once one is verified.
    pub stop_at_first_verified: bool,
}

/// What a group id (or prefix) names among the account's groups.
#[derive(Debug)]
pub enum GroupLookup {
    Found(GroupRow),
    NotFound,
    Ambiguous,
}

impl Store {
    pub async fn insert_group(&self, group: &GroupRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_groups (id, account_id, created_at, stop_at_first_verified)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&group.id)
        .bind(&group.account_id)
        .bind(&group.created_at)
        .bind(i32::from(group.stop_at_first_verified))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One of the account's groups by id or unique id prefix (id characters only: the caller
    /// checks, so it cannot carry LIKE wildcards).
    pub async fn find_group(
        &self,
        account_id: &str,
        prefix: &str,
    ) -> Result<GroupLookup, StoreError> {
        let lookup = if prefix.len() == FULL_ID_LEN {
            "SELECT id, account_id, created_at, stop_at_first_verified FROM job_groups
             WHERE id = $2 AND account_id = $1"
        } else {
            "SELECT id, account_id, created_at, stop_at_first_verified FROM job_groups
             WHERE account_id = $1 AND id LIKE $2 || '%' LIMIT 2"
        };
        let rows = sqlx::query(lookup)
            .bind(account_id)
            .bind(prefix)
            .fetch_all(&self.pool)
            .await?;
        Ok(match rows.as_slice() {
            [] => GroupLookup::NotFound,
            [row] => GroupLookup::Found(group_from_row(row)?),
            _ => GroupLookup::Ambiguous,
        })
    }

    /// A group by its full id, whoever owns it.
    pub async fn group(&self, id: &str) -> Result<Option<GroupRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, created_at, stop_at_first_verified FROM job_groups WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(group_from_row).transpose()
    }

    /// A group's attempts, in attempt order.
    pub async fn group_jobs(&self, group_id: &str) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE group_id = $1 ORDER BY attempt"
        ))
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }
}

fn group_from_row(row: &sqlx::any::AnyRow) -> Result<GroupRow, StoreError> {
    Ok(GroupRow {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        created_at: row.try_get("created_at")?,
        stop_at_first_verified: row.try_get::<i32, _>("stop_at_first_verified")? != 0,
    })
}
