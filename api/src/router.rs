//! The HTTP surface: every domain's routes on one router (see docs/protocol.md), and the
//! answers for paths and methods it does not have.

use std::sync::OnceLock;

use axum::Router;
use axum::routing::on;
use ckrv_wit::protocol::paths;
use ckrv_wit::types::ErrorKind;
use serde_json::Value;

use crate::error::AppError;
use crate::route::{Auth, Content, Method, Operation, Route, answering, op};
use crate::state::AppState;
use crate::{console, credentials, gateway, identity, jobs, ops, webhooks};

/// The OpenAPI document, served from the same rows it describes.
const ROUTES: &[Route<()>] = &[Route::new(
    answering(
        op(
            Method::Get,
            paths::OPENAPI,
            "openapi",
            "This document",
            Auth::None,
        ),
        &[(200, Content::JsonSchema(r#"{"type": "object"}"#))],
    ),
    |method| on(method, openapi),
)];

/// What every route of the API serves, by domain, as the OpenAPI document describes it (the web
/// pages under `/activate` and `/account` are not API: `identity::web` mounts them).
pub fn operations() -> impl Iterator<Item = &'static Operation> {
    identity::routes::ROUTES
        .iter()
        .map(|route| &route.operation)
        .chain(
            credentials::routes::ROUTES
                .iter()
                .map(|route| &route.operation),
        )
        .chain(jobs::routes::ROUTES.iter().map(|route| &route.operation))
        .chain(
            webhooks::routes::ROUTES
                .iter()
                .map(|route| &route.operation),
        )
        .chain(ops::health::ROUTES.iter().map(|route| &route.operation))
        .chain(ROUTES.iter().map(|route| &route.operation))
}

/// The OpenAPI document of this API, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| ops::openapi::build(operations()))
}

async fn openapi() -> axum::Json<&'static Value> {
    axum::Json(document())
}

/// Each domain's routes with that domain's state, the web pages and the console, the model gateway, and what answers a path or
/// method the API does not have; every request runs inside `ops::health::request_context`.
pub fn router(state: AppState) -> Router {
    let console = console::ConsoleState {
        identity: state.identity.clone(),
        jobs: state.jobs.clone(),
        ops: state.ops.clone(),
    };
    mount(identity::routes::ROUTES, state.identity.clone())
        .merge(identity::web::router().with_state(state.identity.clone()))
        .merge(mount(credentials::routes::ROUTES, state.credentials))
        .merge(mount(jobs::routes::ROUTES, state.jobs))
        .merge(mount(webhooks::routes::ROUTES, state.webhooks))
        .merge(gateway::router(state.gateway))
        .merge(mount(ops::health::ROUTES, state.ops.clone()))
        .merge(mount(ROUTES, ()))
        .merge(console::router().with_state(console))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.identity.clone(),
            identity::web::browser_api::sign_in_browser_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.ops,
            ops::health::request_context,
        ))
}

/// `routes` on a router of their own, with their `state`.
fn mount<S: Clone + Send + Sync + 'static>(routes: &[Route<S>], state: S) -> Router {
    routes
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.operation.path, route.handler())
        })
        .with_state(state)
}

/// axum adds the `Allow` header naming the methods the path has.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::new(
        ErrorKind::MethodNotAllowed,
        format!("{} does not take {method}", uri.path()),
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_inline_schema_parses() {
        let document = document();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("Job") && schemas.contains_key("ApiError"));
        let text = document.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "no schema {name}");
        }
        for operation in operations() {
            for param in operation.query.iter().chain(operation.headers) {
                serde_json::from_str::<Value>(param.schema)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", operation.id, param.name));
            }
            for (_, content) in operation.answers {
                if let Content::JsonSchema(schema) = content {
                    serde_json::from_str::<Value>(schema).unwrap();
                }
            }
        }
    }

    #[test]
    fn operation_ids_are_unique_and_each_method_and_path_is_routed_once() {
        let mut ids: Vec<&str> = operations().map(|o| o.id).collect();
        ids.sort_unstable();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count);
        let mut routes: Vec<_> = operations().map(|o| (o.method, o.path)).collect();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(routes.len(), count);
    }
}
