//! `GET /v1/openapi.json`: the API described as OpenAPI 3.1, built from the routes' own table
//! ([`OPERATIONS`], which `routes::router` is checked against) and the schemas generated from the
//! WIT types with the serde code itself ([`ckrv_wit::JSON_SCHEMAS`]). Nothing here is a second
//! copy of a model.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// A person's access token or personal access token.
    User,
    /// A job's worker token.
    Worker,
    /// An external worker's credential.
    WorkerCredential,
}

/// What a request carries or a response answers.
#[derive(Debug, Clone, Copy)]
pub enum Content {
    None,
    /// JSON of a WIT type, by its Rust name.
    Json(&'static str),
    /// JSON of an inline schema, for the few answers that are no WIT type.
    JsonSchema(&'static str),
    /// Text in this media type.
    Text(&'static str),
}

/// A query parameter or request header and its schema (JSON text).
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub schema: &'static str,
    pub description: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    /// As axum spells it: `/v1/jobs/{id}`.
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    pub query: &'static [Param],
    pub headers: &'static [Param],
    pub body: Content,
    /// The successful answers.
    pub answers: &'static [(u16, Content)],
}

const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    auth: Auth,
) -> Operation {
    Operation {
        method,
        path,
        id,
        summary,
        auth,
        query: &[],
        headers: &[],
        body: Content::None,
        answers: &[(204, Content::None)],
    }
}

const fn with_body(mut o: Operation, body: Content) -> Operation {
    o.body = body;
    o
}

const fn answering(mut o: Operation, answers: &'static [(u16, Content)]) -> Operation {
    o.answers = answers;
    o
}

const fn with_query(mut o: Operation, query: &'static [Param]) -> Operation {
    o.query = query;
    o
}

const LIMIT_100: &str = r#"{"type": "integer", "minimum": 1, "maximum": 100, "default": 20}"#;
const LIMIT_10K: &str = r#"{"type": "integer", "minimum": 1, "maximum": 10000}"#;
const SEQUENCE: &str = r#"{"type": "integer", "minimum": 0}"#;

const READY: &str = r#"{"type": "object", "required": ["ready", "database", "artifacts", "stopping"],
  "properties": {"ready": {"type": "boolean"}, "database": {"enum": ["ok", "unavailable"]},
  "artifacts": {"enum": ["ok", "unavailable"]}, "stopping": {"type": "boolean"}}}"#;

/// Every route of the API (the web pages under `/activate` and `/account` are not API).
pub const OPERATIONS: &[Operation] = &[
    answering(
        with_body(
            op(
                "post",
                "/v1/auth/device",
                "startDeviceAuthorization",
                "Start the device flow",
                Auth::None,
            ),
            Content::Json("DeviceCodeRequest"),
        ),
        &[(200, Content::Json("DeviceCodeResponse"))],
    ),
    answering(
        with_body(
            op(
                "post",
                "/v1/auth/token",
                "pollDeviceToken",
                "Poll for the device flow's tokens",
                Auth::None,
            ),
            Content::Json("DeviceTokenRequest"),
        ),
        &[(200, Content::Json("TokenResponse"))],
    ),
    answering(
        with_body(
            op(
                "post",
                "/v1/auth/refresh",
                "refreshToken",
                "Exchange a refresh token",
                Auth::None,
            ),
            Content::Json("RefreshRequest"),
        ),
        &[(200, Content::Json("TokenResponse"))],
    ),
    op(
        "post",
        "/v1/auth/logout",
        "logout",
        "Revoke this session's tokens",
        Auth::User,
    ),
    answering(
        op(
            "get",
            "/v1/users/me",
            "getCurrentUser",
            "The signed-in account and its quota",
            Auth::User,
        ),
        &[(200, Content::Json("User"))],
    ),
    answering(
        with_body(
            op(
                "post",
                "/v1/credentials",
                "addCredential",
                "Store a git credential (encrypted)",
                Auth::User,
            ),
            Content::Json("CredentialCreate"),
        ),
        &[(201, Content::Json("CredentialSummary"))],
    ),
    answering(
        op(
            "get",
            "/v1/credentials",
            "listCredentials",
            "The account's git credentials, never their values",
            Auth::User,
        ),
        &[(200, Content::Json("CredentialList"))],
    ),
    op(
        "delete",
        "/v1/credentials/{name}",
        "removeCredential",
        "Remove a git credential",
        Auth::User,
    ),
    Operation {
        headers: &[Param {
            name: "Idempotency-Key",
            schema: r#"{"type": "string", "minLength": 1, "maxLength": 255}"#,
            description: "The same key and body within a day answer with the same job",
        }],
        ..answering(
            with_body(
                op(
                    "post",
                    "/v1/jobs",
                    "createJob",
                    "Dispatch a job",
                    Auth::User,
                ),
                Content::Json("JobCreate"),
            ),
            &[(201, Content::Json("Job"))],
        )
    },
    answering(
        with_query(
            op(
                "get",
                "/v1/jobs",
                "listJobs",
                "The account's jobs, newest first",
                Auth::User,
            ),
            &[
                Param {
                    name: "status",
                    schema: r##"{"$ref": "#/components/schemas/JobStatus"}"##,
                    description: "Only jobs in this status",
                },
                Param {
                    name: "limit",
                    schema: LIMIT_100,
                    description: "Jobs per page",
                },
                Param {
                    name: "cursor",
                    schema: r#"{"type": "string"}"#,
                    description: "`next_cursor` of the previous page",
                },
            ],
        ),
        &[(200, Content::Json("JobListResponse"))],
    ),
    answering(
        op("get", "/v1/jobs/{id}", "getJob", "One job", Auth::User),
        &[(200, Content::Json("Job"))],
    ),
    answering(
        op(
            "post",
            "/v1/jobs/{id}/cancel",
            "cancelJob",
            "Cancel a job and stop its worker",
            Auth::User,
        ),
        &[(200, Content::Json("Job"))],
    ),
    answering(
        with_query(
            op(
                "get",
                "/v1/jobs/{id}/logs",
                "getJobLogs",
                "A job's log: a page, or a live stream with follow=true",
                Auth::User,
            ),
            &[
                Param {
                    name: "follow",
                    schema: r#"{"type": "boolean", "default": false}"#,
                    description: "Stream as server-sent events until the job ends",
                },
                Param {
                    name: "after",
                    schema: SEQUENCE,
                    description: "Only entries with a higher sequence",
                },
                Param {
                    name: "tail",
                    schema: SEQUENCE,
                    description: "Only the last this many entries",
                },
                Param {
                    name: "limit",
                    schema: LIMIT_10K,
                    description: "At most this many entries",
                },
                Param {
                    name: "wait_ms",
                    schema: r#"{"type": "integer", "minimum": 0, "maximum": 30000}"#,
                    description: "While no entry is there and the job runs, wait up to this many milliseconds for one",
                },
            ],
        ),
        &[(200, Content::Json("LogResponse"))],
    ),
    answering(
        op(
            "get",
            "/v1/jobs/{id}/artifacts/diff",
            "getJobDiff",
            "A succeeded job's diff, as `git apply` reads it",
            Auth::User,
        ),
        &[(200, Content::Text("text/plain"))],
    ),
    answering(
        op(
            "post",
            "/v1/worker/claim",
            "claimJob",
            "An external worker claims the next job",
            Auth::WorkerCredential,
        ),
        &[(200, Content::Json("WorkerClaim")), (204, Content::None)],
    ),
    answering(
        op(
            "get",
            "/v1/worker/jobs/{id}",
            "getWorkerJob",
            "The job and its spec, for its worker",
            Auth::Worker,
        ),
        &[(200, Content::Json("WorkerJob"))],
    ),
    answering(
        op(
            "get",
            "/v1/worker/jobs/{id}/components/{digest}",
            "getPipelineComponent",
            "A step component of the pipeline, by its SHA-256",
            Auth::Worker,
        ),
        &[(200, Content::Text("application/wasm"))],
    ),
    op(
        "post",
        "/v1/worker/jobs/{id}/heartbeat",
        "renewLease",
        "Renew the worker's lease",
        Auth::Worker,
    ),
    with_body(
        op(
            "post",
            "/v1/worker/jobs/{id}/phase",
            "reportPhase",
            "Report the job's phase",
            Auth::Worker,
        ),
        Content::Json("PhaseUpdate"),
    ),
    with_body(
        op(
            "post",
            "/v1/worker/jobs/{id}/logs",
            "appendLogs",
            "Append numbered log lines",
            Auth::Worker,
        ),
        Content::Json("LogBatch"),
    ),
    with_body(
        op(
            "put",
            "/v1/worker/jobs/{id}/artifacts/diff",
            "uploadDiff",
            "Upload the job's diff",
            Auth::Worker,
        ),
        Content::Text("text/x-diff"),
    ),
    with_body(
        op(
            "post",
            "/v1/worker/jobs/{id}/result",
            "reportResult",
            "Report the diff's statistics",
            Auth::Worker,
        ),
        Content::Json("DiffStats"),
    ),
    with_body(
        op(
            "post",
            "/v1/worker/jobs/{id}/complete",
            "completeJob",
            "End the job",
            Auth::Worker,
        ),
        Content::Json("JobCompletion"),
    ),
    answering(
        op(
            "get",
            "/healthz",
            "health",
            "Whether the process lives",
            Auth::None,
        ),
        &[(200, Content::Text("text/plain"))],
    ),
    answering(
        op(
            "get",
            "/readyz",
            "readiness",
            "Whether the database and the artifact store answer",
            Auth::None,
        ),
        &[
            (200, Content::JsonSchema(READY)),
            (503, Content::JsonSchema(READY)),
        ],
    ),
    answering(
        op(
            "get",
            "/metrics",
            "metrics",
            "Prometheus metrics",
            Auth::None,
        ),
        &[
            (200, Content::Text("application/openmetrics-text")),
            (503, Content::Text("text/plain")),
        ],
    ),
    answering(
        op(
            "get",
            "/v1/openapi.json",
            "openapi",
            "This document",
            Auth::None,
        ),
        &[(200, Content::JsonSchema(r#"{"type": "object"}"#))],
    ),
];

/// The error statuses any operation may answer, all with an `ApiError` body.
const ERRORS: &[(u16, &str)] = &[
    (400, "The request is malformed or a value is invalid"),
    (401, "No valid token"),
    (402, "The monthly job quota is used up"),
    (403, "The token may not do this"),
    (404, "No such thing, or not yours"),
    (405, "The path does not take this method"),
    (409, "It conflicts with the current state"),
    (410, "Expired under the retention rule"),
    (413, "The request is too large"),
    (415, "The body's media type is not accepted"),
    (422, "An Idempotency-Key reused with another body"),
    (429, "Too many requests; retry after the Retry-After header"),
    (500, "A failure of this server; its log says more"),
    (
        503,
        "A store this server needs did not answer, or it is stopping",
    ),
];

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let entry = paths.entry(operation.path).or_insert_with(|| json!({}));
        if let Value::Object(methods) = entry {
            methods.insert(operation.method.to_string(), describe(operation));
        }
    }
    // The generated schemas are valid JSON by construction; an empty set would fail the tests.
    let schemas: Value = serde_json::from_str(ckrv_wit::JSON_SCHEMAS).unwrap_or_else(|_| json!({}));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Chakravarti cloud API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated by ckrv-api from its routes and the WIT models (docs/protocol.md describes the behaviour).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "user": {"type": "http", "scheme": "bearer", "description": "An access token from the device flow, or a personal access token"},
                "worker": {"type": "http", "scheme": "bearer", "description": "A job's worker token"},
                "workerCredential": {"type": "http", "scheme": "bearer", "description": "An external worker's credential (`ckrv-api workers add`)"},
            },
        },
    })
}

fn describe(operation: &Operation) -> Value {
    let mut parameters: Vec<Value> = operation
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    for (place, params) in [("query", operation.query), ("header", operation.headers)] {
        for param in params {
            parameters.push(json!({
                "name": param.name,
                "in": place,
                "required": false,
                "description": param.description,
                "schema": inline(param.schema),
            }));
        }
    }
    let mut responses = Map::new();
    for (status, content) in operation.answers {
        responses.insert(status.to_string(), response("Success", content));
    }
    for (status, why) in ERRORS {
        responses
            .entry(status.to_string())
            .or_insert_with(|| response(why, &Content::Json("ApiError")));
    }
    let mut described = json!({
        "operationId": operation.id,
        "summary": operation.summary,
        "parameters": parameters,
        "responses": responses,
    });
    let security = match operation.auth {
        Auth::None => None,
        Auth::User => Some("user"),
        Auth::Worker => Some("worker"),
        Auth::WorkerCredential => Some("workerCredential"),
    };
    if let (Some(scheme), Value::Object(o)) = (security, &mut described) {
        o.insert("security".into(), json!([{ scheme: [] }]));
    }
    if let (Some(content), Value::Object(o)) = (media(&operation.body), &mut described) {
        o.insert(
            "requestBody".into(),
            json!({"required": true, "content": content}),
        );
    }
    described
}

fn response(description: &str, content: &Content) -> Value {
    match media(content) {
        Some(content) => json!({"description": description, "content": content}),
        None => json!({"description": description}),
    }
}

/// `{media type: {schema}}`, or `None` for no body.
fn media(content: &Content) -> Option<Value> {
    Some(match content {
        Content::None => return None,
        Content::Json(name) => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}})
        }
        Content::JsonSchema(schema) => json!({"application/json": {"schema": inline(schema)}}),
        Content::Text(media) => json!({ *media: {"schema": {"type": "string"}} }),
    })
}

/// A schema written in this file: checked by the tests, so never an empty one in practice.
fn inline(schema: &str) -> Value {
    serde_json::from_str(schema).unwrap_or_else(|_| json!({}))
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
        for operation in OPERATIONS {
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
    fn operation_ids_are_unique() {
        let mut ids: Vec<&str> = OPERATIONS.iter().map(|o| o.id).collect();
        ids.sort_unstable();
        let count = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), count);
    }
}
