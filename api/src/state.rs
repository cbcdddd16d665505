//! What every handler shares.

use std::sync::Arc;

use crate::jobs::artifacts::ArtifactStore;
use crate::jobs::engine::JobEngine;
use crate::jobs::events::JobEvents;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub artifacts: ArtifactStore,
    /// Every change of a job's state goes through it.
    pub engine: JobEngine,
    pub events: JobEvents,
    /// Keys that seal git credentials at rest.
    pub secrets: Arc<crate::credentials::secrets::KeyRing>,
    /// Rate limits on device authorizations, user codes and sign-ins.
    pub limits: Arc<crate::identity::limits::Limits>,
    /// Signs the web pages' cookies; derived from the secrets key.
    pub cookie_key: axum_extra::extract::cookie::Key,
    /// Base URL for links shown to people, without a trailing slash.
    pub public_url: String,
    /// Where a person whose quota is used up can upgrade, when the operator has such a page.
    pub billing_url: Option<String>,
    /// Jobs may name local and loopback repositories (development only).
    pub allow_local_repos: bool,
    /// The team's OpenID provider, when single sign-on is set up.
    pub sso: Option<Arc<crate::identity::sso::Sso>>,
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    /// The pipeline, agents and agent secrets handed to workers.
    pub workers: Arc<crate::jobs::worker_setup::WorkerSetup>,
}
