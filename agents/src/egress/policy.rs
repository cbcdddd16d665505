//! An egress policy, the allowlist a job gets from it, and the checks the proxy asks it.
//!
//! One type parses every policy (an agent definition's `egress`, the operator's setting, a
//! spec's request) and one type answers every question about a destination, so no caller
//! re-derives what "allowed" means.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The package registries the `registries` preset allows (each on ports 443 and 80), besides
/// the model gateway: npm, PyPI, crates.io, the Go module proxy and checksum database, Maven
/// Central and RubyGems.
pub const REGISTRIES: &[&str] = &[
    "registry.npmjs.org",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "proxy.golang.org",
    "sum.golang.org",
    "repo.maven.apache.org",
    "repo1.maven.org",
    "rubygems.org",
    "index.rubygems.org",
];

/// What a job's agent may connect to. Every policy but `none` also allows the model gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Policy {
    /// Nothing: the sandbox has no network at all.
    #[default]
    None,
    /// Only the model gateway.
    Model,
    /// The gateway and the package registries in [`REGISTRIES`].
    Registries,
    /// The gateway and these entries.
    List(Vec<Entry>),
    /// The inner policy (`POLICY;read-only`), limited to requests that only read: GET, HEAD
    /// and OPTIONS, over HTTP and (read by the proxy) HTTPS; the gateway takes any. Never
    /// wraps `none` or another `ReadOnly`.
    ReadOnly(Box<Policy>),
}

/// The modifier that makes a policy read-only, after a `;`.
const READ_ONLY: &str = "read-only";

/// Accepted forms, said in every parse error.
const ACCEPTED: &str = "a policy is `none`, `model`, `registries` or a comma-separated list of \
                        `host`, `host:port`, `*.domain` or IP address entries, optionally \
                        followed by `;read-only`";

/// A policy that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("empty egress policy: {ACCEPTED}")]
    Empty,
    #[error("unknown egress modifier `{0}` (the one modifier is `;read-only`); {ACCEPTED}")]
    Modifier(String),
    #[error("bad egress entry `{entry}`: {why}; {ACCEPTED}")]
    Entry { entry: String, why: &'static str },
    #[error("bad model gateway URL `{url}`: {why}")]
    Gateway { url: String, why: &'static str },
}

/// A spec asking for more than the operator allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the spec's egress `{entry}` is not allowed by the operator's policy `{operator}`: a spec may narrow the operator's egress policy, never widen it"
)]
pub struct NarrowError {
    pub entry: String,
    pub operator: String,
}

impl Policy {
    /// A job's policy: what its spec asks for (`requested`), which the operator's policy
    /// (`operator`, `ckrv-api serve --egress-allow`) or else the agent's own (`agent`) must
    /// allow; without a request, that policy itself.
    pub fn for_job(
        agent: &Policy,
        operator: Option<&Policy>,
        requested: Option<&Policy>,
    ) -> Result<Policy, NarrowError> {
        let ceiling = operator.unwrap_or(agent);
        match requested {
            Some(requested) => ceiling.narrow(requested),
            None => Ok(ceiling.clone()),
        }
    }

    /// Whether the agent gets any network (through the proxy) at all.
    pub fn allows_network(&self) -> bool {
        match self {
            Policy::ReadOnly(inner) => inner.allows_network(),
            policy => *policy != Policy::None,
        }
    }

    /// This policy limited to requests that only read; `none` stays `none`.
    pub fn into_read_only(self) -> Policy {
        match self {
            Policy::None | Policy::ReadOnly(_) => self,
            policy => Policy::ReadOnly(Box::new(policy)),
        }
    }

    /// Whether only requests that read go through (see [`Policy::ReadOnly`]).
    pub fn is_read_only(&self) -> bool {
        matches!(self, Policy::ReadOnly(_))
    }

    /// The entries besides the gateway.
    pub fn entries(&self) -> Vec<Entry> {
        match self {
            Policy::ReadOnly(inner) => inner.entries(),
            Policy::None | Policy::Model => Vec::new(),
            Policy::Registries => REGISTRIES
                .iter()
                .map(|host| Entry {
                    host: Host::Name((*host).to_string()),
                    port: None,
                })
                .collect(),
            Policy::List(entries) => entries.clone(),
        }
    }

    /// `requested` (a spec's), if this policy (the operator's) allows all of it: a spec may
    /// narrow the operator's policy, never widen it. The error names the first entry that is
    /// not allowed.
    pub fn narrow(&self, requested: &Policy) -> Result<Policy, NarrowError> {
        if !requested.allows_network() {
            return Ok(Policy::None);
        }
        let refuse = |entry: String| NarrowError {
            entry,
            operator: self.to_string(),
        };
        if !self.allows_network() || (self.is_read_only() && !requested.is_read_only()) {
            return Err(refuse(requested.to_string()));
        }
        let allowed = self.entries();
        for entry in requested.entries() {
            if !allowed.iter().any(|a| a.covers(&entry)) {
                return Err(refuse(entry.to_string()));
            }
        }
        Ok(requested.clone())
    }

    /// The allowlist a job with this policy gets, the gateway (`None` when there is none yet)
    /// allowed even on a local address; no allowlist at all for `none`.
    pub fn allowlist(&self, gateway: Option<Entry>) -> Option<Allowlist> {
        if !self.allows_network() {
            return None;
        }
        let mut allowlist = Allowlist {
            policy: self.to_string(),
            rules: self
                .entries()
                .into_iter()
                .map(|entry| Rule {
                    entry,
                    local: false,
                    gateway: false,
                })
                .collect(),
            read_only: self.is_read_only(),
        };
        if let Some(gateway) = gateway {
            allowlist.rules.push(Rule {
                entry: gateway,
                local: true,
                gateway: true,
            });
        }
        Some(allowlist)
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some((policy, modifier)) = text.split_once(';') {
            return match modifier.trim() {
                READ_ONLY => Ok(policy.parse::<Policy>()?.into_read_only()),
                other => Err(PolicyError::Modifier(other.to_string())),
            };
        }
        match text.trim() {
            "" => Err(PolicyError::Empty),
            "none" => Ok(Policy::None),
            "model" => Ok(Policy::Model),
            "registries" => Ok(Policy::Registries),
            list => list
                .split(',')
                .map(|entry| entry.parse())
                .collect::<Result<_, _>>()
                .map(Policy::List),
        }
    }
}

impl TryFrom<String> for Policy {
    type Error = PolicyError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::None => f.write_str("none"),
            Policy::Model => f.write_str("model"),
            Policy::Registries => f.write_str("registries"),
            Policy::ReadOnly(inner) => write!(f, "{inner};{READ_ONLY}"),
            Policy::List(entries) => {
                let entries: Vec<String> = entries.iter().map(Entry::to_string).collect();
                f.write_str(&entries.join(","))
            }
        }
    }
}

/// One destination: a host name, every name under a domain, or an address, on one port or
/// (when none is given) on 443 and 80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Exactly this name (lower case, no trailing dot).
    Name(String),
    /// `*.domain`: any name ending in `.domain`, not `domain` itself.
    Wildcard(String),
    Ip(IpAddr),
}

/// The ports an entry without one allows.
const DEFAULT_PORTS: [u16; 2] = [443, 80];

impl Entry {
    /// The origin (host and port) of the model gateway's URL, `http://host[:port]/...` or
    /// `https://...`, as an allowlist entry.
    pub fn origin_of(url: &str) -> Result<Entry, PolicyError> {
        let bad = |why| PolicyError::Gateway {
            url: url.to_string(),
            why,
        };
        let (rest, default_port) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (rest, 80)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (rest, 443)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(bad("it must not carry credentials"));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| bad("its host is not valid"))?;
        let host = parse_host(host).map_err(|_| bad("its host is not valid"))?;
        if matches!(host, Host::Wildcard(_)) {
            return Err(bad("its host is not valid"));
        }
        Ok(Entry {
            host,
            port: Some(port.unwrap_or(default_port)),
        })
    }

    /// Whether a connection to `host` (normalized) on `port` matches this entry.
    fn matches(&self, host: &Target, port: u16) -> bool {
        let port_ok = match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        };
        port_ok
            && match (&self.host, host) {
                (Host::Name(name), Target::Name(host)) => name == host,
                (Host::Wildcard(domain), Target::Name(host)) => under(host, domain),
                (Host::Ip(ip), Target::Ip(host)) => ip == host,
                _ => false,
            }
    }

    /// Whether everything `other` allows, this entry allows too.
    fn covers(&self, other: &Entry) -> bool {
        let ports_ok = match (self.port, other.port) {
            (None, None) => true,
            (None, Some(p)) => DEFAULT_PORTS.contains(&p),
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        ports_ok
            && match (&self.host, &other.host) {
                (Host::Name(a), Host::Name(b)) => a == b,
                (Host::Wildcard(domain), Host::Name(name)) => under(name, domain),
                (Host::Wildcard(a), Host::Wildcard(b)) => a == b || under(b, a),
                (Host::Ip(a), Host::Ip(b)) => a == b,
                _ => false,
            }
    }
}

impl FromStr for Entry {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let entry = text.trim();
        let bad = |why| PolicyError::Entry {
            entry: entry.to_string(),
            why,
        };
        if entry.is_empty() {
            return Err(bad("it is empty"));
        }
        if entry.contains("://") || entry.contains('/') {
            return Err(bad("give a host, not a URL"));
        }
        if matches!(entry, "none" | "model" | "registries") {
            return Err(bad("a preset is the whole policy, not an entry of a list"));
        }
        let (host, port) =
            split_host_port(entry).ok_or_else(|| bad("its host or port is not valid"))?;
        let host = parse_host(host).map_err(bad)?;
        Ok(Entry { host, port })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Name(name) => name.clone(),
            Host::Wildcard(domain) => format!("*.{domain}"),
            Host::Ip(IpAddr::V6(ip)) if self.port.is_some() => format!("[{ip}]"),
            Host::Ip(ip) => ip.to_string(),
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

/// `name` is under `domain` on a label boundary: `a.npmjs.org` is under `npmjs.org`,
/// `evilnpmjs.org` is not, nor is `npmjs.org` itself.
fn under(name: &str, domain: &str) -> bool {
    name.len() > domain.len()
        && name.ends_with(domain)
        && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
}

pub(crate) fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address, split; `None` for a bad
/// port. The host is not checked here.
pub(crate) fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(parse_port(after.strip_prefix(':')?)?))),
        };
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Some((text, None));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(parse_port(port)?))),
        None => Some((text, None)),
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&port| port != 0)
}

/// A host as an entry gives it: an address, `*.domain` or a name.
fn parse_host(host: &str) -> Result<Host, &'static str> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if let Some(domain) = host.strip_prefix("*.") {
        check_name(domain)?;
        if !domain.contains('.') {
            return Err("a wildcard needs a domain of two labels or more, as in `*.npmjs.org`");
        }
        return Ok(Host::Wildcard(domain.to_string()));
    }
    check_name(host)?;
    Ok(Host::Name(host.to_string()))
}

/// A DNS name: labels of letters, digits, `-` and `_`, none empty or longer than 63.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.contains('*') {
        return Err("`*` may only start an entry, as in `*.npmjs.org`");
    }
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if labels_ok {
        Ok(())
    } else {
        Err("it is not a host name or an IP address")
    }
}

/// A destination as a client names it, normalized.
enum Target {
    Name(String),
    Ip(IpAddr),
}

impl Target {
    fn of(host: &str) -> Target {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match host.parse() {
            Ok(ip) => Target::Ip(ip),
            Err(_) => {
                let host = host.to_ascii_lowercase();
                Target::Name(host.strip_suffix('.').unwrap_or(&host).to_string())
            }
        }
    }
}

/// The concrete set of destinations one job may reach: its policy's entries and the model
/// gateway, each on its ports. Names must resolve to public addresses unless their entry is
/// marked local (the gateway is), so an allowed name cannot be pointed at the worker's own
/// services (DNS rebinding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    /// The policy's name or text, for refusals.
    policy: String,
    rules: Vec<Rule>,
    read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    entry: Entry,
    /// Reachable on loopback and private addresses too.
    local: bool,
    /// The model gateway: every method, even under read-only (the agent's model calls are
    /// POSTs), which the platform's own service then checks.
    gateway: bool,
}

impl Allowlist {
    /// Nothing at all, for a job of `policy` (`none`) whose agent asks a proxy all the same:
    /// each attempt is refused, and seen.
    pub fn refusing_all(policy: &Policy) -> Self {
        Allowlist {
            policy: policy.to_string(),
            rules: Vec::new(),
            read_only: false,
        }
    }

    /// Adds `entry`, reachable on any address, loopback and private ones included: the model
    /// gateway, which may listen on the worker's loopback, or a test's stand-in.
    pub fn allow_local(mut self, entry: Entry) -> Self {
        self.rules.push(Rule {
            entry,
            local: true,
            gateway: false,
        });
        self
    }

    /// Marks the entries that one of `internal` covers (the operator's `--egress-internal`:
    /// hosts it runs inside its network, such as a package mirror) reachable on loopback and
    /// private addresses. Entries it does not cover stay public-only: a wildcard rule is not
    /// made internal by one name under it.
    pub fn with_internal(mut self, internal: &[Entry]) -> Self {
        for rule in &mut self.rules {
            if internal.iter().any(|entry| entry.covers(&rule.entry)) {
                rule.local = true;
            }
        }
        self
    }

    /// Only requests that read go through (see [`Policy::ReadOnly`]), except to the gateway.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The loopback addresses (with a port) of the entries marked local, `localhost` as
    /// 127.0.0.1: services of the worker's, such as the gateway, whose URLs the bridge makes
    /// work inside the sandbox too.
    pub fn loopback_forwards(&self) -> Vec<std::net::SocketAddr> {
        self.rules
            .iter()
            .filter(|rule| rule.local)
            .filter_map(|rule| {
                let ip = match &rule.entry.host {
                    Host::Ip(ip) if ip.is_loopback() => *ip,
                    Host::Name(name) if name == "localhost" => Ipv4Addr::LOCALHOST.into(),
                    _ => return None,
                };
                Some(std::net::SocketAddr::new(ip, rule.entry.port?))
            })
            .collect()
    }

    /// The policy this allowlist came from, as refusals name it.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// Whether `host` (a name or an address, IPv6 in brackets or not) on `port` is allowed,
    /// before its addresses are known.
    pub fn check(&self, host: &str, port: u16) -> Result<(), Refusal> {
        self.rule(host, port).map(|_| ())
    }

    /// The first rule that allows `host` on `port`.
    pub(crate) fn rule(&self, host: &str, port: u16) -> Result<&Rule, Refusal> {
        let target = Target::of(host);
        self.rules
            .iter()
            .find(|rule| rule.entry.matches(&target, port))
            .ok_or_else(|| {
                Refusal::new(
                    host,
                    port,
                    RefusalReason::NotAllowed {
                        policy: self.policy.clone(),
                    },
                )
            })
    }

    /// Whether a request with `method` and a body of `body` bytes (`None`: of unknown
    /// length) to `host:port`, which `rule` allows, may go through: under read-only, only GET,
    /// HEAD and OPTIONS without a body, so nothing is written; any request to the gateway.
    pub(crate) fn check_request(
        &self,
        rule: &Rule,
        method: &str,
        body: Option<u64>,
        host: &str,
        port: u16,
    ) -> Result<(), Refusal> {
        if !self.read_only || rule.gateway {
            return Ok(());
        }
        let method = method.to_string();
        if !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
            return Err(Refusal::new(host, port, RefusalReason::Method { method }));
        }
        if body != Some(0) {
            return Err(Refusal::new(host, port, RefusalReason::Body { method }));
        }
        Ok(())
    }

    /// Whether a tunnel (`CONNECT`) to a host `rule` allows must be read rather than passed
    /// through: under read-only, every tunnel but the gateway's, so each request's method is
    /// checked.
    pub(crate) fn reads_tunnel(&self, rule: &Rule) -> bool {
        self.read_only && !rule.gateway
    }
}

impl Rule {
    /// Whether `address`, which the rule's host resolved to, may be connected to.
    pub(crate) fn check_address(
        &self,
        host: &str,
        port: u16,
        address: IpAddr,
    ) -> Result<(), Refusal> {
        match local_range(address) {
            Some(range) if !self.local => Err(Refusal::new(
                host,
                port,
                RefusalReason::Address { address, range },
            )),
            _ => Ok(()),
        }
    }
}

/// The non-public range `address` is in, if any: what an allowed name must not resolve to.
pub fn local_range(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(ip) => local_range_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => local_range_v4(v4),
            None => {
                let first = ip.segments()[0];
                if ip.is_unspecified() {
                    Some("unspecified")
                } else if ip.is_loopback() {
                    Some("loopback")
                } else if first & 0xfe00 == 0xfc00 {
                    Some("unique-local")
                } else if first & 0xffc0 == 0xfe80 {
                    Some("link-local")
                } else if ip.is_multicast() {
                    Some("multicast")
                } else {
                    None
                }
            }
        },
    }
}

fn local_range_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("CGNAT")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some("multicast or broadcast")
    } else {
        None
    }
}

/// A connection the proxy refused: one a line in the job's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refusal {
    pub host: String,
    pub port: u16,
    pub reason: RefusalReason,
}

impl Refusal {
    pub(crate) fn new(host: &str, port: u16, reason: RefusalReason) -> Self {
        Refusal {
            host: host.to_string(),
            port,
            reason,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.as_str();
        let bracketed = host.contains(':') && !host.starts_with('[');
        let (open, close) = if bracketed { ("[", "]") } else { ("", "") };
        write!(
            f,
            "Connection blocked by network allowlist: {open}{host}{close}:{} ({})",
            self.port, self.reason
        )
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    #[error("not in the job's allowlist, policy `{policy}`")]
    NotAllowed { policy: String },
    #[error("method {method} not allowed: the allowlist is read-only")]
    Method { method: String },
    #[error("a {method} with a body not allowed: the allowlist is read-only")]
    Body { method: String },
    #[error("address {address} refused: {range}")]
    Address {
        address: IpAddr,
        range: &'static str,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(text: &str) -> Policy {
        text.parse().unwrap()
    }

    #[test]
    fn presets_and_lists_parse() {
        assert_eq!(policy("none"), Policy::None);
        assert_eq!(policy(" model "), Policy::Model);
        assert_eq!(policy("registries"), Policy::Registries);
        assert_eq!(Policy::default(), Policy::None);
        let list = policy("example.com, *.npmjs.org,10.0.0.1:8080,[::1]:3000,::1,Host.Example.:81");
        assert_eq!(
            list.to_string(),
            "example.com,*.npmjs.org,10.0.0.1:8080,[::1]:3000,::1,host.example:81"
        );
        assert_eq!(policy(&list.to_string()), list, "Display parses back");
        assert_eq!(Policy::Registries.entries().len(), REGISTRIES.len());
        assert!(!Policy::None.allows_network() && Policy::Model.allows_network());
    }

    #[test]
    fn bad_policies_name_the_bad_entry_and_what_is_accepted() {
        for (text, entry) in [
            (
                "example.com,https://evil.example/x",
                "https://evil.example/x",
            ),
            ("example.com:0", "example.com:0"),
            ("example.com:99999", "example.com:99999"),
            ("example.com:", "example.com:"),
            ("ex ample.com", "ex ample.com"),
            ("*.com", "*.com"),
            ("a.*.example.com", "a.*.example.com"),
            ("*", "*"),
            ("example.com,,other.com", ""),
            ("model,example.com", "model"),
            ("[::1", "[::1"),
        ] {
            let err = text.parse::<Policy>().unwrap_err();
            match &err {
                PolicyError::Entry { entry: named, .. } => assert_eq!(named, entry, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{entry}`"))
                    && message.contains("`none`, `model`, `registries`"),
                "{message}"
            );
        }
        assert_eq!("  ".parse::<Policy>().unwrap_err(), PolicyError::Empty);
    }

    #[test]
    fn wildcards_match_on_a_label_boundary_and_ports_default_to_443_and_80() {
        let list = policy("*.npmjs.org,pypi.org,crates.io:8443,127.0.0.1:9000,[::1]:9001")
            .allowlist(None)
            .unwrap();
        assert!(list.check("registry.npmjs.org", 443).is_ok());
        assert!(list.check("a.b.NPMJS.org.", 80).is_ok());
        assert!(list.check("evilnpmjs.org", 443).is_err());
        assert!(
            list.check("npmjs.org", 443).is_err(),
            "not the domain itself"
        );
        assert!(list.check("npmjs.org.evil.com", 443).is_err());
        assert!(list.check("pypi.org", 443).is_ok() && list.check("pypi.org", 80).is_ok());
        assert!(list.check("pypi.org", 8080).is_err());
        assert!(list.check("sub.pypi.org", 443).is_err());
        assert!(list.check("crates.io", 8443).is_ok() && list.check("crates.io", 443).is_err());
        assert!(list.check("127.0.0.1", 9000).is_ok() && list.check("localhost", 9000).is_err());
        assert!(list.check("[::1]", 9001).is_ok() && list.check("::1", 9001).is_ok());
        let refusal = list.check("evilnpmjs.org", 443).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            format!(
                "Connection blocked by network allowlist: evilnpmjs.org:443 (not in the job's allowlist, policy `{}`)",
                list.policy()
            )
        );
    }

    #[test]
    fn the_gateway_is_in_every_allowlist_but_none() {
        let gateway = Entry::origin_of("http://127.0.0.1:4000/v1/gateway/anthropic").unwrap();
        assert_eq!(gateway.to_string(), "127.0.0.1:4000");
        assert!(Policy::None.allowlist(Some(gateway.clone())).is_none());
        let model = Policy::Model.allowlist(Some(gateway.clone())).unwrap();
        assert!(model.check("127.0.0.1", 4000).is_ok());
        assert!(model.check("registry.npmjs.org", 443).is_err());
        let registries = Policy::Registries.allowlist(Some(gateway)).unwrap();
        assert!(registries.check("127.0.0.1", 4000).is_ok());
        assert!(registries.check("index.crates.io", 443).is_ok());
        assert_eq!(
            Entry::origin_of("HTTPS://gw.example/x")
                .unwrap()
                .to_string(),
            "gw.example:443"
        );
        for bad in [
            "ftp://x",
            "http://user:pw@x/",
            "http://*.x.com/",
            "http://x:0/",
        ] {
            let err = Entry::origin_of(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_jobs_policy_is_its_specs_within_the_operators_or_else_its_agents() {
        let model = Policy::Model;
        let registries: Policy = "registries".parse().unwrap();
        let npm: Policy = "*.npmjs.org".parse().unwrap();
        // Nothing asked, nothing set: the agent's own.
        assert_eq!(Policy::for_job(&model, None, None), Ok(Policy::Model));
        // The operator's policy replaces the agent's.
        assert_eq!(
            Policy::for_job(&model, Some(&registries), None),
            Ok(registries.clone())
        );
        // A spec narrows within it, to none as well.
        let narrowed: Policy = "registry.npmjs.org".parse().unwrap();
        assert_eq!(
            Policy::for_job(&model, Some(&registries), Some(&narrowed)),
            Ok(narrowed.clone())
        );
        assert_eq!(
            Policy::for_job(&model, Some(&npm), Some(&narrowed)),
            Ok(narrowed.clone())
        );
        assert_eq!(
            Policy::for_job(&model, Some(&registries), Some(&Policy::None)),
            Ok(Policy::None)
        );
        // Never past it: not past the agent's own when the operator set nothing.
        let error = Policy::for_job(&model, None, Some(&npm)).unwrap_err();
        assert_eq!(error.entry, "*.npmjs.org");
        assert_eq!(error.operator, "model");
        assert!(Policy::for_job(&Policy::None, None, Some(&model)).is_err());
    }

    #[test]
    fn a_spec_may_narrow_the_operators_policy_but_never_widen_it() {
        let operator = policy("*.npmjs.org,pypi.org,files.pythonhosted.org:443");
        let narrowed = operator
            .narrow(&policy("registry.npmjs.org,pypi.org:443,*.a.npmjs.org"))
            .unwrap();
        assert_eq!(
            narrowed.to_string(),
            "registry.npmjs.org,pypi.org:443,*.a.npmjs.org"
        );
        assert_eq!(operator.narrow(&Policy::Model).unwrap(), Policy::Model);
        assert_eq!(operator.narrow(&Policy::None).unwrap(), Policy::None);
        assert_eq!(
            Policy::Registries
                .narrow(&policy("crates.io,pypi.org"))
                .unwrap(),
            policy("crates.io,pypi.org")
        );
        for (requested, entry) in [
            ("pypi.org,evil.example", "evil.example"),
            ("evilnpmjs.org", "evilnpmjs.org"),
            ("*.npmjs.org.evil.com", "*.npmjs.org.evil.com"),
            ("pypi.org:8080", "pypi.org:8080"),
            ("files.pythonhosted.org", "files.pythonhosted.org"),
        ] {
            let err = operator.narrow(&policy(requested)).unwrap_err();
            assert_eq!(err.entry, entry, "{requested}");
            assert!(err.to_string().contains(&format!("`{entry}`")), "{err}");
        }
        let err = operator.narrow(&Policy::Registries).unwrap_err();
        assert_eq!(
            err.entry, "files.pythonhosted.org",
            "443 only does not cover 80"
        );
        let err = Policy::None.narrow(&Policy::Model).unwrap_err();
        assert_eq!(
            (err.entry.as_str(), err.operator.as_str()),
            ("model", "none")
        );
    }

    #[test]
    fn only_entries_the_operator_names_internal_may_reach_internal_addresses() {
        let internal: Vec<Entry> = ["mirror.localhost:8081", "127.0.0.1:9000"]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect();
        let list =
            policy("mirror.localhost:8081,127.0.0.1:9000,other.localhost:8081,*.apps.localhost")
                .allowlist(None)
                .unwrap()
                .with_internal(&internal);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let reach = |host: &str, port: u16| {
            list.rule(host, port)
                .unwrap()
                .check_address(host, port, loopback)
        };
        assert!(reach("mirror.localhost", 8081).is_ok());
        assert!(reach("127.0.0.1", 9000).is_ok());
        // Another name on the same port, and any name the wildcard allows, stay public-only.
        assert!(reach("other.localhost", 8081).is_err());
        assert!(reach("x.apps.localhost", 443).is_err());
        assert_eq!(
            list.loopback_forwards()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["127.0.0.1:9000"]
        );
        // An internal entry the policy does not allow is not added.
        let list = policy("example.com")
            .allowlist(None)
            .unwrap()
            .with_internal(&internal);
        assert!(list.check("mirror.localhost", 8081).is_err());
    }

    #[test]
    fn names_must_resolve_to_public_addresses_unless_their_entry_is_local() {
        let list = policy("example.com")
            .allowlist(Some(Entry::origin_of("http://localhost:4000/").unwrap()))
            .unwrap();
        let public = list.rule("example.com", 443).unwrap();
        for (address, range) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "CGNAT"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(
                public
                    .check_address("example.com", 443, address)
                    .unwrap_err()
                    .reason,
                RefusalReason::Address { address, range },
                "{address}"
            );
        }
        assert!(
            public
                .check_address("example.com", 443, "93.184.216.34".parse().unwrap())
                .is_ok()
        );
        assert!(
            public
                .check_address("example.com", 443, "2606:4700::1".parse().unwrap())
                .is_ok()
        );
        let gateway = list.rule("localhost", 4000).unwrap();
        assert!(
            gateway
                .check_address("localhost", 4000, "127.0.0.1".parse().unwrap())
                .is_ok()
        );
        let list = list
            .allow_local("[::1]:4001".parse().unwrap())
            .allow_local("10.0.0.1:4002".parse().unwrap())
            .allow_local("127.0.0.2".parse().unwrap());
        let forwards: Vec<String> = list
            .loopback_forwards()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            forwards,
            ["127.0.0.1:4000", "[::1]:4001"],
            "local, loopback, with a port"
        );
    }

    #[test]
    fn read_only_refuses_methods_that_write_and_reads_tunnels_but_not_the_gateways() {
        let gateway = Entry::origin_of("http://127.0.0.1:8080/").unwrap();
        let list = policy("example.com")
            .allowlist(Some(gateway.clone()))
            .unwrap();
        let host = list.rule("example.com", 80).unwrap();
        assert!(
            list.check_request(host, "POST", Some(6), "example.com", 80)
                .is_ok()
        );
        assert!(!list.reads_tunnel(host));

        let list = policy("example.com;read-only")
            .allowlist(Some(gateway))
            .unwrap();
        assert!(list.is_read_only());
        let host = list.rule("example.com", 80).unwrap();
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert!(
                list.check_request(host, method, Some(0), "example.com", 80)
                    .is_ok()
            );
        }
        let refused = |method, body| {
            list.check_request(host, method, body, "example.com", 80)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused("POST", Some(0)),
            "Connection blocked by network allowlist: example.com:80 (method POST not allowed: the allowlist is read-only)"
        );
        // Nor may a read carry what it could write: a body, of a known length or not.
        for body in [Some(6), None] {
            assert_eq!(
                refused("GET", body),
                "Connection blocked by network allowlist: example.com:80 (a GET with a body not allowed: the allowlist is read-only)"
            );
        }
        assert!(
            list.reads_tunnel(host),
            "its requests are read, to check their methods"
        );
        // The agent's model calls are POSTs, often through a tunnel.
        let gateway = list.rule("127.0.0.1", 8080).unwrap();
        assert!(
            list.check_request(gateway, "POST", None, "127.0.0.1", 8080)
                .is_ok()
        );
        assert!(!list.reads_tunnel(gateway));
    }

    #[test]
    fn read_only_is_a_modifier_a_spec_may_add_but_never_drop() {
        let read_only = policy(" registries ; read-only ");
        assert_eq!(read_only, Policy::Registries.into_read_only());
        assert_eq!(read_only.to_string(), "registries;read-only");
        assert_eq!(
            policy(&read_only.to_string()),
            read_only,
            "Display parses back"
        );
        assert_eq!(read_only.entries(), Policy::Registries.entries());
        assert!(read_only.allows_network() && read_only.is_read_only());
        assert!(!Policy::Registries.is_read_only());
        assert_eq!(policy("none;read-only"), Policy::None);
        assert_eq!(read_only.clone().into_read_only(), read_only, "never twice");
        assert_eq!(
            policy("model;read-only")
                .allowlist(None)
                .map(|l| l.is_read_only()),
            Some(true)
        );

        let err = "registries;read-write".parse::<Policy>().unwrap_err();
        assert_eq!(err, PolicyError::Modifier("read-write".into()));
        assert!(err.to_string().contains("`;read-only`"), "{err}");
        assert!("registries;read-only;read-only".parse::<Policy>().is_err());
        assert_eq!(
            ";read-only".parse::<Policy>().unwrap_err(),
            PolicyError::Empty
        );

        // The operator's read-only holds for every spec; a spec may add it.
        let narrowed = read_only.narrow(&policy("pypi.org;read-only")).unwrap();
        assert_eq!(narrowed.to_string(), "pypi.org;read-only");
        let widened = read_only.narrow(&policy("pypi.org")).unwrap_err();
        assert_eq!(widened.entry, "pypi.org");
        assert_eq!(widened.operator, "registries;read-only");
        assert_eq!(
            Policy::Registries
                .narrow(&policy("pypi.org;read-only"))
                .unwrap(),
            policy("pypi.org;read-only")
        );
        assert!(read_only.narrow(&policy("example.com;read-only")).is_err());
        assert_eq!(read_only.narrow(&Policy::None).unwrap(), Policy::None);
    }
}
