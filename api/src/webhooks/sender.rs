//! Works the outbox: sends each due delivery, signed, and records what came of it. It runs
//! beside the job engine, never in its way: the engine only writes outbox rows in its own
//! transactions, and a slow or dead receiver holds up only its own webhook's deliveries of one
//! job, which wait in order behind the first. Any replica may send; a lease keeps two from
//! sending the same delivery at once, and a lease left by a crashed replica runs out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ckrv_wit::types::{JobPhase, JobState};
use serde_json::json;
use tokio::task::JoinSet;

use crate::clock;
use crate::credentials::secrets::{KeyRing, webhook_binding};
use crate::jobs::events::JobEvents;
use crate::metrics::Metrics;
use crate::store::{AttemptRow, DeliveryRow, Outcome, Store, StoreError, WebhookRow};
use crate::webhooks::signing;

/// A failed delivery is tried again until this long after its event.
pub const RETRY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// The longest wait between two tries.
const MAX_BACKOFF_MS: i64 = 60 * 60 * 1000;
/// How long a sender holds a delivery: longer than a try can take.
const LEASE_MS: i64 = 60 * 1000;
/// How often the outbox is read when nothing woke the sender.
const RECHECK: Duration = Duration::from_secs(1);
/// How many deliveries are on their way at once.
const IN_FLIGHT: usize = 32;
/// How long ended deliveries stay listed.
const HISTORY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The wait after the `tries`-th failed try: 1 s, doubling, at most an hour.
pub fn backoff_ms(tries: i64) -> i64 {
    let doublings = u32::try_from(tries.clamp(1, 32) - 1).unwrap_or(0);
    1000_i64.saturating_mul(1 << doublings).min(MAX_BACKOFF_MS)
}

#[derive(Clone)]
pub struct Sender {
    pub store: Store,
    pub secrets: Arc<KeyRing>,
    pub client: reqwest::Client,
    /// Wakes the sender when a job changes (here, or on another replica).
    pub events: JobEvents,
    pub metrics: Arc<Metrics>,
}

impl Sender {
    /// Sends until the server stops.
    pub async fn run(self) {
        let mut wake = self.events.subscribe();
        let stopping = self.events.stopping();
        tokio::pin!(stopping);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut last_purge: Option<Instant> = None;
        loop {
            if last_purge.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                last_purge = Some(Instant::now());
                let before = clock::millis(clock::now()) - HISTORY_MS;
                if let Err(error) = self.store.purge_deliveries(before).await {
                    tracing::warn!(%error, "dropping old webhook deliveries");
                }
            }
            if let Err(error) = self.start_due(&mut in_flight).await {
                tracing::warn!(%error, "reading the webhook outbox");
            }
            tokio::select! {
                () = &mut stopping => break,
                _ = wake.recv() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
        // Deliveries under way end here; their leases run out and another try sends them.
        in_flight.abort_all();
    }

    async fn start_due(&self, in_flight: &mut JoinSet<()>) -> Result<(), StoreError> {
        let free = IN_FLIGHT.saturating_sub(in_flight.len());
        if free == 0 {
            return Ok(());
        }
        let now = clock::millis(clock::now());
        let limit = i64::try_from(free).unwrap_or(1);
        for id in self.store.due_deliveries(now, limit).await? {
            if let Some(delivery) = self.store.lease_delivery(&id, now, now + LEASE_MS).await? {
                let sender = self.clone();
                in_flight.spawn(async move {
                    if let Err(error) = sender.deliver(delivery).await {
                        tracing::warn!(%error, "a webhook delivery");
                    }
                });
            }
        }
        Ok(())
    }

    /// One try of `delivery`, recorded.
    async fn deliver(&self, delivery: DeliveryRow) -> Result<(), StoreError> {
        let Some(webhook) = self.store.webhook(&delivery.webhook_id).await? else {
            return Ok(()); // removed with its deliveries meanwhile
        };
        let body = match &delivery.payload {
            Some(body) => body.clone(),
            None => {
                let body = self.payload(&delivery).await?;
                self.store.set_delivery_payload(&delivery.id, &body).await?;
                body
            }
        };
        let started = Instant::now();
        let at = clock::now();
        let answer = self.send(&webhook, &delivery.id, &body).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status_code, error) = match answer {
            Ok(code) => (Some(code), None),
            Err(error) => (None, Some(error)),
        };
        let delivered = status_code.is_some_and(|code| (200..300).contains(&code));
        let now = clock::millis(clock::now());
        let outcome = if delivered {
            Outcome::Delivered
        } else if now - delivery.retry_from_ms >= RETRY_WINDOW_MS {
            Outcome::Failed
        } else {
            Outcome::Retry(now + backoff_ms(delivery.tries + 1))
        };
        self.metrics.webhook_try(match outcome {
            Outcome::Delivered => "delivered",
            Outcome::Retry(_) => "retry",
            Outcome::Failed => "failed",
        });
        tracing::info!(
            delivery = %delivery.id,
            webhook = %webhook.id,
            job = %delivery.job_id,
            event = %delivery.event,
            status = ?status_code,
            error = error.as_deref().unwrap_or(""),
            ?outcome,
            "webhook delivery"
        );
        let attempt = AttemptRow {
            at_ms: clock::millis(at),
            status_code,
            error,
            duration_ms,
        };
        self.store
            .record_attempt(&delivery.id, &attempt, outcome, now)
            .await
    }

    /// The body: the event's type and time, and the job in the contract's shape with the state
    /// and phase it had at the event.
    async fn payload(&self, delivery: &DeliveryRow) -> Result<String, StoreError> {
        let data = match self.store.job(&delivery.job_id).await? {
            Some(mut row) => {
                if let Ok(state) = delivery.job_state.parse::<JobState>() {
                    row.job.status = state.status();
                    row.job.result_status = state.result_status();
                }
                if let Ok(phase) = delivery.job_phase.parse::<JobPhase>() {
                    row.job.phase = Some(phase);
                }
                serde_json::to_value(&row.job).unwrap_or_else(|_| json!({}))
            }
            None => json!({ "id": delivery.job_id }),
        };
        let body = json!({
            "type": delivery.event,
            "timestamp": clock::rfc3339(clock::from_millis(delivery.created_ms)),
            "data": { "job": data, "state": delivery.job_state },
        });
        Ok(body.to_string())
    }

    /// POSTs `body` signed with the webhook's secrets; the status code, or why there is none.
    async fn send(&self, webhook: &WebhookRow, id: &str, body: &str) -> Result<u16, String> {
        let now = clock::now();
        let binding = webhook_binding(&webhook.id);
        // The sealed value is the `whsec_…` text; its key is what signs.
        let open = |sealed| {
            self.secrets
                .open(sealed, &binding)
                .ok()
                .and_then(|text| signing::key_of(std::str::from_utf8(&text).ok()?))
                .ok_or_else(|| {
                    tracing::error!(webhook = %webhook.id, "a webhook secret does not open with the server's keys");
                    "the webhook's secret does not open with the server's keys".to_owned()
                })
        };
        let mut keys = vec![open(&webhook.secret)?];
        if let Some((previous, until)) = &webhook.previous
            && *until > clock::millis(now)
        {
            keys.push(open(previous)?);
        }
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let timestamp = now.unix_timestamp();
        let signature = signing::signature_header(&keys, id, timestamp, body.as_bytes());
        let response = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(response.status().as_u16())
    }
}

/// A transport error with its causes, as one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "the receiver did not answer in time".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_back_off_doubling_up_to_an_hour() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(13), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(1000), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(0), 1000);
    }
}
