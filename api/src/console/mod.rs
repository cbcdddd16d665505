//! The web console: pages for the people who would rather look than type. The account's jobs,
//! one job (phases, its log as it is written, the diff file by file), an attempt group ranked,
//! and for administrators
//! the whole system. Pages are rendered here; their one script (`assets/console.js`) follows
//! the log and acts (cancel) through the same JSON API the CLI calls, signed in by the page's
//! session cookie and CSRF token (`identity::web::browser_api`).
//!
//! May call `store`, `identity` (sessions, the page layout's escaping), `jobs` (artifacts, for
//! the diff) and `ops` (readiness, for operators); nothing calls it but the router.

mod assets;
mod diff;
mod group_page;
mod highlight;
mod job_page;
mod jobs_page;
mod operators;
mod page;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use axum_extra::extract::cookie::Key;

use crate::identity::IdentityState;
use crate::jobs::JobsState;
use crate::ops::OpsState;

/// What the console's pages are handed.
#[derive(Clone)]
pub struct ConsoleState {
    pub identity: IdentityState,
    pub jobs: JobsState,
    pub ops: OpsState,
}

impl FromRef<ConsoleState> for Key {
    fn from_ref(state: &ConsoleState) -> Self {
        state.identity.cookie_key.clone()
    }
}

pub fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/", get(jobs_page::page))
        .route("/jobs/{id}", get(job_page::page))
        .route("/jobs/{id}/diff", get(diff::page))
        .route("/groups/{id}", get(group_page::page))
        .route("/operators", get(operators::page))
        .route("/assets/{file}", get(assets::serve))
}
