//! Which repository URLs a job may name. The API checks them when a job is created and the
//! worker again before it connects (then by the addresses the name resolves to): `https://` and
//! `ssh://` (or `user@host:path`) to public hosts only, never credentials in the URL, never a
//! local path, `file://`, another transport, or a loopback, private, link-local or metadata
//! address, and never a user or host that ssh would take for an option. Every host, whatever
//! the syntax, goes through the same WHATWG host parser, so `0x7f.1` or `127.1` is 127.0.0.1
//! in an `ssh://` or scp-like URL as it is in an `https://` one. An operator may allow local
//! repositories for development (the option rule still holds).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How a repository is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Https,
    Ssh,
    /// Local development only.
    Http,
    /// Local development only: `file://` or a path.
    Local,
}

/// A repository URL that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    pub transport: Transport,
    /// The host to connect to (no brackets around IPv6); `None` for local repositories.
    pub host: Option<String>,
    pub port: u16,
    /// `user@host:path` rather than a URL.
    pub scp_like: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoUrlError {
    #[error(
        "the repository URL carries credentials; store them with `ckrv cloud credentials add` and name them with --credential"
    )]
    Credentials,
    #[error(
        "{0:?} is not a repository URL this service clones: use https://host/org/repo.git or ssh://git@host/org/repo.git (or git@host:org/repo.git)"
    )]
    Unsupported(String),
    #[error("the repository host {host} is {kind}; only public hosts can be cloned")]
    LocalAddress { host: String, kind: &'static str },
    #[error(
        "the repository URL's {part} begins with '-', which ssh would take for an option; name a plain user and host, e.g. ssh://git@host/org/repo.git or git@host:org/repo.git"
    )]
    OptionLike { part: &'static str },
}

/// Checks `raw` before anything connects. `allow_local` lifts the host and transport rules
/// (credentials and option-like users or hosts stay refused).
pub fn check(raw: &str, allow_local: bool) -> Result<RepoUrl, RepoUrlError> {
    let raw = raw.trim();
    let unsupported = || RepoUrlError::Unsupported(raw.to_string());
    if raw.is_empty() || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(unsupported());
    }
    if let Some((user, host)) = scp_like(raw) {
        if user.contains(':') {
            return Err(RepoUrlError::Credentials);
        }
        refuse_option("user", user)?;
        let repo = RepoUrl {
            transport: Transport::Ssh,
            host: Some(normalized_host(host, raw)?),
            port: 22,
            scp_like: true,
        };
        return host_allowed(repo, allow_local);
    }
    if raw.starts_with('-') {
        return Err(unsupported());
    }
    let Ok(url) = url::Url::parse(raw) else {
        return match allow_local && raw.starts_with('/') {
            true => Ok(local()),
            false => Err(unsupported()),
        };
    };
    if !url.username().is_empty() && url.scheme() != "ssh" || url.password().is_some() {
        return Err(RepoUrlError::Credentials);
    }
    let transport = match url.scheme() {
        "https" => Transport::Https,
        "ssh" => Transport::Ssh,
        "http" if allow_local => Transport::Http,
        "file" if allow_local => return Ok(local()),
        _ => return Err(unsupported()),
    };
    refuse_option("user", url.username())?;
    let host = match url.host() {
        // An `ssh://` URL's host is opaque to the URL parser (no special scheme): parse it
        // as the host of a special one, as https's is.
        Some(url::Host::Domain(name)) => normalized_host(name, raw)?,
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(unsupported()),
    };
    let repo = RepoUrl {
        transport,
        port: url.port_or_known_default().unwrap_or(match transport {
            Transport::Ssh => 22,
            _ => 443,
        }),
        host: Some(host),
        scp_like: false,
    };
    host_allowed(repo, allow_local)
}

/// `host` (of the URL `raw`) as the WHATWG host parser reads it for a special scheme:
/// percent-decoded, IDNA to ASCII, lowercase, IPv4 in any of its short or numeric forms
/// (`0x7f.1`, `127.1`, `2130706433`) as a dotted quad, IPv6 only in brackets and returned
/// without them.
fn normalized_host(host: &str, raw: &str) -> Result<String, RepoUrlError> {
    refuse_option("host", host)?;
    let parsed = url::Host::parse(host).map_err(|_| RepoUrlError::Unsupported(raw.to_string()))?;
    let host = match parsed {
        url::Host::Domain(name) => name,
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    refuse_option("host", &host)?;
    Ok(host)
}

/// Refuses a user or host that begins with '-', spelled out or percent-encoded: git hands
/// both to ssh, which would read them as an option (`-oProxyCommand=…`).
fn refuse_option(part: &'static str, value: &str) -> Result<(), RepoUrlError> {
    let encoded_dash = value
        .get(..3)
        .is_some_and(|start| start.eq_ignore_ascii_case("%2d"));
    if value.starts_with('-') || encoded_dash {
        return Err(RepoUrlError::OptionLike { part });
    }
    Ok(())
}

fn local() -> RepoUrl {
    RepoUrl {
        transport: Transport::Local,
        host: None,
        port: 0,
        scp_like: false,
    }
}

/// `user@host:path` (git's scp-like syntax): no scheme, a user before `@`, and a host ending at
/// the first `:` after it, with no `/` before the path.
fn scp_like(raw: &str) -> Option<(&str, &str)> {
    if raw.contains("://") {
        return None;
    }
    let (user, rest) = raw.split_once('@')?;
    let (host, _path) = rest.split_once(':')?;
    let plain = !user.is_empty() && !user.contains('/') && !host.is_empty() && !host.contains('/');
    plain.then_some((user, host))
}

fn host_allowed(repo: RepoUrl, allow_local: bool) -> Result<RepoUrl, RepoUrlError> {
    if allow_local {
        return Ok(repo);
    }
    let host = repo.host.clone().unwrap_or_default();
    // `localhost.` is `localhost`: a fully qualified name ends with the root's dot.
    let name = host.strip_suffix('.').unwrap_or(&host);
    let kind = match name.parse::<IpAddr>() {
        Ok(ip) => address_kind(ip),
        Err(_) if name == "localhost" || name.ends_with(".localhost") => Some("a loopback name"),
        Err(_) if !name.contains('.') => Some("not a public name (it has no domain)"),
        Err(_) => None,
    };
    match kind {
        Some(kind) => Err(RepoUrlError::LocalAddress { host, kind }),
        None => Ok(repo),
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn address_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_kind(v4),
            None => v6_kind(v6),
        },
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address (cloud metadata lives there)")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a reserved address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address")
    } else {
        None
    }
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private address (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a reserved address")
    } else {
        None
    }
}

/// `check` only parses: no name is resolved and nothing connects, so the private, link-local
/// and public addresses below are data, never reached.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_https_and_ssh_urls_pass() {
        let https = check("https://github.com/org/repo.git", false).unwrap();
        assert_eq!(https.transport, Transport::Https);
        assert_eq!(
            (https.host.as_deref(), https.port),
            (Some("github.com"), 443)
        );
        let ssh = check("ssh://git@GitHub.com:2222/org/repo.git", false).unwrap();
        assert_eq!((ssh.transport, ssh.port), (Transport::Ssh, 2222));
        assert_eq!(ssh.host.as_deref(), Some("github.com"));
        let scp = check("git@github.com:org/repo.git", false).unwrap();
        assert!(scp.scp_like);
        assert_eq!(scp.host.as_deref(), Some("github.com"));
        let plain = check("ssh://git@github.com/org/repo.git", false).unwrap();
        assert_eq!(
            (plain.host.as_deref(), plain.port),
            (Some("github.com"), 22)
        );
        let public = check("git@93.184.216.34:org/repo.git", false).unwrap();
        assert_eq!(public.host.as_deref(), Some("93.184.216.34"));
    }

    #[test]
    fn credentials_in_the_url_are_refused_even_for_local_development() {
        for url in [
            "https://user:ghp_token@github.com/org/repo.git",
            "https://ghp_token@github.com/org/repo.git",
            "ssh://git:secret@github.com/org/repo.git",
            "git:secret@github.com:org/repo.git",
        ] {
            assert_eq!(check(url, false), Err(RepoUrlError::Credentials), "{url}");
            assert_eq!(check(url, true), Err(RepoUrlError::Credentials), "{url}");
        }
    }

    #[test]
    fn other_transports_and_local_paths_are_refused_unless_allowed() {
        for url in [
            "file:///etc",
            "/srv/repos/app.git",
            "../app.git",
            "ext::sh -c touch% /tmp/pwned",
            "ext::ssh",
            "fd::17",
            "git://github.com/org/repo.git",
            "http://github.com/org/repo.git",
            "--upload-pack=touch /tmp/x",
            "mailto:dev@example.com",
            "",
        ] {
            assert!(
                matches!(check(url, false), Err(RepoUrlError::Unsupported(_))),
                "{url}"
            );
        }
        assert_eq!(
            check("file:///srv/app.git", true).unwrap().transport,
            Transport::Local
        );
        assert_eq!(
            check("/srv/app.git", true).unwrap().transport,
            Transport::Local
        );
        assert_eq!(
            check("http://127.0.0.1:9/app.git", true).unwrap().transport,
            Transport::Http
        );
        assert!(check("ext::sh -c x", true).is_err());
    }

    #[test]
    fn internal_hosts_are_refused_by_address_and_by_name() {
        for url in [
            "https://127.0.0.1/x.git",
            "https://localhost/x.git",
            "https://localhost./x.git",
            "https://api.localhost./x.git",
            "https://intranet./x.git",
            "https://0x7f.1/x.git",
            "https://2130706433/x.git",
            "https://[::1]/x.git",
            "https://[::ffff:127.0.0.1]/x.git",
            "https://10.1.2.3/x.git",
            "https://172.16.0.1/x.git",
            "https://192.168.1.1/x.git",
            "https://100.64.0.1/x.git",
            "https://169.254.169.254/latest/meta-data",
            "https://[fe80::1]/x.git",
            "https://[fd00:ec2::254]/x.git",
            "https://0.0.0.0/x.git",
            "https://intranet/x.git",
            "git@10.0.0.5:org/repo.git",
        ] {
            assert!(
                matches!(check(url, false), Err(RepoUrlError::LocalAddress { .. })),
                "{url}: {:?}",
                check(url, false)
            );
            assert!(
                check(url, true).is_ok(),
                "{url} is allowed for local development"
            );
        }
    }

    #[test]
    fn ssh_and_scp_like_hosts_are_read_as_https_hosts_are() {
        for url in [
            "ssh://git@0x7f.1/org/repo.git",
            "ssh://git@127.1/org/repo.git",
            "ssh://git@2130706433/org/repo.git",
            "ssh://git@0177.0.0.1/org/repo.git",
            "ssh://git@%31%32%37.0.0.1/org/repo.git",
            "ssh://git@LOCALHOST/org/repo.git",
            "ssh://git@[::1]/org/repo.git",
            "ssh://git@0xa9fea9fe/latest",
            "git@0x7f.1:org/repo.git",
            "git@127.1:org/repo.git",
            "git@2130706433:org/repo.git",
            "git@Localhost.:org/repo.git",
            "git@0xa9fea9fe:latest",
        ] {
            assert!(
                matches!(check(url, false), Err(RepoUrlError::LocalAddress { .. })),
                "{url}: {:?}",
                check(url, false)
            );
        }
        // The host the worker resolves and pins is the parsed one.
        for url in ["ssh://git@127.1/org/repo.git", "git@0x7f.1:org/repo.git"] {
            let repo = check(url, true).unwrap();
            assert_eq!(repo.host.as_deref(), Some("127.0.0.1"), "{url}");
        }
        let idn = check("git@Bücher.example.com:org/repo.git", false).unwrap();
        assert_eq!(idn.host.as_deref(), Some("xn--bcher-kva.example.com"));
        // What is no host at all (ssh would split `a@b@host` at its last `@`).
        for url in [
            "git@a@github.com:org/repo.git",
            "git@[:org/repo.git",
            "git@github.com%:org/repo.git",
        ] {
            assert!(
                matches!(check(url, true), Err(RepoUrlError::Unsupported(_))),
                "{url}: {:?}",
                check(url, true)
            );
        }
    }

    #[test]
    fn users_and_hosts_that_ssh_would_read_as_options_are_refused() {
        for (url, part) in [
            (
                "ssh://-oProxyCommand=touch.pwned@github.com/org/repo.git",
                "user",
            ),
            ("ssh://%2doProxyCommand=x@github.com/org/repo.git", "user"),
            ("-oProxyCommand=touch.pwned@github.com:org/repo.git", "user"),
            ("ssh://git@-oProxyCommand=touch.pwned/org/repo.git", "host"),
            ("ssh://-oProxyCommand=touch.pwned/org/repo.git", "host"),
            (
                "ssh://git@%2DoProxyCommand=x.example.com/org/repo.git",
                "host",
            ),
            ("git@-oProxyCommand=touch.pwned:org/repo.git", "host"),
            ("git@%2doProxyCommand=touch.pwned:org/repo.git", "host"),
        ] {
            for allow_local in [false, true] {
                assert_eq!(
                    check(url, allow_local),
                    Err(RepoUrlError::OptionLike { part }),
                    "{url}"
                );
            }
        }
        let message = check("git@-oProxyCommand=x:r.git", false)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("host begins with '-'") && message.contains("git@host:org/repo.git"),
            "{message}"
        );
        // A '-' inside a user or host is nothing special.
        assert!(check("ssh://git-bot@git-host.example.com/org/repo.git", false).is_ok());
        assert!(check("deploy-bot@git-host.example.com:org/repo.git", false).is_ok());
    }

    #[test]
    fn addresses_are_classified() {
        assert_eq!(address_kind("93.184.216.34".parse().unwrap()), None);
        assert_eq!(address_kind("2606:2800:220:1::1".parse().unwrap()), None);
        assert!(address_kind("127.9.9.9".parse().unwrap()).is_some());
        assert!(address_kind("::ffff:10.0.0.1".parse().unwrap()).is_some());
        assert!(
            address_kind("169.254.169.254".parse().unwrap())
                .unwrap()
                .contains("metadata")
        );
    }
}
