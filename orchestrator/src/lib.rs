//! The worker: runs one job as a pipeline of sandboxed WASM steps around the agent, reporting
//! every phase and log line to the API.

pub mod api_client;
pub mod host_git;
pub mod job;
pub mod local;
pub mod logs;
pub mod outbox;
pub mod steps;
pub mod work;

/// RFC 3339 UTC timestamp of now, whole seconds, as the API's models use.
pub fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
