//! Jobs: everything from a job's creation to its results. The engine is the only writer of job
//! state; around it sit the wake-ups log followers wait on, the artifact store (diffs and
//! archived logs), log archiving, retention, and the routes users and workers call about jobs.
//!
//! May call `store`, `dispatch` (through the engine), `identity` (request extractors and token
//! primitives), `credentials` (a job's git credential, for its worker) and `metrics`.

pub mod artifacts;
pub mod engine;
pub mod events;
pub mod log_archive;
pub mod retention;
pub mod routes;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::credentials::secrets::KeyRing;
use crate::dispatch::worker_setup::WorkerSetup;
use crate::metrics::Metrics;
use crate::store::Store;

/// What the job routes are handed.
#[derive(Clone, FromRef)]
pub struct JobsState {
    pub store: Store,
    pub artifacts: artifacts::ArtifactStore,
    /// Every change of a job's state goes through it.
    pub engine: engine::JobEngine,
    pub events: events::JobEvents,
    /// The pipeline, agents and agent secrets handed to workers.
    pub workers: Arc<WorkerSetup>,
    /// The operator's budgets: a job may not ask for more than its tier's.
    pub model_budgets: Arc<crate::identity::quota::ModelBudgets>,
    /// Opens a job's git credential for its worker.
    pub secrets: Arc<KeyRing>,
    pub metrics: Arc<Metrics>,
    /// Jobs may name local and loopback repositories (development only).
    pub allow_local_repos: bool,
    /// Where a job's result goes when neither the request nor the spec says.
    pub default_publish: ckrv_wit::types::PublishMode,
    /// Where a person whose quota is used up can upgrade, when the operator has such a page.
    pub billing_url: Option<String>,
}
