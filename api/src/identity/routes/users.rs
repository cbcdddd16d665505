//! The signed-in user and their quota.

use axum::extract::State;
use ckrv_wit::types::User;

use crate::clock;
use crate::error::{ApiJson, AppError};
use crate::identity::IdentityState;
use crate::identity::extract::Session;
use crate::identity::quota;

pub async fn me(
    State(state): State<IdentityState>,
    session: Session,
) -> Result<ApiJson<User>, AppError> {
    let account = session.account(&state.store).await?;
    let (start, end) = quota::cycle(clock::now());
    let used = state
        .store
        .jobs_created_since(&account.id, clock::millis(start))
        .await?;
    let limit = quota::monthly_limit(account.tier);
    let spent = state
        .store
        .model_cost_since(&account.id, clock::millis(start))
        .await?;
    Ok(ApiJson(User {
        id: account.id,
        email: account.email,
        name: account.name,
        subscription_tier: account.tier,
        job_quota_remaining: limit.saturating_sub(used),
        billing_cycle_end: clock::rfc3339(end),
        job_quota_limit: Some(limit),
        model_cost_usd: Some(quota::micros_to_dollars(spent)),
    }))
}
