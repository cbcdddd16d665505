//! API errors: every failure becomes an `ApiError` JSON body with the status of its kind.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ckrv_wit::types::{ApiError, ErrorKind};

/// An error returned by a handler.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {description}")]
pub struct AppError {
    pub kind: ErrorKind,
    pub description: String,
}

impl AppError {
    pub fn new(kind: ErrorKind, description: impl Into<String>) -> Self {
        Self {
            kind,
            description: description.into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ApiError {
            error: self.kind,
            error_description: self.description,
        };
        (status, Json(body)).into_response()
    }
}

/// `Json` extractor whose rejection is a 400 `invalid_request` `ApiError`, never plain text.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

impl From<axum::extract::rejection::JsonRejection> for AppError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        AppError::new(ErrorKind::InvalidRequest, rejection.body_text())
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

impl From<crate::artifacts::ArtifactError> for AppError {
    fn from(error: crate::artifacts::ArtifactError) -> Self {
        tracing::error!(%error, "artifact store failure");
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
