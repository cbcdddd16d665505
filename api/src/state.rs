//! The server's state, one part per domain. Each domain's routes are handed only their own
//! part, so identity code never sees the job engine and credentials never see artifacts.

use crate::credentials::CredentialsState;
use crate::gateway::GatewayState;
use crate::identity::IdentityState;
use crate::jobs::JobsState;
use crate::ops::OpsState;
use crate::webhooks::WebhooksState;

#[derive(Clone)]
pub struct AppState {
    pub identity: IdentityState,
    pub jobs: JobsState,
    pub credentials: CredentialsState,
    pub gateway: GatewayState,
    pub ops: OpsState,
    pub webhooks: WebhooksState,
}
