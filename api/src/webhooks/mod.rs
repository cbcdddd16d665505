//! Webhooks: receivers of job events, an account's own (`ckrv cloud webhooks`) or the
//! operator's for every account (`ckrv-api webhooks`). A job's change writes its event into a
//! durable outbox in the same transaction (`store::webhooks`); the [`sender::Sender`] signs
//! each delivery as Standard Webhooks specifies and sends it, in order per webhook and job,
//! retrying with backoff for a day (docs/webhooks.md).
//!
//! May call `store`, `credentials` (sealing secrets), `identity` (the signed-in account) and
//! `jobs::events` (to wake the sender).

pub mod routes;
pub mod sender;
pub mod signing;
pub mod target;

use std::sync::Arc;

use axum::extract::FromRef;
use ckrv_wit::protocol::webhook_events;

use crate::credentials::secrets::{KeyRing, webhook_binding};
use crate::store::Store;

/// The most webhooks one account (or the operator) may have.
pub const MAX_WEBHOOKS: usize = 20;

/// What the webhook routes are handed.
#[derive(Clone, FromRef)]
pub struct WebhooksState {
    pub store: Store,
    /// Seals webhook secrets at rest.
    pub secrets: Arc<KeyRing>,
    /// The operator allows internal and loopback hosts (the repository URL policy's setting).
    pub allow_internal: bool,
    /// Wakes the senders (here and on other replicas) when a delivery is due again.
    pub events: crate::jobs::events::JobEvents,
}

/// A new webhook id: `wh_` and 24 hex digits.
pub fn new_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("wh_{}", hex::encode(bytes))
}

/// Whether `id` has a webhook id's form (anything else is not looked up).
pub fn valid_id(id: &str) -> bool {
    id.len() == 27 && id.starts_with("wh_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The events asked for, checked, without repeats, in the order given; `*` stands alone.
pub fn checked_events(events: &[String]) -> Result<Vec<String>, String> {
    if events.is_empty() {
        return Err(format!(
            "name at least one event ({}), or * for all",
            webhook_events::NAMES.join(", ")
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for event in events {
        let event = event.trim();
        if !webhook_events::NAMES.contains(&event) {
            return Err(format!(
                "{event:?} is not an event; use {}",
                webhook_events::NAMES.join(", ")
            ));
        }
        if !out.iter().any(|e| e == event) {
            out.push(event.to_owned());
        }
    }
    if out.len() > 1 && out.iter().any(|e| e == webhook_events::ALL) {
        return Ok(vec![webhook_events::ALL.to_owned()]);
    }
    Ok(out)
}

/// Everything a new webhook needs, for the API's route and the operator's command alike: the
/// checked URL and events, a new id and secret, and the secret sealed.
pub struct Prepared {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub secret: zeroize::Zeroizing<String>,
    pub sealed: crate::store::Sealed,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Invalid(String),
    #[error("sealing the webhook's secret: {0}")]
    Seal(#[from] crate::credentials::secrets::SecretsError),
}

pub fn prepare(
    secrets: &KeyRing,
    url: &str,
    events: &[String],
    allow_internal: bool,
) -> Result<Prepared, PrepareError> {
    let url = target::check(url, allow_internal).map_err(PrepareError::Invalid)?;
    let events = checked_events(events).map_err(PrepareError::Invalid)?;
    let id = new_id();
    let secret = signing::new_secret();
    let sealed = secrets.seal(&webhook_binding(&id), secret.as_bytes())?;
    Ok(Prepared {
        id,
        url: url.to_string(),
        events,
        secret,
        sealed,
    })
}

/// A new secret for the webhook `id`, and it sealed.
pub fn new_sealed_secret(
    secrets: &KeyRing,
    id: &str,
) -> Result<(zeroize::Zeroizing<String>, crate::store::Sealed), PrepareError> {
    let secret = signing::new_secret();
    let sealed = secrets.seal(&webhook_binding(id), secret.as_bytes())?;
    Ok((secret, sealed))
}

/// How long a rotated-out secret still signs.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 60 * 60 * 1000;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked_and_star_stands_alone() {
        let v = |s: &[&str]| s.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            checked_events(&v(&["job.failed", "job.succeeded", "job.failed"])).unwrap(),
            v(&["job.failed", "job.succeeded"])
        );
        assert_eq!(checked_events(&v(&["job.queued", "*"])).unwrap(), v(&["*"]));
        let error = checked_events(&v(&["job.done"])).unwrap_err();
        assert!(error.contains("job.done") && error.contains("job.succeeded"));
        assert!(checked_events(&[]).is_err());
        assert!(valid_id(&new_id()));
        assert!(!valid_id("wh_../../x") && !valid_id("wh_"));
    }
}
