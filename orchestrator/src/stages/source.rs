//! Where a job's stages get what the API gives a worker, or what a local run has instead.

use ckrv_agents::egress::PolicyError;
use ckrv_agents::{AgentDefinition, Allowlist, Entry, Policy};
use ckrv_wasm_host::{Origin, OriginError};
use ckrv_wit::types::ModelAccess;

use crate::api_client::ApiClient;

/// Where a job's stages get what the API gives a worker: the operator's components and the
/// origin steps may call with the job's token. A local run has no API.
pub(crate) enum StageSource<'a> {
    Api {
        client: &'a ApiClient,
        token: &'a str,
    },
    Local {
        pipeline: &'a ckrv_pipeline::Pipeline,
        /// The developer's own keys, by variable: a local run has no gateway.
        keys: &'a [(String, String)],
    },
}

impl StageSource<'_> {
    pub(super) fn api_url(&self) -> &str {
        match self {
            Self::Api { client, .. } => client.base_url(),
            Self::Local { .. } => "",
        }
    }

    /// The agent's model environment: for each of its model routes whose key the operator
    /// configured, the job's model token in the key variable and the gateway's address in
    /// the base-URL variables. A local run passes the developer's own keys instead.
    pub(super) fn model_env(
        &self,
        agent: &AgentDefinition,
        access: &ModelAccess,
    ) -> Vec<(String, String)> {
        match self {
            Self::Api { client, .. } => agent
                .models
                .iter()
                .filter(|route| access.keys.contains(&route.key))
                .flat_map(|route| {
                    let base =
                        ckrv_wit::protocol::paths::gateway_base(client.base_url(), &route.name);
                    std::iter::once((route.key.clone(), access.token.clone())).chain(
                        route
                            .base_url
                            .iter()
                            .map(move |(var, path)| (var.clone(), format!("{base}{path}"))),
                    )
                })
                .collect(),
            Self::Local { keys, .. } => keys
                .iter()
                .filter(|(name, _)| agent.secrets.contains(name))
                .cloned()
                .collect(),
        }
    }

    /// What the agent may connect to: the job's policy (`policy`, as the API decided it), with
    /// the API's gateway. A local run has no gateway: its agent's policy allows the agent's
    /// model APIs themselves, which the developer's own keys reach.
    pub(crate) fn egress(
        &self,
        agent: &AgentDefinition,
        policy: &str,
        internal: &[Entry],
    ) -> Result<Option<Allowlist>, PolicyError> {
        match self {
            Self::Api { client, .. } => {
                let policy: Policy = policy.parse()?;
                let gateway = Entry::origin_of(client.base_url())?;
                Ok(policy
                    .allowlist(Some(gateway))
                    .map(|list| list.with_internal(internal)))
            }
            Self::Local { .. } if agent.egress.allows_network() => {
                let mut entries = agent.egress.entries();
                for route in &agent.models {
                    entries.push(Entry::origin_of(&route.upstream)?);
                }
                Ok(Policy::List(entries).allowlist(None))
            }
            Self::Local { .. } => Ok(None),
        }
    }

    /// The API, for a job it runs (a local run has none).
    pub(crate) fn api(&self) -> Option<&ApiClient> {
        match self {
            Self::Api { client, .. } => Some(client),
            Self::Local { .. } => None,
        }
    }

    /// The API's origin and the job's token, which the host adds to steps' requests to it.
    pub(super) fn api_origin(&self) -> Result<Option<(Origin, &str)>, OriginError> {
        match self {
            Self::Api { client, token } => Ok(Some((Origin::of_url(client.base_url())?, *token))),
            Self::Local { .. } => Ok(None),
        }
    }
}
