//! HTTP origins (scheme, host, port): what a guest may be allowed to call. An operator names
//! them in a pipeline's `allowed_hosts`; hosts compare a request's URL against them.

/// An HTTP origin: scheme, lower-case host and port (the scheme's default filled in).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

/// Why a string is not an origin a guest may be allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error(
        "`{0}` is not a URL; write an origin such as https://api.example.com or http://127.0.0.1:8080"
    )]
    NotAUrl(String),
    #[error("`{0}` is not http or https")]
    Scheme(String),
    #[error("`{0}` has a path, query or credentials; write only scheme://host[:port]")]
    NotAnOrigin(String),
    #[error(
        "`{0}`: a wildcard may only be a whole first label of a domain, as in https://*.example.com"
    )]
    Wildcard(String),
}

impl Origin {
    /// The origin of any http(s) URL.
    pub fn of_url(url: &str) -> Result<Self, OriginError> {
        let parsed = url::Url::parse(url).map_err(|_| OriginError::NotAUrl(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(OriginError::Scheme(url.to_string()));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| OriginError::NotAUrl(url.to_string()))?;
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| OriginError::Scheme(url.to_string()))?;
        Ok(Self {
            scheme: parsed.scheme().to_string(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// An origin as an operator writes it: `scheme://host[:port]`, nothing more. The host may
    /// start with a `*.` label, matching any name below that domain (not the domain itself).
    pub fn parse(origin: &str) -> Result<Self, OriginError> {
        if origin.contains('*') {
            let parsed = Self::parse_exact(&origin.replacen("*.", "wildcard.", 1))
                .map_err(|_| OriginError::Wildcard(origin.to_string()))?;
            let below = parsed.host.strip_prefix("wildcard.").unwrap_or_default();
            // At least a registrable-looking domain below the wildcard, and no other `*`.
            if !origin.contains("://*.") || below.matches('.').count() < 1 || below.contains('*') {
                return Err(OriginError::Wildcard(origin.to_string()));
            }
            return Ok(Self {
                host: format!("*.{below}"),
                ..parsed
            });
        }
        Self::parse_exact(origin)
    }

    /// Whether a request to `other` (an exact origin) falls under this one.
    pub fn covers(&self, other: &Origin) -> bool {
        if self.scheme != other.scheme || self.port != other.port {
            return false;
        }
        match self.host.strip_prefix('*') {
            Some(suffix) => other.host.ends_with(suffix) && other.host.len() > suffix.len(),
            None => self.host == other.host,
        }
    }

    fn parse_exact(origin: &str) -> Result<Self, OriginError> {
        let parsed =
            url::Url::parse(origin).map_err(|_| OriginError::NotAUrl(origin.to_string()))?;
        if parsed.path() != "/"
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(OriginError::NotAnOrigin(origin.to_string()));
        }
        Self::of_url(origin)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins_fill_in_default_ports_and_ignore_case() {
        let o = |u: &str| Origin::of_url(u).unwrap();
        assert_eq!(
            o("http://API.example.com/v1/jobs").to_string(),
            "http://api.example.com:80"
        );
        assert_eq!(
            o("https://api.example.com:443/x"),
            o("https://api.example.com")
        );
        assert_ne!(o("http://127.0.0.1:8080"), o("http://127.0.0.1:8081"));
        assert_ne!(o("http://h"), o("https://h"));
        assert!(matches!(
            Origin::of_url("ftp://h"),
            Err(OriginError::Scheme(_))
        ));
        assert!(matches!(
            Origin::of_url("not a url"),
            Err(OriginError::NotAUrl(_))
        ));
    }

    #[test]
    fn a_wildcard_covers_names_below_its_domain_only() {
        let wild = Origin::parse("https://*.blob.core.windows.net").unwrap();
        assert_eq!(wild.to_string(), "https://*.blob.core.windows.net:443");
        let o = |u: &str| Origin::of_url(u).unwrap();
        assert!(wild.covers(&o("https://productionresultssa3.blob.core.windows.net/x")));
        assert!(!wild.covers(&o("https://blob.core.windows.net")));
        assert!(!wild.covers(&o("https://evil-blob.core.windows.net")));
        assert!(!wild.covers(&o("http://a.blob.core.windows.net")));
        assert!(!wild.covers(&o("https://a.blob.core.windows.net.evil.test")));
        for bad in [
            "https://*",
            "https://*.com",
            "https://a.*.com",
            "https://**.x.com",
            "https://*x.y.com",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        let exact = Origin::parse("https://api.github.com").unwrap();
        assert!(exact.covers(&o("https://api.github.com/repos")));
        assert!(!exact.covers(&o("https://uploads.github.com")));
    }

    #[test]
    fn an_operator_writes_bare_origins_only() {
        assert!(Origin::parse("http://127.0.0.1:9000").is_ok());
        assert!(Origin::parse("https://hooks.example.com/").is_ok());
        for bad in ["https://h/path", "https://u:p@h", "https://h?x=1", "h:80"] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }
}
