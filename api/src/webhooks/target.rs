//! Where a webhook may send: the URL policy of repositories. `https://` to public hosts only,
//! no credentials in the URL; an operator who allows local repositories allows `http://` and
//! internal hosts too. The name is checked when the webhook is added and every address it
//! resolves to when a delivery connects, so a name that later points inside is refused then.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ckrv_wit::repo_url::address_kind;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest URL a webhook may have.
const MAX_URL: usize = 2048;
/// How long a receiver has to answer; a slow one is tried again later.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks a webhook URL before it is stored; the error says what to do.
pub fn check(raw: &str, allow_internal: bool) -> Result<url::Url, String> {
    if raw.len() > MAX_URL {
        return Err(format!("the URL is longer than {MAX_URL} bytes"));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| format!("{raw:?} is not a URL ({e}); give https://host/path"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_internal => {}
        _ => {
            return Err(format!(
                "a webhook URL is https:// (not {}://)",
                url.scheme()
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL carries credentials; receivers verify the signature instead".into());
    }
    let Some(host) = url.host() else {
        return Err("the URL names no host".into());
    };
    if !allow_internal {
        let ip = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.');
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(format!(
                        "{name} is this machine; webhooks go to public hosts"
                    ));
                }
                None
            }
        };
        if let Some(kind) = ip.and_then(address_kind) {
            return Err(format!("the host is {kind}; webhooks go to public hosts"));
        }
    }
    Ok(url)
}

/// Resolves names for deliveries and refuses any that resolves to a non-public address, unless
/// the operator allows internal hosts.
#[derive(Debug, Clone, Copy)]
pub struct PolicyResolver {
    allow_internal: bool,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_internal = self.allow_internal;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_internal
                && let Some(kind) = addresses.iter().find_map(|a| address_kind(a.ip()))
            {
                return Err(
                    format!("{host} resolves to {kind}; webhooks go to public hosts").into(),
                );
            }
            let addrs: Addrs = Box::new(addresses.into_iter());
            Ok(addrs)
        })
    }
}

/// The client deliveries are sent with: no redirects (a receiver cannot send us elsewhere), no
/// proxy from the environment, the resolver above, and a time limit.
pub fn client(allow_internal: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { allow_internal }))
        .timeout(SEND_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("ckrv-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn public_https_passes_and_the_rest_is_refused_with_the_reason() {
        assert!(check("https://hooks.example.com/ckrv?x=1", false).is_ok());
        for (url, says) in [
            ("http://hooks.example.com/", "https://"),
            ("ftp://hooks.example.com/", "https://"),
            ("https://user:pw@hooks.example.com/", "credentials"),
            ("https://127.0.0.1/", "loopback"),
            ("https://[::1]:8443/", "loopback"),
            ("https://10.1.2.3/", "private"),
            ("https://169.254.169.254/latest", "link-local"),
            ("https://0x7f.1/", "loopback"),
            ("https://localhost:9/", "this machine"),
            ("https://x.localhost/", "this machine"),
            ("not a url", "not a URL"),
        ] {
            let error = check(url, false).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
        // The operator's development setting lets loopback and http through.
        assert!(check("http://127.0.0.1:9/hook", true).is_ok());
        assert!(check("https://u:p@127.0.0.1/", true).is_err());
    }

    /// A name is checked by what it resolves to when a delivery connects.
    #[tokio::test]
    async fn a_name_that_resolves_inside_is_refused_when_sending() {
        let resolver = PolicyResolver {
            allow_internal: false,
        };
        let error = match resolver.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved for a public-only policy"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("loopback"), "{error}");
        let allowed = PolicyResolver {
            allow_internal: true,
        };
        let addrs: Vec<SocketAddr> = allowed
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
