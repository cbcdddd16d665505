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
use axum::routing::{MethodRouter, delete, get, post, put};
use ckrv_wit::protocol::paths;
use ckrv_wit::types::ErrorKind;

use crate::error::AppError;
use crate::state::AppState;

/// The largest diff a worker may upload.
const MAX_DIFF_BYTES: usize = 64 * 1024 * 1024;

/// Every API route: method, path, handler. `crate::openapi::OPERATIONS` describes each one
/// (a test checks the two lists match, so a route cannot go undocumented).
fn api_routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("post", paths::AUTH_DEVICE, post(auth::device)),
        ("post", paths::AUTH_TOKEN, post(auth::token)),
        ("post", paths::AUTH_REFRESH, post(auth::refresh)),
        ("post", paths::AUTH_LOGOUT, post(auth::logout)),
        ("get", paths::USER, get(users::me)),
        ("post", paths::CREDENTIALS, post(credentials::add)),
        ("get", paths::CREDENTIALS, get(credentials::list)),
        ("delete", paths::CREDENTIAL, delete(credentials::remove)),
        ("post", paths::JOBS, post(jobs::create)),
        ("get", paths::JOBS, get(jobs::list)),
        ("get", paths::JOB, get(jobs::get)),
        ("post", paths::JOB_CANCEL, post(jobs::cancel)),
        ("get", paths::JOB_LOGS, get(logs::read)),
        ("get", paths::JOB_DIFF, get(artifacts::diff)),
        ("post", "/v1/worker/claim", post(worker::claim)),
        ("get", "/v1/worker/jobs/{id}", get(worker::job)),
        (
            "get",
            "/v1/worker/jobs/{id}/components/{digest}",
            get(worker::component),
        ),
        (
            "post",
            "/v1/worker/jobs/{id}/heartbeat",
            post(worker::heartbeat),
        ),
        ("post", "/v1/worker/jobs/{id}/phase", post(worker::phase)),
        ("post", "/v1/worker/jobs/{id}/logs", post(worker::logs)),
        (
            "put",
            "/v1/worker/jobs/{id}/artifacts/diff",
            put(worker::diff).layer(DefaultBodyLimit::max(MAX_DIFF_BYTES)),
        ),
        ("post", "/v1/worker/jobs/{id}/result", post(worker::result)),
        (
            "post",
            "/v1/worker/jobs/{id}/complete",
            post(worker::complete),
        ),
        ("get", "/healthz", get(ops::healthz)),
        ("get", "/readyz", get(ops::readyz)),
        ("get", "/metrics", get(ops::metrics)),
        ("get", "/v1/openapi.json", get(ops::openapi)),
    ]
}

pub fn router(state: AppState) -> Router {
    api_routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_describes_every_route_and_nothing_else() {
        let mut routed: Vec<(&str, &str)> = super::api_routes()
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let mut documented: Vec<(&str, &str)> = crate::openapi::OPERATIONS
            .iter()
            .map(|o| (o.method, o.path))
            .collect();
        routed.sort_unstable();
        documented.sort_unstable();
        assert_eq!(routed, documented);
    }
}
