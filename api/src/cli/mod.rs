//! The `ckrv-api` command line, beside `main.rs`: one module per part that grew its own.

pub mod dispatcher;
