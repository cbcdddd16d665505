//! Credentials: users' git credentials, sealed at rest under the server's keys and opened only
//! for the worker of a job that names one. No route returns a value.
//!
//! May call `store` and `identity` (the signed-in account).

pub mod routes;
pub mod secrets;
