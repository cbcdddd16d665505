//! Identity: who may do what. Accounts and passwords, single sign-on, the device flow and
//! sessions, personal access tokens and worker credentials, the extractors that turn a bearer
//! token into the account, job or worker it speaks for, the rate limits on what an attacker
//! would repeat, and the browser pages where people sign in and approve devices.
//!
//! May call `store` and `jobs::quota` (a user's remaining jobs); never the job engine.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod limits;
pub mod password;
pub mod routes;
pub mod sso;
pub mod web;
