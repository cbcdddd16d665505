//! Operations: what operators and their tooling ask of a running server. Liveness and
//! readiness, Prometheus metrics, the OpenAPI document, and the request id every request is
//! logged and answered with.
//!
//! May call `store`, `metrics`, `jobs::artifacts` and `jobs::events` (readiness); only the
//! router calls it.

pub mod health;
pub mod openapi;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::jobs::artifacts::ArtifactStore;
use crate::jobs::events::JobEvents;
use crate::store::Store;

/// What readiness, metrics and the request context are handed.
#[derive(Clone, FromRef)]
pub struct OpsState {
    pub store: Store,
    pub artifacts: ArtifactStore,
    pub events: JobEvents,
    pub metrics: Arc<crate::metrics::Metrics>,
}
