//! What an administrator does to accounts over HTTP: the actions of `ckrv-api users disable`,
//! `enable` and `revoke-token`, through the same functions (`identity::admin`), for the
//! console's operators' page and any tool that holds an administrator's token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ckrv_wit::types::ErrorKind;

use crate::error::AppError;
use crate::identity::IdentityState;
use crate::identity::accounts::IdentityError;
use crate::identity::admin::{self, AdminError};
use crate::identity::extract::Session;

pub async fn disable(
    State(state): State<IdentityState>,
    session: Session,
    Path(email): Path<String>,
) -> Result<StatusCode, AppError> {
    let me = administrator(&state, &session).await?;
    if email.trim().eq_ignore_ascii_case(&me) {
        return Err(AppError::new(
            ErrorKind::Conflict,
            "an administrator cannot disable their own account here; another administrator \
             can, or `ckrv-api users disable` on the server",
        ));
    }
    admin::set_disabled(&state.store, &email, true)
        .await
        .map_err(refused)?;
    tracing::info!(by = %session.account_id, %email, "account disabled");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enable(
    State(state): State<IdentityState>,
    session: Session,
    Path(email): Path<String>,
) -> Result<StatusCode, AppError> {
    administrator(&state, &session).await?;
    admin::set_disabled(&state.store, &email, false)
        .await
        .map_err(refused)?;
    tracing::info!(by = %session.account_id, %email, "account enabled");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke_token(
    State(state): State<IdentityState>,
    session: Session,
    Path((email, id)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    administrator(&state, &session).await?;
    admin::revoke_token(&state.store, &email, &id)
        .await
        .map_err(refused)?;
    tracing::info!(by = %session.account_id, %email, token = %id, "personal access token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's email, when they are an administrator.
async fn administrator(state: &IdentityState, session: &Session) -> Result<String, AppError> {
    let account = session.account(&state.store).await?;
    if account.is_admin {
        Ok(account.email)
    } else {
        Err(AppError::new(
            ErrorKind::Forbidden,
            "only administrators may do this; an administrator can make you one with \
             `ckrv-api users add EMAIL --admin`",
        ))
    }
}

/// An administrator's action refused: an unknown account or token is 404, a malformed email 400.
fn refused(error: AdminError) -> AppError {
    let kind = match error {
        AdminError::Store(store) | AdminError::Identity(IdentityError::Store(store)) => {
            return store.into();
        }
        AdminError::Identity(IdentityError::NoSuchAccount(_)) | AdminError::NoSuchToken { .. } => {
            ErrorKind::NotFound
        }
        _ => ErrorKind::InvalidRequest,
    };
    AppError::new(kind, error.to_string())
}
