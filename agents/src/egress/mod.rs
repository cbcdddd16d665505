//! Where an agent's sandbox may connect to: the egress allowlist (issue #21).
//!
//! A sandboxed agent has no network of its own. When its job allows egress, the only way out is
//! an HTTP proxy the worker runs on a Unix socket, bound into the sandbox, which checks every
//! connection against the job's [`Allowlist`] and reports each refusal. This module owns the
//! three parts: the policy and its allowlist ([`policy`]: parsing, matching, narrowing), the
//! proxy on the worker's side ([`proxy`]), and the bridge inside the sandbox ([`bridge`]),
//! which gives agent CLIs the TCP proxy address they expect and relays to the socket.
//!
//! Inside a CONNECT tunnel (HTTPS) the proxy sees only the host and port, never the request,
//! unless the policy is read-only: then [`intercept`] ends the agent's TLS in the proxy, with
//! a certificate authority made for that proxy alone, so each request's method is checked.

pub mod bridge;
pub mod intercept;
pub mod policy;
pub mod proxy;

pub use bridge::{BRIDGE_PROGRAM, BridgeConfig, run_bridge};
pub use intercept::{InterceptError, Interceptor};
pub use policy::{
    Allowlist, Entry, NarrowError, Policy, PolicyError, REGISTRIES, Refusal, RefusalReason,
};
pub use proxy::{
    Admission, Admitted, EgressProxy, MAX_CONNECTIONS, MAX_HEAD_BYTES, MAX_SHARED_CONNECTIONS,
    SharedEgressProxy,
};

/// The variables that name an HTTP proxy to agent CLIs (curl, Node, Python, git, cargo all
/// read one of them).
pub const PROXY_VARIABLES: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// The variables that name the hosts reached without the proxy.
pub const NO_PROXY_VARIABLES: [&str; 2] = ["NO_PROXY", "no_proxy"];
