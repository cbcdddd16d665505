//! The `ckrv-api` command line, one module per command; `main.rs` only parses and dispatches.

pub mod data_dir;
pub mod dispatcher;
pub mod keys;
pub mod serve;
pub mod users;
pub mod webhooks;
pub mod workers;
