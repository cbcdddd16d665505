//! Behaviour of the error model: the HTTP status of each kind, and one way to build and read an
//! error body whichever of the contract's two shapes it came in.

use crate::types::{ApiError, ErrorKind};

impl ErrorKind {
    /// The HTTP status the API answers with for this kind of error.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::AuthorizationPending
            | Self::SlowDown
            | Self::ExpiredToken
            | Self::AccessDenied
            | Self::InvalidRequest
            | Self::InvalidGrant
            | Self::UnsupportedGrantType => 400,
            Self::NotAuthenticated => 401,
            Self::QuotaExceeded => 402,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::UnprocessableRequest => 422,
            Self::Gone => 410,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyRequests => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

impl ApiError {
    /// An error in the OAuth 2.0 shape every error of the API has.
    pub fn new(error: ErrorKind, description: impl Into<String>) -> Self {
        Self {
            error,
            error_description: Some(description.into()),
            message: None,
            quota_resets_at: None,
            upgrade_url: None,
        }
    }

    /// What went wrong, for a person: `error_description`, else the contract's quota `message`,
    /// else the code itself.
    pub fn description(&self) -> &str {
        self.error_description
            .as_deref()
            .or(self.message.as_deref())
            .unwrap_or(self.error.as_str())
    }
}
