//! One operation of the API: how the OpenAPI document describes it, and the handler that serves
//! it. Each domain lists its own [`Route`]s; the router mounts them and `ops::openapi` describes
//! the same rows, so a route can be neither undocumented nor documented but missing.

use axum::routing::{MethodFilter, MethodRouter};

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    /// As OpenAPI spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Delete => "delete",
        }
    }

    pub const fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

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
    pub method: Method,
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

pub const fn op(
    method: Method,
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

pub const fn with_body(mut o: Operation, body: Content) -> Operation {
    o.body = body;
    o
}

pub const fn answering(mut o: Operation, answers: &'static [(u16, Content)]) -> Operation {
    o.answers = answers;
    o
}

pub const fn with_query(mut o: Operation, query: &'static [Param]) -> Operation {
    o.query = query;
    o
}

/// An operation and its handler, mounted for the operation's method by `mount` (written
/// `|method| on(method, handler)`, plus any layer the handler needs).
pub struct Route<S> {
    pub operation: Operation,
    mount: fn(MethodFilter) -> MethodRouter<S>,
}

impl<S> Route<S> {
    pub const fn new(operation: Operation, mount: fn(MethodFilter) -> MethodRouter<S>) -> Self {
        Self { operation, mount }
    }

    /// The handler, for the operation's method only.
    pub fn handler(&self) -> MethodRouter<S> {
        (self.mount)(self.operation.method.filter())
    }
}
