//! Identity: who may do what. Accounts and passwords, single sign-on, the device flow and
//! sessions, personal access tokens and worker credentials, the extractors that turn a bearer
//! token into the account, job or worker it speaks for, the rate limits on what an attacker
//! would repeat, and the browser pages where people sign in and approve devices.
//!
//! May call `store` only: never the job engine, artifacts or sealed credentials.

pub mod accounts;
pub mod admin;
pub mod extract;
pub mod limits;
pub mod password;
pub mod quota;
pub mod routes;
pub mod sso;
pub mod tokens;
pub mod web;

use std::sync::Arc;

use axum::extract::FromRef;
use axum_extra::extract::cookie::Key;

use crate::store::Store;

/// What identity's routes and pages are handed: no job engine, no artifacts, no sealed secrets.
#[derive(Clone, FromRef)]
pub struct IdentityState {
    pub store: Store,
    /// Rate limits on device authorizations, user codes and sign-ins.
    pub limits: Arc<limits::Limits>,
    /// Signs the web pages' cookies; derived from the secrets key.
    pub cookie_key: Key,
    /// Base URL for links shown to people, without a trailing slash.
    pub public_url: String,
    /// The team's OpenID provider, when single sign-on is set up.
    pub sso: Option<Arc<sso::Sso>>,
}
