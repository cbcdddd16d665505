//! Constants of the HTTP protocol that client and server must spell the same way.

/// RFC 8628 §3.4: the `grant_type` of a device-code token request.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 6749 §6: the `grant_type` of a refresh request.
pub const REFRESH_TOKEN_GRANT: &str = "refresh_token";

/// The OAuth `client_id` the `ckrv` CLI (through its provider plugin) identifies as.
pub const CLI_CLIENT_ID: &str = "ckrv-cli";

/// The API `ckrv` and the built-in provider use when none is configured: `ckrv-api serve`'s
/// default address on this machine.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// The `token_type` of every access token the API issues.
pub const BEARER: &str = "Bearer";

/// The source of a job's log lines that each say one connection its agent's egress policy
/// refused; the API counts them for the job.
pub const EGRESS_LOG_SOURCE: &str = "egress";

/// The header that carries a snapshot's SHA-256 (hex), both ways
/// (`paths::WORKER_SNAPSHOT`).
pub const SNAPSHOT_SHA256_HEADER: &str = "ckrv-snapshot-sha256";

/// The events a webhook can take (docs/webhooks.md); `*` takes them all.
pub mod webhook_events {
    pub const QUEUED: &str = "job.queued";
    pub const STARTED: &str = "job.started";
    pub const PHASE: &str = "job.phase";
    pub const SUCCEEDED: &str = "job.succeeded";
    pub const FAILED: &str = "job.failed";
    pub const TIMEOUT: &str = "job.timeout";
    pub const CANCELLED: &str = "job.cancelled";
    pub const PUBLISHED: &str = "job.published";
    /// Every event.
    pub const ALL: &str = "*";
    /// The names a webhook may ask for.
    pub const NAMES: [&str; 9] = [
        QUEUED, STARTED, PHASE, SUCCEEDED, FAILED, TIMEOUT, CANCELLED, PUBLISHED, ALL,
    ];
}

/// The API's routes. The server mounts these templates; clients fill them with [`fill`], so a
/// path is spelled once for the API, the provider plugins and the template.
pub mod paths {
    pub const AUTH_DEVICE: &str = "/v1/auth/device";
    pub const AUTH_TOKEN: &str = "/v1/auth/token";
    pub const AUTH_REFRESH: &str = "/v1/auth/refresh";
    pub const AUTH_LOGOUT: &str = "/v1/auth/logout";
    pub const USER: &str = "/v1/users/me";
    /// Administrators only: what `ckrv-api users disable|enable|revoke-token` do.
    pub const ADMIN_ACCOUNT_DISABLE: &str = "/v1/admin/accounts/{email}/disable";
    pub const ADMIN_ACCOUNT_ENABLE: &str = "/v1/admin/accounts/{email}/enable";
    pub const ADMIN_ACCOUNT_TOKEN: &str = "/v1/admin/accounts/{email}/tokens/{id}";
    pub const CREDENTIALS: &str = "/v1/credentials";
    pub const CREDENTIAL: &str = "/v1/credentials/{name}";
    pub const JOBS: &str = "/v1/jobs";
    pub const JOB: &str = "/v1/jobs/{id}";
    pub const JOB_CANCEL: &str = "/v1/jobs/{id}/cancel";
    pub const JOB_LOGS: &str = "/v1/jobs/{id}/logs";
    pub const JOB_DIFF: &str = "/v1/jobs/{id}/artifacts/diff";
    /// Attempt groups: one spec run several times, ranked (docs/attempts.md).
    pub const GROUPS: &str = "/v1/groups";
    pub const GROUP: &str = "/v1/groups/{id}";
    pub const GROUP_CANCEL: &str = "/v1/groups/{id}/cancel";
    /// The account's snapshots of repository setups (docs/environments.md).
    pub const SNAPSHOTS: &str = "/v1/snapshots";
    /// One of them, by its key or a unique prefix of at least 8 hex digits.
    pub const SNAPSHOT: &str = "/v1/snapshots/{key}";

    /// The account's webhooks (docs/webhooks.md).
    pub const WEBHOOKS: &str = "/v1/webhooks";
    pub const WEBHOOK: &str = "/v1/webhooks/{id}";
    pub const WEBHOOK_ROTATE: &str = "/v1/webhooks/{id}/rotate";
    /// Deliveries to them; `webhook`, `job` and `limit` query parameters.
    pub const WEBHOOK_DELIVERIES: &str = "/v1/webhooks/deliveries";
    pub const WEBHOOK_REDELIVER: &str = "/v1/webhooks/deliveries/{id}/redeliver";

    // A job's worker: with the job's worker token (an external worker's credential to claim).
    pub const WORKER_CLAIM: &str = "/v1/worker/claim";
    pub const WORKER_JOB: &str = "/v1/worker/jobs/{id}";
    pub const WORKER_COMPONENT: &str = "/v1/worker/jobs/{id}/components/{digest}";
    pub const WORKER_HEARTBEAT: &str = "/v1/worker/jobs/{id}/heartbeat";
    pub const WORKER_PHASE: &str = "/v1/worker/jobs/{id}/phase";
    pub const WORKER_LOGS: &str = "/v1/worker/jobs/{id}/logs";
    pub const WORKER_DIFF: &str = "/v1/worker/jobs/{id}/artifacts/diff";
    pub const WORKER_RESULT: &str = "/v1/worker/jobs/{id}/result";
    pub const WORKER_COMPLETE: &str = "/v1/worker/jobs/{id}/complete";
    /// Where the job's result was published: its branch and pull request (docs/publish.md).
    pub const WORKER_PUBLICATION: &str = "/v1/worker/jobs/{id}/publication";
    /// A follow-up's start: its parent's diff (docs/follow-ups.md).
    pub const WORKER_START_DIFF: &str = "/v1/worker/jobs/{id}/start/diff";
    /// The job's account's snapshot of a repository setup, by key (docs/environments.md).
    pub const WORKER_SNAPSHOT: &str = "/v1/worker/jobs/{id}/snapshots/{key}";

    // The model gateway: a job's agent, with its job's model token in the header its CLI
    // sends a key in. `{route}` is one of the agent's model routes; the rest of the path is
    // the model API's own.
    pub const GATEWAY: &str = "/v1/gateway/{route}/{*path}";
    /// Where the gateway's `route` is, below an API's base URL: the base URL an agent's CLI
    /// is pointed at, before the route's own path.
    pub fn gateway_base(api_url: &str, route: &str) -> String {
        format!("{}/v1/gateway/{route}", api_url.trim_end_matches('/'))
    }

    // Operations: no credential.
    pub const HEALTH: &str = "/healthz";
    pub const READY: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    pub const OPENAPI: &str = "/v1/openapi.json";

    /// `template` with its first `{…}` parameter replaced by `value` (fill again for the next
    /// one). The caller checks that `value` is a single path segment.
    pub fn fill(template: &str, value: &str) -> String {
        match (template.find('{'), template.find('}')) {
            (Some(open), Some(close)) if open < close => {
                format!("{}{value}{}", &template[..open], &template[close + 1..])
            }
            _ => template.to_string(),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn templates_are_filled_in_place() {
            assert_eq!(super::fill(super::JOB_LOGS, "3f8a"), "/v1/jobs/3f8a/logs");
            assert_eq!(super::fill(super::CREDENTIAL, "gh"), "/v1/credentials/gh");
            assert_eq!(super::fill(super::JOBS, "x"), "/v1/jobs");
            assert_eq!(
                super::fill(&super::fill(super::WORKER_COMPONENT, "j1"), "ab12"),
                "/v1/worker/jobs/j1/components/ab12"
            );
        }

        #[test]
        fn the_gateway_base_sits_below_the_api_url() {
            let base = super::gateway_base("http://127.0.0.1:8080/", "anthropic");
            assert_eq!(base, "http://127.0.0.1:8080/v1/gateway/anthropic");
            // The route the server mounts is the same path, with the route filled in.
            let mounted = super::fill(super::GATEWAY, "anthropic");
            assert!(mounted.starts_with(&base["http://127.0.0.1:8080".len()..]));
        }
    }
}
