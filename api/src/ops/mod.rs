//! Operations: what operators and their tooling ask of a running server. Liveness and
//! readiness, Prometheus metrics, the OpenAPI document, and the request id every request is
//! logged and answered with.
//!
//! May call `store`, `jobs::artifacts` and `jobs::events` (readiness); nothing calls it but the
//! router and the metrics it is handed.

pub mod health;
pub mod metrics;
pub mod openapi;
