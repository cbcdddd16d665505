//! The `ckrv-api` command line, one module per command; `main.rs` only parses and dispatches.
//!
//! May call the whole library: it is the edge that builds the server and runs the operators'
//! commands; nothing in the library calls it.

pub mod data_dir;
pub mod dispatcher;
pub mod keys;
pub mod serve;
pub mod users;
pub mod webhooks;
pub mod workers;
