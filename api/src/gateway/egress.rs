//! The egress proxy for job pods on Kubernetes. An agent there shares its pod's network with
//! the orchestrator, and a NetworkPolicy names addresses, not hosts, so no proxy inside the pod
//! could hold a host list: the pod reaches the API, and the API holds it. The agent's
//! `HTTPS_PROXY` names this proxy with its job's model token as the password; each connection
//! is checked against that job's egress policy (as `ckrv_agents::egress` checks a sandbox's;
//! while the job is in phase `setup`, against the policy its setup runs under),
//! and each refusal waits in the database for the job's worker to log it.

use std::sync::Arc;

use base64::Engine as _;
use ckrv_agents::egress::{Admission, Admitted, Allowlist, Entry, Policy, Refusal};
use tokio::sync::mpsc;

use crate::dispatch::worker_setup::WorkerSetup;
use crate::identity::tokens::hash_secret;
use crate::store::Store;

/// Admits a connection whose `Proxy-Authorization` carries a running job's model token.
#[derive(Clone)]
pub struct PodEgress {
    pub store: Store,
    pub workers: Arc<WorkerSetup>,
    /// The model gateway as job pods reach it (the worker API URL's origin): allowed to every
    /// job with network, as in a sandbox.
    pub gateway: Entry,
}

/// How a client names its job, said in every refusal to admit one.
const HOW: &str = "name the job in Proxy-Authorization: Basic credentials whose password is \
                   the job's model token (HTTPS_PROXY=http://job:TOKEN@host:port)";

impl Admission for PodEgress {
    async fn admit(&self, authorization: Option<&str>) -> Result<Admitted, String> {
        let token = authorization
            .and_then(basic_password)
            .ok_or_else(|| format!("no job named: {HOW}"))?;
        let grant = match self.store.model_grant(&hash_secret(&token)).await {
            Ok(Some(grant)) => grant,
            Ok(None) => {
                return Err(format!(
                    "the password is not the model token of a running job: {HOW}"
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "the egress proxy cannot check a job's token");
                return Err("the API cannot check the job's token now; try again".into());
            }
        };
        // Setup's policy while the job is in phase `setup` (its worker reported it, and the
        // API checked it against the operator's ceiling), none while it is `verifying`, the
        // job's own otherwise.
        let policy = match grant.setup_egress.as_deref().map(str::parse::<Policy>) {
            Some(Ok(policy)) => policy,
            Some(Err(_)) => Policy::None,
            None => self.workers.egress_for(&grant.spec),
        };
        let allowlist = policy
            .allowlist(Some(self.gateway.clone()))
            .map(|list| list.with_internal(self.workers.internal()))
            .unwrap_or_else(|| Allowlist::refusing_all(&policy));
        let (refusals, mut refused) = mpsc::channel::<Refusal>(16);
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(refusal) = refused.recv().await {
                let line = refusal.to_string();
                if let Err(error) = store.add_egress_notice(&grant.job_id, &line).await {
                    tracing::warn!(%error, job = %grant.job_id, "an egress refusal was not kept");
                }
            }
        });
        Ok(Admitted {
            allowlist,
            refusals,
        })
    }
}

/// The password of `Basic` credentials.
fn basic_password(authorization: &str) -> Option<String> {
    let (scheme, encoded) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (_, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    (!password.is_empty()).then(|| password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_the_basic_password() {
        // job:tok-1 and :tok-2
        assert_eq!(
            basic_password("Basic am9iOnRvay0x").as_deref(),
            Some("tok-1")
        );
        assert_eq!(basic_password("basic OnRvay0y").as_deref(), Some("tok-2"));
        // no password, no colon, not base64, another scheme
        assert_eq!(basic_password("Basic am9iOg=="), None);
        assert_eq!(basic_password("Basic am9i"), None);
        assert_eq!(basic_password("Basic !!!"), None);
        assert_eq!(basic_password("Bearer am9iOnRvay0x"), None);
        assert_eq!(basic_password("Basic"), None);
    }
}
