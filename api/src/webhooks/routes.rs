//! The account's webhooks (`ckrv cloud webhooks`): added with a secret shown once, listed,
//! rotated, removed, and their deliveries listed and sent again. Another account's webhook or
//! delivery is not found, as if it did not exist; the operator's are not shown here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::on;
use ckrv_wit::protocol::paths;
use ckrv_wit::types::{
    ErrorKind, Webhook, WebhookAttempt, WebhookCreate, WebhookDelivery, WebhookDeliveryList,
    WebhookList,
};
use serde::Deserialize;

use crate::clock;
use crate::error::{ApiJson, ApiQuery, AppError, invalid};
use crate::identity::extract::Session;
use crate::route::{Auth, Content, Method, Param, Route, answering, op, with_body, with_query};
use crate::store::{AttemptRow, DeliveryRow, DeliveryStatus, HELD_MS, NewWebhook, WebhookRow};
use crate::webhooks::{
    MAX_WEBHOOKS, PrepareError, ROTATION_OVERLAP_MS, WebhooksState, new_sealed_secret, prepare,
    valid_id,
};

/// The most deliveries one list answers.
const MAX_LIMIT: i64 = 100;

pub const ROUTES: &[Route<WebhooksState>] = &[
    Route::new(
        answering(
            with_body(
                op(
                    Method::Post,
                    paths::WEBHOOKS,
                    "addWebhook",
                    "Add a receiver of the account's job events; the answer holds its secret, once",
                    Auth::User,
                ),
                Content::Json("WebhookCreate"),
            ),
            &[(201, Content::Json("Webhook"))],
        ),
        |method| on(method, add),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::WEBHOOKS,
                "listWebhooks",
                "The account's webhooks, without secrets",
                Auth::User,
            ),
            &[(200, Content::Json("WebhookList"))],
        ),
        |method| on(method, list),
    ),
    Route::new(
        op(
            Method::Delete,
            paths::WEBHOOK,
            "removeWebhook",
            "Remove one of the account's webhooks and its deliveries",
            Auth::User,
        ),
        |method| on(method, remove),
    ),
    Route::new(
        answering(
            op(
                Method::Post,
                paths::WEBHOOK_ROTATE,
                "rotateWebhookSecret",
                "A new signing secret; the previous one also signs for a day",
                Auth::User,
            ),
            &[(200, Content::Json("Webhook"))],
        ),
        |method| on(method, rotate),
    ),
    Route::new(
        answering(
            with_query(
                op(
                    Method::Get,
                    paths::WEBHOOK_DELIVERIES,
                    "listWebhookDeliveries",
                    "Deliveries to the account's webhooks and every try of each, newest first",
                    Auth::User,
                ),
                &[
                    Param {
                        name: "webhook",
                        schema: r#"{"type": "string"}"#,
                        description: "Only this webhook's",
                    },
                    Param {
                        name: "job",
                        schema: r#"{"type": "string"}"#,
                        description: "Only this job's",
                    },
                    Param {
                        name: "limit",
                        schema: r#"{"type": "integer", "minimum": 1, "maximum": 100}"#,
                        description: "How many (20 unless given)",
                    },
                ],
            ),
            &[(200, Content::Json("WebhookDeliveryList"))],
        ),
        |method| on(method, deliveries),
    ),
    Route::new(
        answering(
            op(
                Method::Post,
                paths::WEBHOOK_REDELIVER,
                "redeliverWebhook",
                "Send a delivery again, after the earlier events of its job",
                Auth::User,
            ),
            &[(202, Content::Json("WebhookDelivery"))],
        ),
        |method| on(method, redeliver),
    ),
];

fn internal(error: PrepareError) -> AppError {
    match error {
        PrepareError::Invalid(message) => invalid(message),
        PrepareError::Seal(e) => {
            tracing::error!(error = %e, "sealing a webhook secret");
            AppError::new(ErrorKind::Internal, "internal error; see the API's log")
        }
    }
}

/// The webhook as its account sees it, without its secret.
pub fn view(row: &WebhookRow) -> Webhook {
    let now = clock::millis(clock::now());
    Webhook {
        id: row.id.clone(),
        url: row.url.clone(),
        events: row.events.clone(),
        created_at: clock::rfc3339(clock::from_millis(row.created_ms)),
        operator_wide: row.account_id.is_none(),
        secret: None,
        previous_secret_expires_at: row
            .previous
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(_, until)| clock::rfc3339(clock::from_millis(*until))),
    }
}

fn not_found(id: &str) -> AppError {
    AppError::new(
        ErrorKind::NotFound,
        format!("no webhook {id} in your account; see yours with `ckrv cloud webhooks list`"),
    )
}

pub async fn add(
    State(state): State<WebhooksState>,
    session: Session,
    ApiJson(request): ApiJson<WebhookCreate>,
) -> Result<(StatusCode, ApiJson<Webhook>), AppError> {
    let account = session.account_id.as_str();
    if state.store.webhooks(Some(account)).await?.len() >= MAX_WEBHOOKS {
        return Err(AppError::new(
            ErrorKind::Conflict,
            format!(
                "an account has at most {MAX_WEBHOOKS} webhooks; remove one with `ckrv cloud webhooks rm ID`"
            ),
        ));
    }
    let prepared = prepare(
        &state.secrets,
        &request.url,
        &request.events,
        state.allow_internal,
    )
    .map_err(internal)?;
    let created_ms = clock::millis(clock::now());
    state
        .store
        .insert_webhook(&NewWebhook {
            id: &prepared.id,
            account_id: Some(account),
            url: &prepared.url,
            events: &prepared.events,
            secret: &prepared.sealed,
            created_ms,
        })
        .await?;
    tracing::info!(%account, webhook = %prepared.id, "webhook added");
    Ok((
        StatusCode::CREATED,
        ApiJson(Webhook {
            id: prepared.id,
            url: prepared.url,
            events: prepared.events,
            created_at: clock::rfc3339(clock::from_millis(created_ms)),
            operator_wide: false,
            secret: Some(prepared.secret.to_string()),
            previous_secret_expires_at: None,
        }),
    ))
}

pub async fn list(
    State(state): State<WebhooksState>,
    session: Session,
) -> Result<ApiJson<WebhookList>, AppError> {
    let rows = state.store.webhooks(Some(&session.account_id)).await?;
    Ok(ApiJson(WebhookList {
        webhooks: rows.iter().map(view).collect(),
    }))
}

pub async fn remove(
    State(state): State<WebhooksState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    if valid_id(&id)
        && state
            .store
            .delete_webhook(Some(&session.account_id), &id)
            .await?
    {
        tracing::info!(account = %session.account_id, webhook = %id, "webhook removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&id))
    }
}

pub async fn rotate(
    State(state): State<WebhooksState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<ApiJson<Webhook>, AppError> {
    let account = session.account_id.as_str();
    if !valid_id(&id) {
        return Err(not_found(&id));
    }
    let (secret, sealed) = new_sealed_secret(&state.secrets, &id).map_err(internal)?;
    let until = clock::millis(clock::now()) + ROTATION_OVERLAP_MS;
    if !state
        .store
        .rotate_webhook(Some(account), &id, &sealed, until)
        .await?
    {
        return Err(not_found(&id));
    }
    let row = state
        .store
        .webhook(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    tracing::info!(%account, webhook = %id, "webhook secret rotated");
    Ok(ApiJson(Webhook {
        secret: Some(secret.to_string()),
        ..view(&row)
    }))
}

#[derive(Debug, Deserialize)]
pub struct DeliveryQuery {
    webhook: Option<String>,
    job: Option<String>,
    limit: Option<i64>,
}

fn delivery_view(delivery: DeliveryRow, attempts: Vec<AttemptRow>) -> WebhookDelivery {
    WebhookDelivery {
        // A delivery held behind its webhook's probe has no time of its own.
        next_attempt_at: (delivery.status == DeliveryStatus::Pending
            && delivery.next_try_ms != HELD_MS)
            .then(|| clock::rfc3339(clock::from_millis(delivery.next_try_ms))),
        id: delivery.id,
        webhook_id: delivery.webhook_id,
        job_id: delivery.job_id,
        event: delivery.event,
        created_at: clock::rfc3339(clock::from_millis(delivery.created_ms)),
        status: delivery.status.as_str().to_owned(),
        attempts: attempts
            .into_iter()
            .map(|a| WebhookAttempt {
                at: clock::rfc3339(clock::from_millis(a.at_ms)),
                status_code: a.status_code,
                error: a.error,
                duration_ms: u64::try_from(a.duration_ms).unwrap_or(0),
            })
            .collect(),
    }
}

pub async fn deliveries(
    State(state): State<WebhooksState>,
    session: Session,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<ApiJson<WebhookDeliveryList>, AppError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    if let Some(webhook) = &query.webhook
        && !valid_id(webhook)
    {
        return Err(invalid(format!(
            "{webhook:?} is not a webhook id (wh_ and 24 hex digits)"
        )));
    }
    if let Some(job) = &query.job
        && (job.len() > 64 || job.contains('\0'))
    {
        return Err(invalid("job must be a job id"));
    }
    let rows = state
        .store
        .deliveries(
            &session.account_id,
            query.webhook.as_deref(),
            query.job.as_deref(),
            limit,
        )
        .await?;
    Ok(ApiJson(WebhookDeliveryList {
        deliveries: rows
            .into_iter()
            .map(|(delivery, attempts)| delivery_view(delivery, attempts))
            .collect(),
    }))
}

pub async fn redeliver(
    State(state): State<WebhooksState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<WebhookDelivery>), AppError> {
    let found = if id.len() <= 64 && id.starts_with("msg_") {
        state
            .store
            .redeliver(&session.account_id, &id, clock::millis(clock::now()))
            .await?
    } else {
        None
    };
    let Some(delivery) = found else {
        return Err(AppError::new(
            ErrorKind::NotFound,
            format!(
                "no delivery {id} to your webhooks; see them with `ckrv cloud webhooks deliveries`"
            ),
        ));
    };
    tracing::info!(account = %session.account_id, delivery = %id, "webhook delivery sent again");
    // Due now: the senders go at once rather than at their next recheck.
    state.events.changed(&delivery.job_id);
    let attempts = state.store.attempts(&delivery.id).await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(delivery_view(delivery, attempts)),
    ))
}
