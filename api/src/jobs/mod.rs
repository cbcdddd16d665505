//! Jobs: everything from a job's creation to its results. The engine is the only writer of job
//! state; around it sit the wake-ups log followers wait on, the artifact store (diffs and
//! archived logs), log archiving, retention, monthly quotas, what every worker is handed, and
//! the routes users and workers call about jobs.
//!
//! May call `store`, `dispatch` (through the engine), `identity` (request extractors and token
//! primitives), `credentials` (a job's git credential, for its worker) and `ops::metrics`.

pub mod artifacts;
pub mod engine;
pub mod events;
pub mod log_archive;
pub mod quota;
pub mod retention;
pub mod routes;
pub mod worker_setup;
