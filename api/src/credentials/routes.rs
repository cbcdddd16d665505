//! The caller's git credentials: added once, listed by name, removed. The value goes in and is
//! sealed at once; no route returns it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::on;
use ckrv_wit::protocol::paths;
use ckrv_wit::types::{
    CredentialCreate, CredentialList, CredentialSummary, CredentialType, ErrorKind,
};

use crate::clock;
use crate::credentials::CredentialsState;
use crate::error::{ApiJson, AppError, invalid};
use crate::identity::extract::Session;
use crate::route::{Auth, Content, Method, Route, answering, op, with_body};
use crate::store::NewCredential;

const MAX_NAME: usize = 50;
/// Room for an RSA-4096 private key in PEM with a comment; PATs are far shorter.
const MAX_VALUE_BYTES: usize = 16 * 1024;

pub async fn add(
    State(state): State<CredentialsState>,
    session: Session,
    ApiJson(request): ApiJson<CredentialCreate>,
) -> Result<(StatusCode, ApiJson<CredentialSummary>), AppError> {
    if !valid_name(&request.name) {
        return Err(invalid(format!(
            "credential name {:?} must be 1 to {MAX_NAME} lowercase letters, digits or '-'",
            request.name
        )));
    }
    let value = checked_value(request.credential_type, &request.value)?;
    let username = request
        .username
        .as_deref()
        .map(|u| checked_username(request.credential_type, u))
        .transpose()?;
    let sealed = state
        .secrets
        .seal(
            &crate::credentials::secrets::credential_binding(&session.account_id, &request.name),
            value.as_bytes(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "sealing a credential");
            AppError::new(ErrorKind::Internal, "internal error; see the API's log")
        })?;
    let created_at = clock::rfc3339(clock::now());
    let inserted = state
        .store
        .insert_credential(&NewCredential {
            account_id: &session.account_id,
            name: &request.name,
            provider: request.provider,
            credential_type: request.credential_type,
            username,
            sealed: &sealed,
            created_at: &created_at,
        })
        .await?;
    if !inserted {
        return Err(AppError::new(
            ErrorKind::Conflict,
            format!(
                "credential '{}' already exists; replace it with `ckrv cloud credentials add --name {} --force`",
                request.name, request.name
            ),
        ));
    }
    tracing::info!(account = %session.account_id, name = %request.name, "credential added");
    Ok((
        StatusCode::CREATED,
        ApiJson(CredentialSummary {
            name: request.name,
            provider: request.provider,
            credential_type: request.credential_type,
            created_at,
            last_used_at: None,
        }),
    ))
}

pub async fn list(
    State(state): State<CredentialsState>,
    session: Session,
) -> Result<ApiJson<CredentialList>, AppError> {
    Ok(ApiJson(CredentialList {
        credentials: state.store.credentials(&session.account_id).await?,
    }))
}

pub async fn remove(
    State(state): State<CredentialsState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    // A name no credential can have is not looked up (a NUL would not even reach PostgreSQL).
    if valid_name(&name)
        && state
            .store
            .delete_credential(&session.account_id, &name)
            .await?
    {
        tracing::info!(account = %session.account_id, %name, "credential removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::new(
            ErrorKind::NotFound,
            format!("Credential not found: '{name}'; see yours with `ckrv cloud credentials list`"),
        ))
    }
}

/// A user name for a token: what git sends before the password, so one visible word without
/// the `:` that would end it.
fn checked_username(kind: CredentialType, username: &str) -> Result<&str, AppError> {
    if kind != CredentialType::Pat {
        return Err(invalid(
            "username goes with an access token; a deploy key's user is the repository URL's",
        ));
    }
    let ok = (1..=100).contains(&username.len())
        && username.chars().all(|c| c.is_ascii_graphic() && c != ':');
    if !ok {
        return Err(invalid(
            "username must be 1 to 100 visible ASCII characters without ':'",
        ));
    }
    Ok(username)
}

/// The contract's `^[a-z0-9-]{1,50}$`.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The value as it will be used: a token without the line end a pasted or piped value brings,
/// or a private key in PEM or OpenSSH form.
fn checked_value(kind: CredentialType, value: &str) -> Result<&str, AppError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(invalid(format!(
            "the value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    match kind {
        CredentialType::Pat => {
            let token = value.trim();
            if token.is_empty() {
                return Err(invalid("the value is empty: give the access token"));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "an access token is one word: the value holds spaces or line breaks",
                ));
            }
            Ok(token)
        }
        CredentialType::DeployKey => {
            let key = value.trim();
            if !(key.starts_with("-----BEGIN ") && key.ends_with("PRIVATE KEY-----")) {
                return Err(invalid(
                    "a deploy key is the private key file's contents (-----BEGIN ... PRIVATE KEY-----)",
                ));
            }
            Ok(key)
        }
    }
}

/// Add, list and remove the caller's git credentials.
pub const ROUTES: &[Route<CredentialsState>] = &[
    Route::new(
        answering(
            with_body(
                op(
                    Method::Post,
                    paths::CREDENTIALS,
                    "addCredential",
                    "Store a git credential (encrypted)",
                    Auth::User,
                ),
                Content::Json("CredentialCreate"),
            ),
            &[(201, Content::Json("CredentialSummary"))],
        ),
        |method| on(method, add),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::CREDENTIALS,
                "listCredentials",
                "The account's git credentials, never their values",
                Auth::User,
            ),
            &[(200, Content::Json("CredentialList"))],
        ),
        |method| on(method, list),
    ),
    Route::new(
        op(
            Method::Delete,
            paths::CREDENTIAL,
            "removeCredential",
            "Remove a git credential",
            Auth::User,
        ),
        |method| on(method, remove),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract_pattern() {
        for ok in ["github-work", "a", "0-9", &"x".repeat(50)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "GitHub", "a_b", "a b", "ü", &"x".repeat(51), "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn values_are_trimmed_and_checked_for_their_type() {
        assert_eq!(
            checked_value(CredentialType::Pat, "ghp_abc\n").ok(),
            Some("ghp_abc")
        );
        assert!(checked_value(CredentialType::Pat, "  ").is_err());
        assert!(checked_value(CredentialType::Pat, "two words").is_err());
        let key =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n";
        assert!(checked_value(CredentialType::DeployKey, key).is_ok());
        assert!(checked_value(CredentialType::DeployKey, "ssh-ed25519 AAAA public").is_err());
        assert!(checked_value(CredentialType::Pat, &"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
    }
}
