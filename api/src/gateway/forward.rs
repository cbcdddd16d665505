//! One model request, from the agent to its model API and back: the token checked, the key
//! put in, the answer streamed back as it comes and its usage counted against the job.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use ckrv_agents::{KeyHeader, ModelRoute};
use ckrv_wit::types::ErrorKind;
use futures::Stream;

use super::GatewayState;
use super::usage::{AnswerUsage, Meter};
use crate::error::AppError;
use crate::identity::quota::{dollars_to_micros, micros_to_dollars};
use crate::identity::tokens::{MODEL_TOKEN_PREFIX, hash_secret};
use crate::store::{ModelGrant, SpentUsage};

/// Headers of one connection, never forwarded (RFC 9110 §7.6.1), and those that carry a
/// credential: the gateway sets the one the route's key goes in.
const NOT_FORWARDED: &[HeaderName] = &[
    header::CONNECTION,
    header::HOST,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::AUTHORIZATION,
    header::COOKIE,
    header::ACCEPT_ENCODING,
];
const NOT_FORWARDED_BY_NAME: &[&str] = &["keep-alive", "x-api-key", "x-goog-api-key"];

/// Headers of the answer never passed back.
const NOT_RETURNED: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::SET_COOKIE,
];

/// `ANY /v1/gateway/{route}/{*path}`.
pub async fn forward(
    State(gateway): State<GatewayState>,
    Path((route_name, path)): Path<(String, String)>,
    request: Request,
) -> Result<Response, AppError> {
    let answer = forward_checked(&gateway, &route_name, &path, request).await;
    let status = match &answer {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.body.error.http_status(),
    };
    gateway.metrics.model_request(&route_name, status);
    answer
}

async fn forward_checked(
    gateway: &GatewayState,
    route_name: &str,
    path: &str,
    request: Request,
) -> Result<Response, AppError> {
    let (parts, body) = request.into_parts();
    let token = model_token_in(&parts.headers).ok_or_else(|| {
        AppError::new(
            ErrorKind::NotAuthenticated,
            "no model token: the gateway takes a job's model token where its agent's CLI sends \
             its key (X-Api-Key, X-Goog-Api-Key, or Authorization: Bearer)",
        )
    })?;
    let grant = gateway
        .store
        .model_grant(&hash_secret(token))
        .await?
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::NotAuthenticated,
                "the model token is not valid: its job is not running (a token lasts as long \
                 as the run of the job it was made for)",
            )
        })?;
    if grant.verifying {
        return Err(AppError::new(
            ErrorKind::Forbidden,
            "the job is verifying its change: the project's check has no model access (docs/verification.md)",
        ));
    }
    let spec = ckrv_agents::parse_spec(&grant.spec)
        .map_err(|e| AppError::new(ErrorKind::Forbidden, format!("the job's spec: {e}")))?;
    let route = ckrv_agents::find_agent(&spec.front.agent)
        .and_then(|agent| agent.model(route_name))
        .ok_or_else(|| {
            AppError::new(
                ErrorKind::NotFound,
                format!(
                    "agent `{}` has no model route `{route_name}`",
                    spec.front.agent
                ),
            )
        })?;
    check_budget(gateway, &grant, &spec.front).await?;
    let key = gateway.workers.key(&route.key).ok_or_else(|| {
        AppError::new(
            ErrorKind::Unavailable,
            format!(
                "this server holds no key for model route `{route_name}` ({}); its operator \
                 sets one with `ckrv-api serve --agent-secrets`",
                route.key
            ),
        )
    })?;
    let upstream = gateway
        .upstreams
        .get(route_name)
        .map_or(route.upstream.as_str(), String::as_str);
    let mut url = format!("{upstream}/{path}");
    if let Some(query) = parts.uri.query() {
        url.push('?');
        url.push_str(query);
    }
    let mut headers = forwarded(&parts.headers, NOT_FORWARDED, NOT_FORWARDED_BY_NAME);
    headers.insert(
        HeaderName::from_static(route.key_header.name()),
        key_value(route, key)?,
    );
    // The answer's usage is read as it passes: it must not arrive compressed.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let answer = gateway
        .client
        .request(parts.method, &url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(|e| {
            // The URL is the upstream's, with the agent's query: no key, but not ours to log.
            let e = e.without_url();
            tracing::warn!(route = route_name, job_id = grant.job_id, error = %e, "model API unreachable");
            AppError::new(
                ErrorKind::Unavailable,
                format!("the model API of route `{route_name}` did not answer: {e}"),
            )
        })?;
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut response = Response::builder().status(answer.status());
    if let Some(returned) = response.headers_mut() {
        *returned = forwarded(answer.headers(), NOT_RETURNED, &["keep-alive"]);
    }
    let metered = Metered {
        inner: Box::pin(answer.bytes_stream()),
        meter: Some(Meter::new(content_type.as_deref())),
        record: Some(Record {
            gateway: gateway.clone(),
            job_id: grant.job_id,
            route: route_name.to_string(),
        }),
    };
    response
        .body(Body::from_stream(metered))
        .map_err(|e| AppError::new(ErrorKind::Internal, format!("building the answer: {e}")))
}

/// The model token among the headers a CLI may send its key in.
fn model_token_in(headers: &HeaderMap) -> Option<&str> {
    [
        KeyHeader::XApiKey,
        KeyHeader::XGoogApiKey,
        KeyHeader::Bearer,
    ]
    .into_iter()
    .filter_map(|kind| {
        let value = headers.get(kind.name())?.to_str().ok()?;
        kind.key_in(value)
    })
    .find(|token| token.starts_with(MODEL_TOKEN_PREFIX))
}

/// The operator's key as its route's header carries it, marked sensitive (never logged).
fn key_value(route: &ModelRoute, key: &str) -> Result<HeaderValue, AppError> {
    let mut value = HeaderValue::from_str(&route.key_header.value(key)).map_err(|_| {
        AppError::new(
            ErrorKind::Unavailable,
            format!(
                "the key configured for model route `{}` ({}) cannot be sent in a header",
                route.name, route.key
            ),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `headers` but those named in `dropped`.
fn forwarded(headers: &HeaderMap, dropped: &[HeaderName], dropped_by_name: &[&str]) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| !dropped.contains(name) && !dropped_by_name.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// A job past its budget gets no more model requests, and ends with the reason.
async fn check_budget(
    gateway: &GatewayState,
    grant: &ModelGrant,
    front: &ckrv_agents::SpecFrontMatter,
) -> Result<(), AppError> {
    let spent = grant.spent;
    let tokens = spent.input_tokens.saturating_add(spent.output_tokens);
    let so_far = micros_to_dollars(spent.cost_micros);
    // The job's own budget counts while it is within its tier's: one submitted before the
    // operator lowered the cap is held to the cap.
    let cap = gateway.budgets.job.for_tier(grant.tier);
    let own = front.max_cost_usd.map(dollars_to_micros);
    let over = match (own, cap, front.max_tokens) {
        (Some(own), cap, _) if cap.is_none_or(|cap| own <= cap) && spent.cost_micros >= own => {
            Some(format!(
                "the job's budget max_cost_usd = {} is spent (${so_far:.4} so far)",
                front.max_cost_usd.unwrap_or_default()
            ))
        }
        (_, Some(cap), _) if spent.cost_micros >= cap => Some(format!(
            "the model budget of ${:.2} for a job of a {} account on this server is spent \
             (${so_far:.4} so far)",
            micros_to_dollars(cap),
            grant.tier
        )),
        (_, _, Some(max)) if tokens >= max => Some(format!(
            "the job's budget max_tokens = {max} is spent ({tokens} tokens so far)"
        )),
        _ => None,
    };
    let over = match over {
        Some(reason) => Some(reason),
        None => account_over_budget(gateway, grant).await?,
    };
    let Some(reason) = over else {
        return Ok(());
    };
    if let Err(e) = gateway.engine.fail(&grant.job_id, None, &reason).await {
        tracing::error!(job_id = grant.job_id, error = %e, "ending a job past its budget");
    }
    tracing::info!(
        job_id = grant.job_id,
        reason,
        "model request refused: budget spent"
    );
    Err(AppError::new(ErrorKind::QuotaExceeded, reason))
}

/// Why the job's account may spend no more this month, if its operator's budget is spent.
async fn account_over_budget(
    gateway: &GatewayState,
    grant: &ModelGrant,
) -> Result<Option<String>, AppError> {
    let Some(budget) = gateway.budgets.account_month.for_tier(grant.tier) else {
        return Ok(None);
    };
    let (start, end) = crate::identity::quota::cycle(crate::clock::now());
    let spent = gateway
        .store
        .model_cost_since(&grant.account_id, crate::clock::millis(start))
        .await?;
    Ok((spent >= budget).then(|| {
        format!(
            "the account's model budget of ${:.2} for this month is spent (${:.4} so far); it renews {}",
            micros_to_dollars(budget),
            micros_to_dollars(spent),
            crate::clock::rfc3339(end)
        )
    }))
}

/// Counts one answer's usage against its job once the answer has passed (or its reader went).
struct Record {
    gateway: GatewayState,
    job_id: String,
    route: String,
}

impl Record {
    fn spend(self, usage: AnswerUsage) {
        let cost_micros = match &usage.model {
            Some(model) => {
                self.gateway
                    .prices
                    .cost_micros(model, usage.input_tokens, usage.output_tokens)
            }
            None => None,
        };
        if cost_micros.is_none() && usage.input_tokens + usage.output_tokens > 0 {
            tracing::warn!(
                route = self.route,
                model = usage.model.as_deref().unwrap_or("(none named)"),
                "no price for this model: its tokens cost 0 (ckrv-api serve --model-prices)"
            );
        }
        let spent = SpentUsage {
            requests: 1,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_micros: cost_micros.unwrap_or(0),
        };
        self.gateway
            .metrics
            .model_tokens(&self.route, spent.input_tokens, spent.output_tokens);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = self
                .gateway
                .store
                .add_model_usage(&self.job_id, &spent)
                .await
            {
                tracing::error!(job_id = self.job_id, error = %e, "recording model usage");
            }
        });
    }
}

/// The answer's body as it comes, read by a [`Meter`] on the way.
struct Metered {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    meter: Option<Meter>,
    record: Option<Record>,
}

impl Metered {
    fn finish(&mut self) {
        if let (Some(meter), Some(record)) = (self.meter.take(), self.record.take()) {
            record.spend(meter.finish());
        }
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                if let Some(meter) = self.meter.as_mut() {
                    meter.feed(&bytes);
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish();
                Poll::Ready(Some(Err(std::io::Error::other(e.without_url()))))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // The agent stopped reading: what passed is still counted.
        self.finish();
    }
}
