//! What operators and their load balancers ask: is the process alive (`/healthz`), can it serve
//! (`/readyz`: database and artifact store answer, not stopping), how is it doing
//! (`/metrics`); and the request id every request is logged and answered with.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use ckrv_wit::protocol::paths;
use tracing::Instrument as _;

use crate::ops::OpsState;
use crate::route::{Auth, Content, Method, Route, answering, op};

/// The header a request id travels in, both ways.
pub const REQUEST_ID: &str = "x-request-id";

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Whether the server can serve: its database and artifact store answer and it is not
/// stopping. Each part is `ok` or `unavailable`; the reason goes to the log only.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub database: &'static str,
    pub artifacts: &'static str,
    pub stopping: bool,
}

pub async fn readiness(state: &OpsState) -> Readiness {
    let database = state.store.ping().await.map_err(|e| e.to_string());
    let artifacts = state.artifacts.check().await.map_err(|e| e.to_string());
    let stopping = state.events.is_stopping();
    // Anyone may ask, so the answer names no bucket, host or path: the reason goes to the log.
    let word = |what: &str, check: &Result<(), String>| match check {
        Ok(()) => "ok",
        Err(error) => {
            tracing::warn!(%error, "readiness: the {what} does not answer");
            "unavailable"
        }
    };
    Readiness {
        ready: database.is_ok() && artifacts.is_ok() && !stopping,
        database: word("database", &database),
        artifacts: word("artifact store", &artifacts),
        stopping,
    }
}

pub async fn readyz(State(state): State<OpsState>) -> Response {
    let readiness = readiness(&state).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

pub async fn metrics(State(state): State<OpsState>) -> Response {
    let counts = match state.store.job_counts().await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::error!(error = %e, "reading job counts for /metrics");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response();
        }
    };
    match state.metrics.render(&counts) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

/// Gives every request an id (the caller's `X-Request-Id` when it is a sane one, else a new
/// one), runs it inside a span carrying that id, answers with the id, and counts it.
pub async fn request_context(
    State(state): State<OpsState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let method = request.method().as_str().to_owned();
    let span =
        tracing::info_span!("request", request_id = %id, method, path = %request.uri().path());
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(&method, status, took);
    span.in_scope(|| tracing::debug!(status, took_ms = took.as_millis(), "answered"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

const READY: &str = r#"{"type": "object", "required": ["ready", "database", "artifacts", "stopping"],
  "properties": {"ready": {"type": "boolean"}, "database": {"enum": ["ok", "unavailable"]},
  "artifacts": {"enum": ["ok", "unavailable"]}, "stopping": {"type": "boolean"}}}"#;

/// Liveness, readiness and metrics.
pub const ROUTES: &[Route<OpsState>] = &[
    Route::new(
        answering(
            op(
                Method::Get,
                paths::HEALTH,
                "health",
                "Whether the process lives",
                Auth::None,
            ),
            &[(200, Content::Text("text/plain"))],
        ),
        |method| on(method, healthz),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::READY,
                "readiness",
                "Whether the database and the artifact store answer",
                Auth::None,
            ),
            &[
                (200, Content::JsonSchema(READY)),
                (503, Content::JsonSchema(READY)),
            ],
        ),
        |method| on(method, readyz),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::METRICS,
                "metrics",
                "Prometheus metrics",
                Auth::None,
            ),
            &[
                (200, Content::Text("application/openmetrics-text")),
                (503, Content::Text("text/plain")),
            ],
        ),
        |method| on(method, metrics),
    ),
];
