//! `ckrv cloud webhooks add|list|rm|rotate|deliveries|redeliver`: the account's receivers of job
//! events. A signing secret is printed once, by `add` and `rotate`, and never logged; receivers
//! verify deliveries with it as Standard Webhooks specifies.

use ckrv_wit::types::{Webhook, WebhookAttempt, WebhookCreate, WebhookDelivery};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cli::{WebhookAddArgs, WebhookDeliveriesArgs, WebhooksCommand};
use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud, command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::Add(args) => add(cloud, args).await,
        WebhooksCommand::List { json } => list(cloud, json).await,
        WebhooksCommand::Rm { id } => {
            cloud
                .call(async |p, ctx| p.webhooks_remove(ctx, &id).await)
                .await?;
            output::ok(format!(
                "Webhook {id} removed: no more events are sent to it"
            ));
            Ok(())
        }
        WebhooksCommand::Rotate { id, json } => rotate(cloud, &id, json).await,
        WebhooksCommand::Deliveries(args) => deliveries(cloud, args).await,
        WebhooksCommand::Redeliver { id, json } => {
            let delivery = cloud
                .call(async |p, ctx| p.webhooks_redeliver(ctx, &id).await)
                .await?;
            if json {
                return output::json(&delivery);
            }
            output::ok(format!(
                "Delivery {} queued again: {} of job {} to {}",
                delivery.id,
                delivery.event,
                output::short_id(&delivery.job_id),
                delivery.webhook_id
            ));
            output::line("Follow it with `ckrv cloud webhooks deliveries`");
            Ok(())
        }
    }
}

async fn add(cloud: &mut Cloud, args: WebhookAddArgs) -> anyhow::Result<()> {
    let request = WebhookCreate {
        url: args.url,
        events: distinct(args.events),
    };
    let mut webhook = cloud
        .call(async |p, ctx| p.webhooks_add(ctx, &request).await)
        .await?;
    if args.json {
        return output::json(&webhook);
    }
    let secret = webhook.secret.take().map(Zeroizing::new);
    output::ok(format!("Webhook {} added", webhook.id));
    output::line(format!("URL: {}", webhook.url));
    output::line(format!("Events: {}", webhook.events.join(", ")));
    print_secret(secret.as_deref().map(String::as_str));
    Ok(())
}

async fn rotate(cloud: &mut Cloud, id: &str, json: bool) -> anyhow::Result<()> {
    let mut webhook = cloud
        .call(async |p, ctx| p.webhooks_rotate(ctx, id).await)
        .await?;
    if json {
        return output::json(&webhook);
    }
    let secret = webhook.secret.take().map(Zeroizing::new);
    output::ok(format!("Webhook {} has a new signing secret", webhook.id));
    print_secret(secret.as_deref().map(String::as_str));
    if let Some(until) = &webhook.previous_secret_expires_at {
        output::line(format!(
            "Deliveries are signed with the previous secret too until {until}: give the receiver \
             the new one before then"
        ));
    }
    Ok(())
}

/// The secret and what to do with it, at the one time it is shown.
fn print_secret(secret: Option<&str>) {
    output::blank();
    let Some(secret) = secret else {
        output::line("The service sent no signing secret");
        return;
    };
    output::line(format!("Signing secret: {secret}"));
    output::line(
        "It is shown only now: store it where your receiver reads it. The receiver verifies \
         each delivery's webhook-signature header with it, as Standard Webhooks specifies \
         (https://www.standardwebhooks.com)",
    );
}

/// The events as given, each once, in their order.
fn distinct(events: Vec<String>) -> Vec<String> {
    let mut seen = Vec::with_capacity(events.len());
    for event in events {
        if !seen.contains(&event) {
            seen.push(event);
        }
    }
    seen
}

async fn list(cloud: &mut Cloud, json: bool) -> anyhow::Result<()> {
    let webhooks = cloud
        .call(async |p, ctx| p.webhooks_list(ctx).await)
        .await?;
    if json {
        return output::json(&webhooks);
    }
    if webhooks.is_empty() {
        output::line(
            "No webhooks. Add one with `ckrv cloud webhooks add URL --events job.succeeded,job.failed`",
        );
        return Ok(());
    }
    let headers = ["ID", "URL", "EVENTS", "OPERATOR-WIDE"];
    for line in output::table(&headers, &webhook_rows(&webhooks)) {
        output::emit(line);
    }
    Ok(())
}

fn webhook_rows(webhooks: &[Webhook]) -> Vec<[String; 4]> {
    webhooks
        .iter()
        .map(|w| {
            [
                w.id.clone(),
                w.url.clone(),
                w.events.join(","),
                if w.operator_wide { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect()
}

async fn deliveries(cloud: &mut Cloud, args: WebhookDeliveriesArgs) -> anyhow::Result<()> {
    // A job is named as everywhere else: by its id or a prefix of it.
    let job = match &args.job {
        Some(id) => Some(cloud.job(id).await?.id),
        None => None,
    };
    let deliveries = cloud
        .call(async |p, ctx| {
            p.webhooks_deliveries(ctx, args.webhook.as_deref(), job.as_deref(), args.limit)
                .await
        })
        .await?;
    if args.json {
        return output::json(&deliveries);
    }
    if deliveries.is_empty() {
        output::line("No deliveries. Each job event is sent to the webhooks that asked for it");
        return Ok(());
    }
    let headers = [
        "ID",
        "EVENT",
        "JOB",
        "STATUS",
        "ATTEMPTS",
        "LAST",
        "NEXT ATTEMPT",
    ];
    let rows = delivery_rows(&deliveries, OffsetDateTime::now_utc());
    for line in output::table(&headers, &rows) {
        output::emit(line);
    }
    Ok(())
}

fn delivery_rows(deliveries: &[WebhookDelivery], now: OffsetDateTime) -> Vec<[String; 7]> {
    deliveries
        .iter()
        .map(|d| {
            [
                d.id.clone(),
                d.event.clone(),
                output::short_id(&d.job_id).to_string(),
                d.status.clone(),
                d.attempts.len().to_string(),
                d.attempts.last().map_or_else(|| "-".to_string(), last),
                match (d.next_attempt_at.as_deref(), d.status.as_str()) {
                    (Some(at), _) => output::ahead(at, now),
                    // Held behind the one delivery that probes an unreachable receiver.
                    (None, "pending") => "when the receiver answers".to_string(),
                    (None, _) => "-".to_string(),
                },
            ]
        })
        .collect()
}

/// Longest error a table cell shows.
const ERROR_CELL: usize = 48;

/// What the last try got: the receiver's status code, or why there was none.
fn last(attempt: &WebhookAttempt) -> String {
    let error = attempt.error.as_deref().map(|e| {
        if e.chars().count() > ERROR_CELL {
            let cut: String = e.chars().take(ERROR_CELL - 1).collect();
            format!("{cut}…")
        } else {
            e.to_string()
        }
    });
    match (attempt.status_code, error) {
        (Some(code), Some(error)) => format!("HTTP {code}: {error}"),
        (Some(code), None) => format!("HTTP {code}"),
        (None, Some(error)) => error,
        (None, None) => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn delivery(json: serde_json::Value) -> WebhookDelivery {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn deliveries_show_the_last_try_and_the_next() {
        let now = datetime!(2026-11-22 12:00:00 UTC);
        let pending = delivery(serde_json::json!({
            "id": "msg_1", "webhook_id": "wh_1", "job_id": "3f8a9b2c-1234-5678",
            "event": "job.failed", "created_at": "2026-11-22T11:50:00Z", "status": "pending",
            "next_attempt_at": "2026-11-22T12:05:00Z",
            "attempts": [
                {"at": "2026-11-22T11:50:00Z", "error": "connection refused", "duration_ms": 3},
                {"at": "2026-11-22T11:55:00Z", "status_code": 503, "duration_ms": 40},
            ],
        }));
        let delivered = delivery(serde_json::json!({
            "id": "msg_2", "webhook_id": "wh_1", "job_id": "3f8a9b2c-1234-5678",
            "event": "job.succeeded", "created_at": "2026-11-22T11:50:00Z",
            "status": "delivered", "attempts": [],
        }));
        let held = delivery(serde_json::json!({
            "id": "msg_3", "webhook_id": "wh_1", "job_id": "3f8a9b2c-1234-5678",
            "event": "job.started", "created_at": "2026-11-22T11:50:00Z",
            "status": "pending", "attempts": [],
        }));
        let rows = delivery_rows(&[pending, delivered, held], now);
        assert_eq!(
            rows[0],
            [
                "msg_1",
                "job.failed",
                "3f8a9b2c",
                "pending",
                "2",
                "HTTP 503",
                "in 5 minutes"
            ]
            .map(String::from)
        );
        assert_eq!(rows[1][4..], ["0", "-", "-"].map(String::from));
        assert_eq!(rows[2][6], "when the receiver answers");
    }

    #[test]
    fn a_long_error_is_cut_short_and_a_code_comes_first() {
        let attempt = |code: Option<u16>, error: Option<&str>| WebhookAttempt {
            at: "2026-11-22T11:50:00Z".into(),
            status_code: code,
            error: error.map(String::from),
            duration_ms: 1,
        };
        let long = "x".repeat(200);
        let shown = last(&attempt(None, Some(&long)));
        assert_eq!(shown.chars().count(), ERROR_CELL);
        assert!(shown.ends_with('…'));
        assert_eq!(
            last(&attempt(Some(400), Some("bad signature"))),
            "HTTP 400: bad signature"
        );
        assert_eq!(last(&attempt(None, None)), "-");
    }

    #[test]
    fn webhooks_list_without_their_secrets() {
        let webhook: Webhook = serde_json::from_value(serde_json::json!({
            "id": "wh_0123456789abcdef01234567", "url": "https://hooks.example.com/ckrv",
            "events": ["job.succeeded", "job.failed"], "created_at": "2026-11-22T11:50:00Z",
            "operator_wide": false, "secret": "whsec_c2VjcmV0",
        }))
        .unwrap();
        let rows = webhook_rows(std::slice::from_ref(&webhook));
        assert_eq!(
            rows[0],
            [
                "wh_0123456789abcdef01234567",
                "https://hooks.example.com/ckrv",
                "job.succeeded,job.failed",
                "no"
            ]
            .map(String::from)
        );
        assert!(!format!("{webhook:?}").contains("whsec_"));
    }

    #[test]
    fn events_are_sent_once_each_in_their_order() {
        let events = ["job.failed", "job.succeeded", "job.failed"].map(String::from);
        assert_eq!(
            distinct(events.into()),
            ["job.failed", "job.succeeded"].map(String::from)
        );
    }
}
