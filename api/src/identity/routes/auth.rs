//! The RFC 8628 device flow and session management.

use std::time::Duration;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use ckrv_wit::protocol::{DEVICE_CODE_GRANT, REFRESH_TOKEN_GRANT};
use ckrv_wit::types::{
    DeviceCodeRequest, DeviceCodeResponse, DeviceTokenRequest, ErrorKind, RefreshRequest,
    TokenResponse,
};

use crate::clock;
use crate::error::{ApiJson, AppError, invalid};
use crate::identity::IdentityState;
use crate::identity::extract::{Session, Via};
use crate::identity::tokens::{self, duration_ms};
use crate::store::{DevicePoll, NewDeviceCode, RefreshUse};

/// How long a person has to approve a code.
const DEVICE_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How often a client may poll. Short, because approval happens on the same machine in the
/// embedded default; polls at less than half of it get `slow_down`.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Client ids name a client; they are not documents.
const MAX_CLIENT_ID_BYTES: usize = 255;
/// A refresh token presented again this soon after its first use is the client retrying a
/// request whose answer it lost, not a replay (RFC 9700 §4.14.2 allows such a grace).
const REFRESH_RETRY_GRACE: Duration = Duration::from_secs(20);

pub async fn device(
    State(state): State<IdentityState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(request): ApiJson<DeviceCodeRequest>,
) -> Result<ApiJson<DeviceCodeResponse>, AppError> {
    if request.client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(invalid(format!(
            "client_id is {} bytes; the limit is {MAX_CLIENT_ID_BYTES}",
            request.client_id.len()
        )));
    }
    if let Err(wait) = state.limits.device_authorization(peer.ip()) {
        return Err(AppError::too_many(
            "device authorizations from this address",
            wait,
        ));
    }
    let device_code = tokens::new_secret("ckrv_dc");
    let device_code_hash = tokens::hash_secret(&device_code);
    let now = clock::millis(clock::now());
    let requested_from = peer.ip().to_string();
    // A user-code collision with a live code is astronomically rare; retry rather than fail.
    let mut attempts = 0;
    let user_code = loop {
        let user_code = tokens::new_user_code();
        let new = NewDeviceCode {
            device_code_hash: &device_code_hash,
            user_code: &user_code,
            client_id: &request.client_id,
            requested_from: &requested_from,
            created_ms: now,
            expires_ms: now + duration_ms(DEVICE_CODE_TTL),
        };
        match state.store.create_device_code(&new).await {
            Ok(()) => break user_code,
            Err(e) if attempts >= 3 => return Err(e.into()),
            Err(_) => attempts += 1,
        }
    };
    let verification_uri = format!("{}/activate", state.public_url);
    Ok(ApiJson(DeviceCodeResponse {
        device_code,
        verification_uri_complete: Some(format!("{verification_uri}?user_code={user_code}")),
        verification_uri,
        user_code,
        expires_in: u32::try_from(DEVICE_CODE_TTL.as_secs()).unwrap_or(u32::MAX),
        interval: u32::try_from(POLL_INTERVAL.as_secs()).unwrap_or(1),
    }))
}

pub async fn token(
    State(state): State<IdentityState>,
    ApiJson(request): ApiJson<DeviceTokenRequest>,
) -> Result<ApiJson<TokenResponse>, AppError> {
    grant_type(&request.grant_type, DEVICE_CODE_GRANT)?;
    let poll = state
        .store
        .poll_device_code(
            &tokens::hash_secret(&request.device_code),
            &request.client_id,
            clock::millis(clock::now()),
            duration_ms(POLL_INTERVAL) / 2,
        )
        .await?;
    match poll {
        DevicePoll::Approved { account_id } => Ok(ApiJson(
            tokens::issue_session(&state.store, &account_id, None).await?,
        )),
        DevicePoll::Denied => Err(AppError::new(
            ErrorKind::AccessDenied,
            "the sign-in request was denied",
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
        // RFC 6749 would say `invalid_grant`; the contract's token errors are RFC 8628's four,
        // and for a client the remedy is the same: the session is over, start again.
        DevicePoll::Unknown => Err(AppError::new(
            ErrorKind::ExpiredToken,
            "the device code is unknown, already used, or was issued to another client; start the login again",
        )),
    }
}

pub async fn refresh(
    State(state): State<IdentityState>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> Result<ApiJson<TokenResponse>, AppError> {
    grant_type(&request.grant_type, REFRESH_TOKEN_GRANT)?;
    let presented = state
        .store
        .use_refresh_token(
            &tokens::hash_secret(&request.refresh_token),
            clock::millis(clock::now()),
            duration_ms(REFRESH_RETRY_GRACE),
        )
        .await?;
    let (account_id, family) = match presented {
        RefreshUse::Fresh { account_id, family } | RefreshUse::Retry { account_id, family } => {
            (account_id, family)
        }
        RefreshUse::Reused { account_id } => {
            tracing::warn!(account = %account_id, "a used refresh token was presented again; its session family is revoked");
            return Err(invalid_grant());
        }
        RefreshUse::Invalid => return Err(invalid_grant()),
    };
    Ok(ApiJson(
        tokens::issue_session(&state.store, &account_id, Some(&family)).await?,
    ))
}

fn invalid_grant() -> AppError {
    AppError::new(
        ErrorKind::InvalidGrant,
        "the refresh token is invalid, expired or already used; log in again",
    )
}

/// RFC 6749 §5.2: a token request names the one grant the endpoint serves.
fn grant_type(given: &str, expected: &str) -> Result<(), AppError> {
    if given == expected {
        Ok(())
    } else {
        Err(AppError::new(
            ErrorKind::UnsupportedGrantType,
            format!("grant_type must be {expected}"),
        ))
    }
}

pub async fn logout(
    State(state): State<IdentityState>,
    session: Session,
) -> Result<StatusCode, AppError> {
    match &session.via {
        Via::Token(access_hash) => state.store.revoke_session(access_hash).await?,
        Via::Browser(session_hash) => state.store.delete_web_session(session_hash).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}
