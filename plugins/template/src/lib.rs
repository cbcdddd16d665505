//! A provider plugin: maps each `provider` call onto the Chakravarti API's HTTP surface
//! (docs/protocol.md). It holds no state; the host passes the API URL and token per call.
//!
//! This file is both the template a provider author copies (`plugins/template`) and the
//! built-in `chakravarti` plugin (`plugins/chakravarti` builds it as it is), so a fresh copy
//! is a working provider. To talk to another backend, keep the shape and change what each
//! function sends: docs/providers.md walks through it.

ckrv_wit::guest_bindings!("ckrv-wit", "ckrv:cloud/provider-plugin");

use ckrv_wit::guest::http;
use ckrv_wit::guest::wasi::clocks::monotonic_clock;
use ckrv_wit::protocol::paths::{self, fill};
use ckrv_wit::protocol::{CLI_CLIENT_ID, DEFAULT_API_URL, DEVICE_CODE_GRANT, REFRESH_TOKEN_GRANT};
use ckrv_wit::types::{
    ApiError, CredentialCreate, CredentialList, CredentialSummary, DeviceCodeRequest,
    DeviceCodeResponse, DeviceTokenRequest, ErrorKind, Group, GroupCreate, Job, JobCreate,
    JobListResponse, JobStatus, LogQuery, LogResponse, RefreshRequest, SnapshotList,
    SnapshotSummary, TokenResponse, User, Webhook, WebhookCreate, WebhookDelivery,
    WebhookDeliveryList, WebhookList,
};
use exports::ckrv::cloud::provider::{CallContext, Guest, PluginInfo};
use serde::de::DeserializeOwned;
use std::time::Duration;

struct Provider;

impl Guest for Provider {
    /// Its name is the package's without the `ckrv-plugin-`/`ckrv-provider-` prefix, and its
    /// version and description are the package's: rename the package and the plugin follows.
    fn describe() -> PluginInfo {
        let package = env!("CARGO_PKG_NAME");
        let name = ["ckrv-plugin-", "ckrv-provider-"]
            .iter()
            .find_map(|prefix| package.strip_prefix(prefix))
            .unwrap_or(package);
        PluginInfo {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
            default_api_url: Some(DEFAULT_API_URL.into()),
            // Only the configured API. A plugin that follows a redirect to a download host
            // lists that origin here; the user approves it at install.
            origins: Vec::new(),
        }
    }

    fn login_start(ctx: CallContext) -> Result<DeviceCodeResponse, ApiError> {
        let body = DeviceCodeRequest {
            client_id: CLI_CLIENT_ID.to_string(),
        };
        json(call(
            &ctx,
            "POST",
            paths::AUTH_DEVICE,
            Some(&to_value(&body)?),
        )?)
    }

    fn login_poll(ctx: CallContext, device_code: String) -> Result<TokenResponse, ApiError> {
        let body = DeviceTokenRequest {
            client_id: CLI_CLIENT_ID.to_string(),
            device_code,
            grant_type: DEVICE_CODE_GRANT.to_string(),
        };
        json(call(
            &ctx,
            "POST",
            paths::AUTH_TOKEN,
            Some(&to_value(&body)?),
        )?)
    }

    fn refresh(ctx: CallContext, refresh_token: String) -> Result<TokenResponse, ApiError> {
        let body = RefreshRequest {
            refresh_token,
            grant_type: REFRESH_TOKEN_GRANT.to_string(),
        };
        json(call(
            &ctx,
            "POST",
            paths::AUTH_REFRESH,
            Some(&to_value(&body)?),
        )?)
    }

    fn logout(ctx: CallContext) -> Result<(), ApiError> {
        call(&ctx, "POST", paths::AUTH_LOGOUT, None).map(drop)
    }

    fn whoami(ctx: CallContext) -> Result<User, ApiError> {
        json(call(&ctx, "GET", paths::USER, None)?)
    }

    fn credentials_add(
        ctx: CallContext,
        credential: CredentialCreate,
    ) -> Result<CredentialSummary, ApiError> {
        let body = to_value(&credential)?;
        json(call(&ctx, "POST", paths::CREDENTIALS, Some(&body))?)
    }

    fn credentials_list(ctx: CallContext) -> Result<Vec<CredentialSummary>, ApiError> {
        json::<CredentialList>(call(&ctx, "GET", paths::CREDENTIALS, None)?)
            .map(|list| list.credentials)
    }

    fn credentials_remove(ctx: CallContext, name: String) -> Result<(), ApiError> {
        let path = fill(paths::CREDENTIAL, segment(&name)?);
        call(&ctx, "DELETE", &path, None).map(drop)
    }

    fn snapshots_list(ctx: CallContext) -> Result<Vec<SnapshotSummary>, ApiError> {
        json::<SnapshotList>(call(&ctx, "GET", paths::SNAPSHOTS, None)?).map(|list| list.snapshots)
    }

    fn snapshots_remove(ctx: CallContext, key: String) -> Result<(), ApiError> {
        let path = fill(paths::SNAPSHOT, segment(&key)?);
        call(&ctx, "DELETE", &path, None).map(drop)
    }

    fn webhooks_add(ctx: CallContext, webhook: WebhookCreate) -> Result<Webhook, ApiError> {
        let body = to_value(&webhook)?;
        json(call(&ctx, "POST", paths::WEBHOOKS, Some(&body))?)
    }

    fn webhooks_list(ctx: CallContext) -> Result<Vec<Webhook>, ApiError> {
        json::<WebhookList>(call(&ctx, "GET", paths::WEBHOOKS, None)?).map(|list| list.webhooks)
    }

    fn webhooks_remove(ctx: CallContext, id: String) -> Result<(), ApiError> {
        let path = fill(paths::WEBHOOK, segment(&id)?);
        call(&ctx, "DELETE", &path, None).map(drop)
    }

    fn webhooks_rotate(ctx: CallContext, id: String) -> Result<Webhook, ApiError> {
        let path = fill(paths::WEBHOOK_ROTATE, segment(&id)?);
        json(call(&ctx, "POST", &path, None)?)
    }

    fn webhooks_deliveries(
        ctx: CallContext,
        webhook: Option<String>,
        job: Option<String>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, ApiError> {
        let mut path = format!("{}?limit={limit}", paths::WEBHOOK_DELIVERIES);
        if let Some(webhook) = webhook {
            path.push_str("&webhook=");
            path.push_str(segment(&webhook)?);
        }
        if let Some(job) = job {
            path.push_str("&job=");
            path.push_str(segment(&job)?);
        }
        json::<WebhookDeliveryList>(call(&ctx, "GET", &path, None)?).map(|list| list.deliveries)
    }

    fn webhooks_redeliver(ctx: CallContext, id: String) -> Result<WebhookDelivery, ApiError> {
        let path = fill(paths::WEBHOOK_REDELIVER, segment(&id)?);
        json(call(&ctx, "POST", &path, None)?)
    }

    fn dispatch(
        ctx: CallContext,
        request: JobCreate,
        idempotency_key: String,
    ) -> Result<Job, ApiError> {
        let body = to_value(&request)?;
        let headers = [("idempotency-key", idempotency_key.as_str())];
        // Safe to repeat under one key: a try whose answer was lost made at most one job.
        let mut wait = Duration::from_millis(250);
        for _ in 1..DISPATCH_TRIES {
            match send(&ctx, "POST", paths::JOBS, Some(&body), &headers) {
                Err(e)
                    if matches!(
                        e.error,
                        ErrorKind::Unavailable | ErrorKind::Internal | ErrorKind::Conflict
                    ) =>
                {
                    monotonic_clock::subscribe_duration(duration_ns(wait)).block();
                    wait *= 2;
                }
                answer => return json(answer?),
            }
        }
        json(send(&ctx, "POST", paths::JOBS, Some(&body), &headers)?)
    }

    fn get_job(ctx: CallContext, id: String) -> Result<Job, ApiError> {
        json(call(&ctx, "GET", &fill(paths::JOB, segment(&id)?), None)?)
    }

    fn list_jobs(
        ctx: CallContext,
        status: Option<JobStatus>,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<JobListResponse, ApiError> {
        let mut path = format!("{}?limit={limit}", paths::JOBS);
        if let Some(status) = status {
            path.push_str("&status=");
            path.push_str(status.as_str());
        }
        if let Some(cursor) = cursor {
            path.push_str("&cursor=");
            path.push_str(&query_value(&cursor));
        }
        json(call(&ctx, "GET", &path, None)?)
    }

    fn cancel_job(ctx: CallContext, id: String) -> Result<Job, ApiError> {
        let path = fill(paths::JOB_CANCEL, segment(&id)?);
        json(call(&ctx, "POST", &path, None)?)
    }

    fn dispatch_group(ctx: CallContext, request: GroupCreate) -> Result<Group, ApiError> {
        let body = to_value(&request)?;
        json(call(&ctx, "POST", paths::GROUPS, Some(&body))?)
    }

    fn get_group(ctx: CallContext, id: String) -> Result<Group, ApiError> {
        let path = fill(paths::GROUP, segment(&id)?);
        json(call(&ctx, "GET", &path, None)?)
    }

    fn cancel_group(ctx: CallContext, id: String) -> Result<Group, ApiError> {
        let path = fill(paths::GROUP_CANCEL, segment(&id)?);
        json(call(&ctx, "POST", &path, None)?)
    }

    fn read_logs(ctx: CallContext, id: String, query: LogQuery) -> Result<LogResponse, ApiError> {
        let started = monotonic_clock::now();
        let logs = fill(paths::JOB_LOGS, segment(&id)?);
        let mut url = format!("{logs}?after={}&limit={}", query.after, query.limit);
        if let Some(tail) = query.tail {
            url.push_str(&format!("&tail={tail}"));
        }
        if query.wait_ms > 0 {
            url.push_str(&format!("&wait_ms={}", query.wait_ms));
        }
        let page: LogResponse = json(call(&ctx, "GET", &url, None)?)?;
        let page = if page.next_after.is_some() && page.job_state.is_some() {
            page
        } else {
            // A server that speaks only the contract ignores `after` and sends neither cursor
            // nor state: read the job's state first (so a terminal state means the log read
            // after it is complete), then the whole log, and number its entries by position.
            let job: Job = Self::get_job(ctx.clone(), id)?;
            let whole: LogResponse = json(call(&ctx, "GET", &logs, None)?)?;
            ckrv_wit::log_page::page(whole.logs, job.lifecycle(), &query)
        };
        // A server that does not wait answers an empty page at once: pause here instead, so
        // a follower asking again does not spin.
        let running = !page.job_state.is_some_and(|s| s.is_terminal());
        if page.logs.is_empty() && running && query.wait_ms > 0 {
            let waited = monotonic_clock::now().saturating_sub(started);
            let pause = duration_ns(NO_WAIT_POLL.min(Duration::from_millis(query.wait_ms.into())));
            if waited < pause {
                monotonic_clock::subscribe_duration(pause - waited).block();
            }
        }
        Ok(page)
    }

    fn fetch_diff(ctx: CallContext, id: String) -> Result<Vec<u8>, ApiError> {
        call(&ctx, "GET", &fill(paths::JOB_DIFF, segment(&id)?), None)
    }
}

export!(Provider);

/// How long a follower of a server that cannot wait pauses between reads.
const NO_WAIT_POLL: Duration = Duration::from_secs(1);

/// How many times `dispatch` tries before it gives the last error.
const DISPATCH_TRIES: u32 = 4;

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sends one request; a non-2xx answer becomes the API's own error, or a described one.
fn call(
    ctx: &CallContext,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Vec<u8>, ApiError> {
    send(ctx, method, path, body, &[])
}

/// [`call`] with headers of the caller's.
fn send(
    ctx: &CallContext,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    extra: &[(&str, &str)],
) -> Result<Vec<u8>, ApiError> {
    let url = format!("{}{}", ctx.api_url.trim_end_matches('/'), path);
    let bearer = ctx.access_token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![("accept", "application/json")];
    headers.extend_from_slice(extra);
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer.as_str()));
    }
    let bytes = body.map(|b| b.to_string().into_bytes());
    if bytes.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let response = http::send(method, &url, &headers, bytes.as_deref()).map_err(|e| match e {
        http::Error::BadUrl(m) => error(ErrorKind::InvalidRequest, m),
        http::Error::Transport(m) => error(
            ErrorKind::Unavailable,
            format!("cannot reach {}: {m}", ctx.api_url),
        ),
    })?;
    if (200..300).contains(&response.status) {
        return Ok(response.body);
    }
    // Either of the contract's error bodies: `{error, error_description}` or the quota's
    // `{error, message, ...}`.
    Err(
        serde_json::from_slice::<ApiError>(&response.body).unwrap_or_else(|_| {
            let snippet: String = String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect();
            error(
                ErrorKind::Internal,
                format!("HTTP {}: {snippet}", response.status),
            )
        }),
    )
}

fn json<T: DeserializeOwned>(body: Vec<u8>) -> Result<T, ApiError> {
    serde_json::from_slice(&body).map_err(|e| {
        error(
            ErrorKind::Internal,
            format!("unexpected response from the API: {e}"),
        )
    })
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| error(ErrorKind::Internal, e.to_string()))
}

/// Ids and names are single path segments (or query values); anything that could escape one,
/// or be read as `.` or `..`, is refused.
fn segment(value: &str) -> Result<&str, ApiError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(value)
    } else {
        Err(error(
            ErrorKind::InvalidRequest,
            format!("`{value}` is not a valid id (letters, digits, '-', '_' and '.' only)"),
        ))
    }
}

/// Percent-encodes a query value (cursors are opaque strings from the API).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error(kind: ErrorKind, description: impl Into<String>) -> ApiError {
    ApiError::new(kind, description)
}
