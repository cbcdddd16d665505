//! Where a guest's outbound HTTP may go. A request is sent only when its origin (scheme, host,
//! port) is one the host allowed; an origin may carry a credential (the API's, a forge's),
//! which the host adds, so the guest never holds it and cannot send it anywhere else.

use std::future::Future;

use ckrv_wit::origin::Origin;
use http::header::{AUTHORIZATION, HeaderValue};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The origins a guest may call, and the bearer tokens added to requests to some of them.
#[derive(Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
    credentials: Vec<(Origin, String)>,
}

impl std::fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginPolicy")
            .field("allowed", &self.allowed)
            .field(
                "credentials_for",
                &self.credentials.iter().map(|(o, _)| o).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl OriginPolicy {
    /// Allows nothing.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Also allows `origin`.
    pub fn allow(mut self, origin: Origin) -> Self {
        if !self.allowed.contains(&origin) {
            self.allowed.push(origin);
        }
        self
    }

    /// Allows `origin` and sends `token` as its bearer credential, replacing any the guest set.
    pub fn allow_with_bearer(mut self, origin: Origin, token: &str) -> Self {
        self.credentials.retain(|(o, _)| *o != origin);
        self.credentials.push((origin.clone(), token.to_string()));
        self.allow(origin)
    }

    /// Whether a request to `url` may be sent.
    pub fn allows(&self, url: &str) -> bool {
        Origin::of_url(url).is_ok_and(|o| self.allowed.iter().any(|a| a.covers(&o)))
    }

    fn credential_for(&self, url: &str) -> Option<&str> {
        let origin = Origin::of_url(url).ok()?;
        self.credentials
            .iter()
            .find(|(o, _)| *o == origin)
            .map(|(_, token)| token.as_str())
    }
}

/// The policy at work in a store, with what it refused, so the host can say why a guest failed.
pub(crate) struct PolicyHooks {
    pub(crate) policy: OriginPolicy,
    pub(crate) denied: Vec<String>,
}

type SendFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type ResponseFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, SendFuture), HttpError>> + Send>;

impl WasiHttpHooks for PolicyHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: SendFuture,
    ) -> ResponseFuture {
        let url = request.uri().to_string();
        if !self.policy.allows(&url) {
            let origin = Origin::of_url(&url).map_or_else(|_| url.clone(), |o| o.to_string());
            tracing::warn!(
                origin,
                "denied a guest's request outside its allowed origins"
            );
            if !self.denied.contains(&origin) {
                self.denied.push(origin);
            }
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if let Some(token) = self.policy.credential_for(&url) {
            match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
                Err(_) => return Box::new(async { Err(HttpError::HttpRequestDenied) }),
            }
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_credential_goes_to_its_origin_only() {
        let api = Origin::parse("http://127.0.0.1:8080").unwrap();
        let other = Origin::parse("http://localhost:9000").unwrap();
        let policy = OriginPolicy::deny_all()
            .allow(other)
            .allow_with_bearer(api, "tok");
        assert!(policy.allows("http://127.0.0.1:8080/v1/x"));
        assert!(policy.allows("http://LOCALHOST:9000/"));
        assert!(!policy.allows("http://127.0.0.1:8081/"));
        assert_eq!(
            policy.credential_for("http://127.0.0.1:8080/v1"),
            Some("tok")
        );
        assert_eq!(policy.credential_for("http://localhost:9000/"), None);
        assert!(!format!("{policy:?}").contains("tok"));
    }

    /// A publish step talks to the API and to the forge, each with its own credential.
    #[test]
    fn two_origins_keep_their_own_credentials() {
        let api = Origin::parse("http://127.0.0.1:8080").unwrap();
        let forge = Origin::parse("http://127.0.0.1:9000").unwrap();
        let policy = OriginPolicy::deny_all()
            .allow_with_bearer(api.clone(), "api-token")
            .allow_with_bearer(forge, "forge-token")
            .allow_with_bearer(api, "api-token-2");
        assert_eq!(
            policy.credential_for("http://127.0.0.1:8080/v1"),
            Some("api-token-2")
        );
        assert_eq!(
            policy.credential_for("http://127.0.0.1:9000/api/v3/repos/o/r/pulls"),
            Some("forge-token")
        );
        assert_eq!(policy.credential_for("http://127.0.0.1:9001/"), None);
    }
}
