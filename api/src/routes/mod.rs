//! The HTTP surface, one module per resource (see docs/protocol.md).

mod artifacts;
mod auth;
mod credentials;
pub(crate) mod jobs;
mod logs;
mod ops;
mod users;
mod worker;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use ckrv_wit::types::ErrorKind;

use crate::error::AppError;
use crate::state::AppState;

/// The largest diff a worker may upload.
const MAX_DIFF_BYTES: usize = 64 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/auth/device", post(auth::device))
        .route("/v1/auth/token", post(auth::token))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/users/me", get(users::me))
        .route(
            "/v1/credentials",
            post(credentials::add).get(credentials::list),
        )
        .route("/v1/credentials/{name}", delete(credentials::remove))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/logs", get(logs::read))
        .route("/v1/jobs/{id}/artifacts/diff", get(artifacts::diff))
        .route("/v1/worker/claim", post(worker::claim))
        .route("/v1/worker/jobs/{id}", get(worker::job))
        .route("/v1/worker/jobs/{id}/heartbeat", post(worker::heartbeat))
        .route("/v1/worker/jobs/{id}/phase", post(worker::phase))
        .route("/v1/worker/jobs/{id}/logs", post(worker::logs))
        .route(
            "/v1/worker/jobs/{id}/artifacts/diff",
            put(worker::diff).layer(DefaultBodyLimit::max(MAX_DIFF_BYTES)),
        )
        .route("/v1/worker/jobs/{id}/result", post(worker::result))
        .route("/v1/worker/jobs/{id}/complete", post(worker::complete))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(crate::web::router())
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::request_context,
        ))
        .with_state(state)
}

/// axum adds the `Allow` header naming the methods the path has.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::new(
        ErrorKind::MethodNotAllowed,
        format!("{} does not take {method}", uri.path()),
    )
}

/// 410 for a job whose diff and log were removed under the retention rule.
fn expired(job_id: &str, when: &str) -> AppError {
    AppError::new(
        ErrorKind::Gone,
        format!(
            "job {job_id}'s diff and log expired at {when} under this server's retention; the \
             job itself is still listed"
        ),
    )
}

async fn unknown_route(uri: axum::http::Uri) -> AppError {
    AppError::new(
        ErrorKind::NotFound,
        format!("no such endpoint: {}", uri.path()),
    )
}
