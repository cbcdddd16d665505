//! The signed-in user and their quota.

use axum::extract::State;
use ckrv_wit::types::{ErrorKind, Quota, User};

use crate::auth::Session;
use crate::error::{ApiJson, AppError};
use crate::state::AppState;
use crate::{clock, quota};

pub async fn me(
    State(state): State<AppState>,
    session: Session,
) -> Result<ApiJson<User>, AppError> {
    let account = state
        .store
        .account(&session.account_id)
        .await?
        .ok_or_else(|| {
            AppError::new(ErrorKind::NotAuthenticated, "the account no longer exists")
        })?;
    let (start, end) = quota::cycle(clock::now());
    let used = state
        .store
        .jobs_created_since(&account.id, clock::millis(start))
        .await?;
    let limit = quota::monthly_limit(account.tier);
    Ok(ApiJson(User {
        id: account.id,
        email: account.email,
        tier: account.tier,
        quota: Quota {
            limit,
            used,
            remaining: limit.saturating_sub(used),
            cycle_end: clock::rfc3339(end),
        },
    }))
}
