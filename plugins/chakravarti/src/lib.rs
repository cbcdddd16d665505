//! The default provider plugin: maps each `provider` call onto the Chakravarti API's HTTP
//! surface (docs/protocol.md). It holds no state; the host passes the API URL and token per call.

ckrv_wit::guest_bindings!("../../wit", "ckrv:cloud/provider-plugin");

use ckrv_wit::guest::http;
use ckrv_wit::types::{
    ApiError, CredentialInput, CredentialSummary, DeviceAuthorization, ErrorKind, Job, JobPage,
    JobRequest, LogPage, TokenSet, User,
};
use exports::ckrv::cloud::provider::{CallContext, Guest};
use serde::de::DeserializeOwned;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

struct Chakravarti;

impl Guest for Chakravarti {
    fn login_start(ctx: CallContext) -> Result<DeviceAuthorization, ApiError> {
        json(call(&ctx, "POST", "/v1/auth/device", None)?)
    }

    fn login_poll(ctx: CallContext, device_code: String) -> Result<TokenSet, ApiError> {
        let body = serde_json::json!({ "grant_type": DEVICE_GRANT, "device_code": device_code });
        json(call(&ctx, "POST", "/v1/auth/token", Some(&body))?)
    }

    fn refresh(ctx: CallContext, refresh_token: String) -> Result<TokenSet, ApiError> {
        let body = serde_json::json!({ "refresh_token": refresh_token });
        json(call(&ctx, "POST", "/v1/auth/refresh", Some(&body))?)
    }

    fn logout(ctx: CallContext) -> Result<(), ApiError> {
        call(&ctx, "POST", "/v1/auth/logout", None).map(drop)
    }

    fn whoami(ctx: CallContext) -> Result<User, ApiError> {
        json(call(&ctx, "GET", "/v1/users/me", None)?)
    }

    fn credentials_add(
        ctx: CallContext,
        credential: CredentialInput,
    ) -> Result<CredentialSummary, ApiError> {
        let body = to_value(&credential)?;
        json(call(&ctx, "POST", "/v1/credentials", Some(&body))?)
    }

    fn credentials_list(ctx: CallContext) -> Result<Vec<CredentialSummary>, ApiError> {
        json(call(&ctx, "GET", "/v1/credentials", None)?)
    }

    fn credentials_remove(ctx: CallContext, name: String) -> Result<(), ApiError> {
        let path = format!("/v1/credentials/{}", segment(&name)?);
        call(&ctx, "DELETE", &path, None).map(drop)
    }

    fn dispatch(ctx: CallContext, request: JobRequest) -> Result<Job, ApiError> {
        let body = to_value(&request)?;
        json(call(&ctx, "POST", "/v1/jobs", Some(&body))?)
    }

    fn get_job(ctx: CallContext, id: String) -> Result<Job, ApiError> {
        json(call(
            &ctx,
            "GET",
            &format!("/v1/jobs/{}", segment(&id)?),
            None,
        )?)
    }

    fn list_jobs(
        ctx: CallContext,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<JobPage, ApiError> {
        let mut path = format!("/v1/jobs?limit={limit}");
        if let Some(cursor) = cursor {
            path.push_str("&cursor=");
            path.push_str(&query_value(&cursor));
        }
        json(call(&ctx, "GET", &path, None)?)
    }

    fn cancel_job(ctx: CallContext, id: String) -> Result<Job, ApiError> {
        let path = format!("/v1/jobs/{}/cancel", segment(&id)?);
        json(call(&ctx, "POST", &path, None)?)
    }

    fn read_logs(
        ctx: CallContext,
        id: String,
        after: u64,
        limit: u32,
    ) -> Result<LogPage, ApiError> {
        let path = format!(
            "/v1/jobs/{}/logs?after={after}&limit={limit}",
            segment(&id)?
        );
        json(call(&ctx, "GET", &path, None)?)
    }

    fn fetch_diff(ctx: CallContext, id: String) -> Result<Vec<u8>, ApiError> {
        call(
            &ctx,
            "GET",
            &format!("/v1/jobs/{}/artifacts/diff", segment(&id)?),
            None,
        )
    }
}

export!(Chakravarti);

/// Sends one request; a non-2xx answer becomes the API's own error, or a described one.
fn call(
    ctx: &CallContext,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Vec<u8>, ApiError> {
    let url = format!("{}{}", ctx.api_url.trim_end_matches('/'), path);
    let bearer = ctx.access_token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![("accept", "application/json")];
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

/// Ids and names are single path segments; anything that could escape one is refused.
fn segment(value: &str) -> Result<&str, ApiError> {
    let ok = !value.is_empty()
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
    ApiError {
        error: kind,
        error_description: description.into(),
    }
}
