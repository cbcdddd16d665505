//! The model gateway: a job's agent calls its model APIs through here, with its job's model
//! token where its CLI sends a key. The gateway checks the token (its job must be running
//! under the claim it came with), puts the operator's key in its place, forwards the request
//! over rustls and streams the answer back as it comes, counting the tokens the answer
//! reports against the job. No key of the operator's ever reaches a worker or an agent.
//!
//! Owns forwarding (`forward`), reading usage from answers (`usage`), what tokens cost
//! (`prices`), and the egress proxy job pods reach the internet through (`egress`). May call `store`, `dispatch::worker_setup` (the operator's keys), `identity`
//! (token primitives), `jobs::engine` (to end a job that spent its budget) and `metrics`.

pub mod egress;
pub mod forward;
pub mod prices;
pub mod usage;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::any;
use ckrv_wit::protocol::paths;

use crate::dispatch::worker_setup::WorkerSetup;
use crate::identity::quota::ModelBudgets;
use crate::jobs::engine::JobEngine;
use crate::metrics::Metrics;
use crate::store::Store;

pub use prices::{PriceError, PriceTable};

/// What the gateway is handed.
#[derive(Clone, FromRef)]
pub struct GatewayState {
    pub store: Store,
    /// The operator's agent keys.
    pub workers: Arc<WorkerSetup>,
    /// Ends a job whose agent spent its budget.
    pub engine: JobEngine,
    pub prices: Arc<PriceTable>,
    /// Upstreams by route name, in place of the agents' own: for tests against stand-ins.
    pub upstreams: Arc<BTreeMap<String, String>>,
    /// The client every forwarded request goes out with (rustls, no redirects followed).
    pub client: reqwest::Client,
    pub metrics: Arc<Metrics>,
    /// The operator's budgets for a job and for an account's month, by tier.
    pub budgets: Arc<ModelBudgets>,
}

/// The client the gateway forwards with: rustls, and a redirect is passed back to the agent,
/// never followed with the key in hand.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
}

/// The gateway's one route, for every method: it is the model APIs' surface, not this API's,
/// so the OpenAPI document leaves it out (docs/protocol.md describes it).
pub fn router(state: GatewayState) -> Router {
    Router::new()
        .route(paths::GATEWAY, any(forward::forward))
        .with_state(state)
}

/// `ROUTE=URL` (`--model-upstream`): a route some agent declares, and an `https` origin, or
/// an `http` one on loopback.
pub fn parse_upstream(text: &str) -> Result<(String, String), String> {
    let (route, url) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not ROUTE=URL"))?;
    let routes: std::collections::BTreeSet<&str> = ckrv_agents::agents()
        .iter()
        .flat_map(|agent| agent.models.iter().map(|m| m.name.as_str()))
        .collect();
    if !routes.contains(route) {
        return Err(format!(
            "no agent has a model route `{route}`; the routes are: {}",
            routes.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "`{url}`: an upstream is https, or http on loopback (a stand-in)"
            ));
        }
    }
    if parsed.query().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "`{url}`: an upstream has no query and no credentials"
        ));
    }
    Ok((route.to_string(), url.trim_end_matches('/').to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_upstream;

    #[test]
    fn upstreams_are_known_routes_on_https_or_loopback_http() {
        assert_eq!(
            parse_upstream("anthropic=http://127.0.0.1:9000/"),
            Ok(("anthropic".into(), "http://127.0.0.1:9000".into()))
        );
        assert_eq!(
            parse_upstream("openai=https://llm.localhost/proxy"),
            Ok(("openai".into(), "https://llm.localhost/proxy".into()))
        );
        for (bad, says) in [
            ("anthropic", "is not ROUTE=URL"),
            (
                "nope=https://x.localhost",
                "no agent has a model route `nope`; the routes are: anthropic,",
            ),
            ("gemini=http://llm.localhost", "https, or http on loopback"),
            ("gemini=ftp://127.0.0.1", "https, or http on loopback"),
            ("gemini=not a url", "is not a URL"),
            (
                "openai=https://u:p@llm.localhost",
                "no query and no credentials",
            ),
        ] {
            let error = parse_upstream(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
