//! What every handler shares.

use std::sync::Arc;

use crate::artifacts::ArtifactStore;
use crate::dispatch::Dispatcher;
use crate::events::JobEvents;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub artifacts: ArtifactStore,
    pub dispatcher: Arc<dyn Dispatcher>,
    pub events: JobEvents,
    /// Base URL for links shown to people, without a trailing slash.
    pub public_url: String,
}
