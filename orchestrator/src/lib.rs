//! The worker: runs one job as a pipeline of sandboxed WASM steps around the agent, reporting
//! every phase and log line to the API.

pub mod api_client;
pub mod host_git;
pub mod job;
mod junit;
pub mod local;
pub mod logs;
pub mod options;
pub mod outbox;
pub mod place;
pub mod setup;
pub mod snapshot;
pub mod stages;
pub mod step_host;
pub mod verify;
pub mod warm;
pub mod work;
