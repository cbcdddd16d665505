//! API errors: every failure becomes an `ApiError` JSON body with the status of its kind.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ckrv_wit::types::{ApiError, ErrorKind};

/// An error returned by a handler: the body it answers with.
/// What a refused request must wait, for a `Retry-After` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub std::time::Duration);

impl RetryAfter {
    /// Whole seconds, at least one.
    pub fn seconds(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {}", .body.error, .body.description())]
pub struct AppError {
    pub body: ApiError,
    /// For a 429: how long to wait, as `Retry-After` says it.
    pub retry_after: Option<RetryAfter>,
}

impl AppError {
    pub fn new(kind: ErrorKind, description: impl Into<String>) -> Self {
        Self {
            body: ApiError::new(kind, description),
            retry_after: None,
        }
    }

    /// The contract's `QuotaExceededError`: its `message` is the description, and it says when
    /// the quota resets and, when the operator has one, where to upgrade.
    pub fn quota_exceeded(
        description: impl Into<String>,
        resets_at: String,
        upgrade_url: Option<String>,
    ) -> Self {
        let description = description.into();
        Self {
            body: ApiError {
                error: ErrorKind::QuotaExceeded,
                message: Some(description.clone()),
                error_description: Some(description),
                quota_resets_at: Some(resets_at),
                upgrade_url,
            },
            retry_after: None,
        }
    }

    /// A 429 for `what`, with how long to wait.
    pub fn too_many(what: &str, wait: RetryAfter) -> Self {
        Self {
            body: ApiError::new(
                ErrorKind::TooManyRequests,
                format!("too many {what}; try again in {} s", wait.seconds()),
            ),
            retry_after: Some(wait),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.body.error
    }

    /// The HTTP status the error is answered with.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.body.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The same error with `prefix` before its description: which part of a request it is
    /// about.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        let description = format!("{prefix}{}", self.description());
        if self.body.message.is_some() {
            self.body.message = Some(description.clone());
        }
        self.body.error_description = Some(description);
        self
    }

    pub fn description(&self) -> &str {
        self.body.description()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let kind = self.body.error;
        let status = self.status();
        let mut response = (status, Json(self.body)).into_response();
        if kind == ErrorKind::NotAuthenticated {
            // RFC 6750 §3: a 401 names the scheme the client should use.
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ckrv\""),
            );
        }
        if let Some(wait) = self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(wait.seconds()));
        }
        response
    }
}

/// `Json` extractor whose rejection is a 400 `invalid_request` `ApiError`, never plain text.
/// A NUL character in a field the API keeps is refused too: PostgreSQL text cannot hold one,
/// and both databases must answer alike. (Fields the API ignores may hold anything.)
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        let (parts, body) = request.into_parts();
        let head = axum::extract::Request::from_parts(parts.clone(), body);
        let bytes = axum::body::Bytes::from_request(head, state)
            .await
            .map_err(|rejection| {
                AppError::new(rejection_kind(rejection.status()), rejection.body_text())
            })?;
        let spelled_nul = escapes_nul(&bytes);
        let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        let Json(value) = Json::<T>::from_request(request, state).await?;
        // Only a body that spelled a NUL somewhere is written out again to see where it went.
        if spelled_nul && serde_json::to_vec(&value).is_ok_and(|json| escapes_nul(&json)) {
            return Err(invalid(
                "a NUL character (\\u0000) is not accepted in any field",
            ));
        }
        Ok(Self(value))
    }
}

/// Whether JSON text holds the escape `\u0000` (JSON cannot carry a raw NUL in a string).
fn escapes_nul(json: &[u8]) -> bool {
    let mut bytes = json.iter().enumerate();
    while let Some((at, &byte)) = bytes.next() {
        if byte == b'\\' {
            if json.get(at + 1..at + 6) == Some(b"u0000".as_slice()) {
                return true;
            }
            // Skip the escaped character: `\\u0000` is a backslash and text.
            bytes.next();
        }
    }
    false
}

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        AppError::new(rejection_kind(rejection.status()), rejection.body_text())
    }
}

/// The error kind for a body axum refused, by the status it would have answered.
fn rejection_kind(status: StatusCode) -> ErrorKind {
    match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorKind::UnsupportedMediaType,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::PayloadTooLarge,
        _ => ErrorKind::InvalidRequest,
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(error: crate::store::StoreError) -> Self {
        tracing::error!(%error, "store failure");
        AppError::new(ErrorKind::Internal, "internal error; see the API's log")
    }
}

/// `Query` extractor whose rejection is a 400 `invalid_request` `ApiError`.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct ApiQuery<T>(pub T);

impl From<axum::extract::rejection::QueryRejection> for AppError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        AppError::new(ErrorKind::InvalidRequest, rejection.body_text())
    }
}

/// Shorthand for the common 400.
pub fn invalid(description: impl Into<String>) -> AppError {
    AppError::new(ErrorKind::InvalidRequest, description)
}

#[cfg(test)]
mod tests {
    use super::escapes_nul;

    #[test]
    fn a_nul_escape_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(escapes_nul(br#"{"spec_content": "a\u0000b"}"#));
        assert!(escapes_nul(br#"["\\\u0000"]"#));
        assert!(!escapes_nul(
            br#"{"spec_content": "writes \\u0000 in a doc"}"#
        ));
        assert!(!escapes_nul(br#"{"a": "\u00e9\n"}"#));
    }
}
