//! Behaviour that belongs to the shared models themselves.

use crate::types::{ErrorKind, JobStatus};

impl JobStatus {
    /// A terminal job never changes again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Timeout | Self::Cancelled
        )
    }
}

impl ErrorKind {
    /// The HTTP status the API answers with for this kind of error.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::AuthorizationPending
            | Self::SlowDown
            | Self::ExpiredToken
            | Self::AccessDenied
            | Self::InvalidRequest
            | Self::InvalidGrant => 400,
            Self::NotAuthenticated => 401,
            Self::QuotaExceeded => 402,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}
