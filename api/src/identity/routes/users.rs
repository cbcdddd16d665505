//! The signed-in user and their quota.

use axum::extract::State;
use ckrv_wit::types::{ErrorKind, User};

use crate::clock;
use crate::error::{ApiJson, AppError};
use crate::identity::auth::Session;
use crate::jobs::quota;
use crate::state::AppState;
use crate::store::Account;

/// The session's account; a session can outlive nothing but its account's deletion.
pub(crate) async fn account_of(state: &AppState, session: &Session) -> Result<Account, AppError> {
    state
        .store
        .account(&session.account_id)
        .await?
        .filter(|account| !account.disabled)
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::NotAuthenticated,
                "the account is disabled or no longer exists",
            )
        })
}

pub async fn me(
    State(state): State<AppState>,
    session: Session,
) -> Result<ApiJson<User>, AppError> {
    let account = account_of(&state, &session).await?;
    let (start, end) = quota::cycle(clock::now());
    let used = state
        .store
        .jobs_created_since(&account.id, clock::millis(start))
        .await?;
    let limit = quota::monthly_limit(account.tier);
    Ok(ApiJson(User {
        id: account.id,
        email: account.email,
        name: account.name,
        subscription_tier: account.tier,
        job_quota_remaining: limit.saturating_sub(used),
        billing_cycle_end: clock::rfc3339(end),
        job_quota_limit: Some(limit),
    }))
}
