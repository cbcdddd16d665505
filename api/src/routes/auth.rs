//! The RFC 8628 device flow and session management.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use ckrv_wit::types::{DeviceAuthorization, ErrorKind, TokenSet};
use serde::Deserialize;

use crate::auth::{self, Session, duration_ms};
use crate::clock;
use crate::error::{ApiJson, AppError, invalid};
use crate::state::AppState;
use crate::store::DevicePoll;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a person has to approve a code.
const DEVICE_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How often a client may poll. Short, because approval happens on the same machine in the
/// embedded default; polls at less than half of it get `slow_down`.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn device(
    State(state): State<AppState>,
) -> Result<ApiJson<DeviceAuthorization>, AppError> {
    let device_code = auth::new_secret("ckrv_dc");
    let expires = clock::millis(clock::now()) + duration_ms(DEVICE_CODE_TTL);
    // A user-code collision with a live code is astronomically rare; retry rather than fail.
    let mut attempts = 0;
    let user_code = loop {
        let user_code = auth::new_user_code();
        match state
            .store
            .create_device_code(&auth::hash_secret(&device_code), &user_code, expires)
            .await
        {
            Ok(()) => break user_code,
            Err(e) if attempts >= 3 => return Err(e.into()),
            Err(_) => attempts += 1,
        }
    };
    let verification_uri = format!("{}/activate", state.public_url);
    Ok(ApiJson(DeviceAuthorization {
        device_code,
        verification_uri_complete: format!("{verification_uri}?user_code={user_code}"),
        verification_uri,
        user_code,
        expires_in: u32::try_from(DEVICE_CODE_TTL.as_secs()).unwrap_or(u32::MAX),
        interval: u32::try_from(POLL_INTERVAL.as_secs()).unwrap_or(1),
    }))
}

#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: String,
    device_code: String,
}

pub async fn token(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<ApiJson<TokenSet>, AppError> {
    if request.grant_type != DEVICE_GRANT {
        return Err(invalid(format!("grant_type must be {DEVICE_GRANT}")));
    }
    let poll = state
        .store
        .poll_device_code(
            &auth::hash_secret(&request.device_code),
            clock::millis(clock::now()),
            duration_ms(POLL_INTERVAL) / 2,
        )
        .await?;
    match poll {
        DevicePoll::Approved { account_id } => Ok(ApiJson(
            auth::issue_session(&state.store, &account_id).await?,
        )),
        DevicePoll::Pending => Err(AppError::new(
            ErrorKind::AuthorizationPending,
            "the code has not been approved yet",
        )),
        DevicePoll::SlowDown => Err(AppError::new(
            ErrorKind::SlowDown,
            "polling too fast; wait longer between polls",
        )),
        DevicePoll::Expired => Err(AppError::new(
            ErrorKind::ExpiredToken,
            "the device code expired; start the login again",
        )),
        DevicePoll::Unknown => Err(AppError::new(
            ErrorKind::InvalidGrant,
            "unknown or already used device code",
        )),
    }
}

#[derive(Deserialize)]
pub struct RefreshRequest {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<ApiJson<TokenSet>, AppError> {
    let account_id = state
        .store
        .take_refresh_token(
            &auth::hash_secret(&request.refresh_token),
            clock::millis(clock::now()),
        )
        .await?
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::InvalidGrant,
                "the refresh token is invalid, expired or already used; log in again",
            )
        })?;
    Ok(ApiJson(
        auth::issue_session(&state.store, &account_id).await?,
    ))
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<StatusCode, AppError> {
    state.store.revoke_session(&session.access_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
