//! Credentials: users' git credentials, sealed at rest under the server's keys and opened only
//! for the worker of a job that names one. No route returns a value.
//!
//! May call `store` and `identity` (the signed-in account).

pub mod keys;
pub mod routes;
pub mod secrets;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::store::Store;

/// What the credential routes are handed.
#[derive(Clone, FromRef)]
pub struct CredentialsState {
    pub store: Store,
    /// Keys that seal git credentials at rest.
    pub secrets: Arc<secrets::KeyRing>,
}
