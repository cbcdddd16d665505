//! Webhooks and the outbox of their deliveries. A job's event is written by the same
//! transaction as the job's change ([`enqueue_event`]), one delivery per webhook that takes it,
//! so no crash loses one. The sender takes the first pending delivery of each webhook and job
//! (never a later one while an earlier waits), under a lease, so replicas share the work and
//! each receiver sees a job's events in order.

use sqlx::Row;

use super::{Sealed, Store, StoreError};

/// A webhook as stored, its secrets still sealed.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: String,
    /// `None` for the operator's, which take every account's events.
    pub account_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Sealed,
    /// The secret before the last rotation, and until when it still signs.
    pub previous: Option<(Sealed, i64)>,
    pub created_ms: i64,
}

/// A webhook about to be stored.
#[derive(Debug)]
pub struct NewWebhook<'a> {
    pub id: &'a str,
    pub account_id: Option<&'a str>,
    pub url: &'a str,
    pub events: &'a [String],
    pub secret: &'a Sealed,
    pub created_ms: i64,
}

/// One delivery: an event on its way to one webhook.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub seq: i64,
    pub id: String,
    pub webhook_id: String,
    pub job_id: String,
    pub account_id: String,
    pub event: String,
    pub job_state: String,
    pub job_phase: String,
    pub payload: Option<String>,
    pub status: DeliveryStatus,
    pub tries: i64,
    pub next_try_ms: i64,
    /// Tries go on until a day after this: the event, or the last redelivery.
    pub retry_from_ms: i64,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// No 2xx within the retry window.
    Failed,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(value: &str) -> Result<Self, StoreError> {
        match value {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::Corrupt(format!("delivery status {other:?}"))),
        }
    }
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub at_ms: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What a try came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again at this time.
    Retry(i64),
    /// Give up: the retry window has passed.
    Failed,
}

const WEBHOOK_COLUMNS: &str = "id, account_id, url, events, key_id, nonce, ciphertext, \
     previous_key_id, previous_nonce, previous_ciphertext, previous_until_ms, created_ms";

const DELIVERY_COLUMNS: &str = "seq, id, webhook_id, job_id, account_id, event, job_state, \
     job_phase, payload, status, tries, next_try_ms, retry_from_ms, created_ms";

/// `,a,b,`: the stored form, which one `LIKE '%,' || event || ',%'` matches.
fn stored_events(events: &[String]) -> String {
    format!(",{},", events.join(","))
}

fn webhook_row(row: &sqlx::any::AnyRow) -> Result<WebhookRow, StoreError> {
    let events: String = row.try_get("events")?;
    let previous = match (
        row.try_get::<Option<String>, _>("previous_key_id")?,
        row.try_get::<Option<Vec<u8>>, _>("previous_nonce")?,
        row.try_get::<Option<Vec<u8>>, _>("previous_ciphertext")?,
        row.try_get::<Option<i64>, _>("previous_until_ms")?,
    ) {
        (Some(key_id), Some(nonce), Some(ciphertext), Some(until)) => Some((
            Sealed {
                key_id,
                nonce,
                ciphertext,
            },
            until,
        )),
        _ => None,
    };
    Ok(WebhookRow {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        url: row.try_get("url")?,
        events: events
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
        secret: Sealed {
            key_id: row.try_get("key_id")?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        },
        previous,
        created_ms: row.try_get("created_ms")?,
    })
}

fn delivery_row(row: &sqlx::any::AnyRow) -> Result<DeliveryRow, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(DeliveryRow {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        webhook_id: row.try_get("webhook_id")?,
        job_id: row.try_get("job_id")?,
        account_id: row.try_get("account_id")?,
        event: row.try_get("event")?,
        job_state: row.try_get("job_state")?,
        job_phase: row.try_get("job_phase")?,
        payload: row.try_get("payload")?,
        status: DeliveryStatus::parse(&status)?,
        tries: row.try_get("tries")?,
        next_try_ms: row.try_get("next_try_ms")?,
        retry_from_ms: row.try_get("retry_from_ms")?,
        created_ms: row.try_get("created_ms")?,
    })
}

/// The due time of a delivery held behind its webhook's probe: never, until released.
pub const HELD_MS: i64 = i64::MAX;

/// Queues `event` of `job_id` for every webhook that takes it (the job's account's and the
/// operator's), with the job's state and phase as they are now: call it in the transaction that
/// made the change, after the change.
pub(super) async fn enqueue_event(
    conn: &mut sqlx::AnyConnection,
    job_id: &str,
    event: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let targets = sqlx::query(
        "SELECT w.id AS webhook_id, j.account_id, j.state, j.phase,
                CASE WHEN w.down_probe IS NULL THEN 0 ELSE 1 END AS down
         FROM webhooks w JOIN jobs j ON j.id = $1
         WHERE (w.account_id IS NULL OR w.account_id = j.account_id)
           AND (w.events LIKE $2 OR w.events = ',*,')
         ORDER BY w.id",
    )
    .bind(job_id)
    .bind(format!("%,{event},%"))
    .fetch_all(&mut *conn)
    .await?;
    for target in targets {
        // Behind a webhook that is down, a new delivery is held with the others.
        let down: i64 = target.try_get("down")?;
        let due_ms = if down == 0 { now_ms } else { HELD_MS };
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, job_id, account_id, event, job_state,
                                             job_phase, next_try_ms, retry_from_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(format!("msg_{}", uuid::Uuid::new_v4().simple()))
        .bind(target.try_get::<String, _>("webhook_id")?)
        .bind(job_id)
        .bind(target.try_get::<String, _>("account_id")?)
        .bind(event)
        .bind(target.try_get::<String, _>("state")?)
        .bind(target.try_get::<String, _>("phase")?)
        .bind(due_ms)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Marks `webhook` down with `probe` as its probe: its other pending deliveries are held
/// (due at [`HELD_MS`]) until the receiver answers, out of the sender's due reads, so a long
/// queue for a dead receiver costs those reads nothing. Once per outage, not per probe.
async fn hold(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    webhook: &str,
    probe: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhooks SET down_probe = $1 WHERE id = $2")
        .bind(probe)
        .bind(webhook)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET next_try_ms = $1
         WHERE webhook_id = $2 AND status = 'pending' AND id <> $3",
    )
    .bind(HELD_MS)
    .bind(webhook)
    .bind(probe)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks `webhook` up: its waiting deliveries are due at `now_ms`, in their order.
async fn release(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    webhook: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let held = sqlx::query(
        "UPDATE webhooks SET down_probe = NULL WHERE id = $1 AND down_probe IS NOT NULL",
    )
    .bind(webhook)
    .execute(&mut **tx)
    .await?;
    if held.rows_affected() > 0 {
        sqlx::query(
            "UPDATE webhook_deliveries SET next_try_ms = $1
             WHERE webhook_id = $2 AND status = 'pending' AND next_try_ms > $1",
        )
        .bind(now_ms)
        .bind(webhook)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    pub async fn insert_webhook(&self, new: &NewWebhook<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhooks (id, account_id, url, events, key_id, nonce, ciphertext,
                                   created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(new.id)
        .bind(new.account_id)
        .bind(new.url)
        .bind(stored_events(new.events))
        .bind(&new.secret.key_id)
        .bind(&new.secret.nonce)
        .bind(&new.secret.ciphertext)
        .bind(new.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The account's webhooks, or with `None` the operator's, oldest first.
    pub async fn webhooks(&self, account_id: Option<&str>) -> Result<Vec<WebhookRow>, StoreError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE account_id = $1 OR ($1 IS NULL AND account_id IS NULL)
             ORDER BY created_ms, id"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(webhook_row).collect()
    }

    /// The webhook `id`, whoever owns it.
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook_row).transpose()
    }

    /// Removes the account's (or with `None` the operator's) webhook `id` and its deliveries;
    /// false when it has no such webhook.
    pub async fn delete_webhook(
        &self,
        account_id: Option<&str>,
        id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM webhooks
             WHERE id = $1 AND (account_id = $2 OR ($2 IS NULL AND account_id IS NULL))",
        )
        .bind(id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if deleted {
            sqlx::query(
                "DELETE FROM webhook_attempts WHERE delivery_id IN
                   (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Gives the webhook a new secret; the current one keeps signing until `previous_until_ms`.
    /// False when the account (or with `None` the operator) has no such webhook.
    pub async fn rotate_webhook(
        &self,
        account_id: Option<&str>,
        id: &str,
        secret: &Sealed,
        previous_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET previous_key_id = key_id, previous_nonce = nonce,
                                 previous_ciphertext = ciphertext, previous_until_ms = $1,
                                 key_id = $2, nonce = $3, ciphertext = $4
             WHERE id = $5 AND (account_id = $6 OR ($6 IS NULL AND account_id IS NULL))",
        )
        .bind(previous_until_ms)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .bind(id)
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Webhooks with a secret sealed under a key other than `key_id`.
    pub async fn webhooks_not_under(&self, key_id: &str) -> Result<Vec<WebhookRow>, StoreError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE key_id <> $1 OR (previous_key_id IS NOT NULL AND previous_key_id <> $1)
             ORDER BY id"
        );
        let rows = sqlx::query(&sql).bind(key_id).fetch_all(&self.pool).await?;
        rows.iter().map(webhook_row).collect()
    }

    /// Replaces a webhook's sealed secrets (the previous one too, when it has one), unless its
    /// secret changed since `old` was read (then false: rotated or removed meanwhile).
    pub async fn reseal_webhook(
        &self,
        id: &str,
        old: &Sealed,
        current: &Sealed,
        previous: Option<&Sealed>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET key_id = $1, nonce = $2, ciphertext = $3,
                                 previous_key_id = COALESCE($4, previous_key_id),
                                 previous_nonce = COALESCE($5, previous_nonce),
                                 previous_ciphertext = COALESCE($6, previous_ciphertext)
             WHERE id = $7 AND key_id = $8 AND nonce = $9",
        )
        .bind(&current.key_id)
        .bind(&current.nonce)
        .bind(&current.ciphertext)
        .bind(previous.map(|p| p.key_id.as_str()))
        .bind(previous.map(|p| p.nonce.as_slice()))
        .bind(previous.map(|p| p.ciphertext.as_slice()))
        .bind(id)
        .bind(&old.key_id)
        .bind(&old.nonce)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The ids of deliveries due at `now_ms`: of each webhook and job, only the first pending
    /// one, only when no other sender holds it, and of a webhook that is down only its probe.
    pub async fn due_deliveries(&self, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT d.id FROM webhook_deliveries d
             WHERE d.status = 'pending' AND d.next_try_ms <= $1
               AND (d.lease_until_ms IS NULL OR d.lease_until_ms < $1)
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                               WHERE e.webhook_id = d.webhook_id AND e.job_id = d.job_id
                                 AND e.status = 'pending' AND e.seq < d.seq)
               AND NOT EXISTS (SELECT 1 FROM webhooks w
                               WHERE w.id = d.webhook_id AND w.down_probe IS NOT NULL
                                 AND w.down_probe <> d.id)
             ORDER BY d.seq LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Takes the pending delivery `id` until `lease_until_ms`, unless another sender holds it.
    pub async fn lease_delivery(
        &self,
        id: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let taken = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until_ms = $1
             WHERE id = $2 AND status = 'pending'
               AND (lease_until_ms IS NULL OR lease_until_ms < $3)",
        )
        .bind(lease_until_ms)
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() != 1 {
            return Ok(None);
        }
        self.delivery(id).await
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delivery_row).transpose()
    }

    /// Fixes the body every try of the delivery sends.
    pub async fn set_delivery_payload(&self, id: &str, payload: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_deliveries SET payload = $1 WHERE id = $2")
            .bind(payload)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a try and what it came to, and lets go of the lease. A try that got no answer
    /// and will be tried again marks its webhook down with this delivery as the probe, unless
    /// it has one; an answer, or the probe's end, marks it up.
    pub async fn record_attempt(
        &self,
        id: &str,
        attempt: &AttemptRow,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let unreachable = attempt.status_code.is_none();
        let (status, next_try_ms) = match outcome {
            Outcome::Delivered => (DeliveryStatus::Delivered, None),
            Outcome::Retry(at) => (DeliveryStatus::Pending, Some(at)),
            Outcome::Failed => (DeliveryStatus::Failed, None),
        };
        let mut tx = self.pool.begin().await?;
        // The tries of one webhook's deliveries are recorded one at a time, its row taken
        // first (PostgreSQL holds it to commit; SQLite has one writer anyway). Otherwise two
        // tries that failed together each held their own delivery's row while waiting for the
        // webhook's, which the other's `hold` needed: PostgreSQL ended one as a deadlock, the
        // try went unrecorded and its delivery stayed held behind the other's probe. Taken
        // first, the second also sees the first's verdict on the probe.
        sqlx::query(
            "UPDATE webhooks SET down_probe = down_probe
             WHERE id = (SELECT webhook_id FROM webhook_deliveries WHERE id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, at_ms, status_code, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(attempt.at_ms)
        .bind(attempt.status_code.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, tries = tries + 1, lease_until_ms = NULL,
                                           next_try_ms = COALESCE($2, next_try_ms)
             WHERE id = $3",
        )
        .bind(status.as_str())
        .bind(next_try_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let probe = sqlx::query(
            "SELECT w.id, w.down_probe FROM webhooks w
             JOIN webhook_deliveries d ON d.webhook_id = w.id WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = probe {
            let webhook: String = row.try_get("id")?;
            let probe: Option<String> = row.try_get("down_probe")?;
            if unreachable && matches!(outcome, Outcome::Retry(_)) {
                // The probe goes on at its own backoff; the others wait for its answer.
                if probe.is_none() {
                    hold(&mut tx, &webhook, id).await?;
                }
            } else if probe.is_some() && (!unreachable || probe.as_deref() == Some(id)) {
                // The receiver answered, or the probe ended.
                release(&mut tx, &webhook, now_ms).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deliveries to the account's own webhooks, newest first, of one webhook or job if named.
    pub async fn deliveries(
        &self,
        account_id: &str,
        webhook_id: Option<&str>,
        job_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(DeliveryRow, Vec<AttemptRow>)>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE account_id = $1
               AND webhook_id IN (SELECT id FROM webhooks WHERE account_id = $1)
               AND ($2 IS NULL OR webhook_id = $2) AND ($3 IS NULL OR job_id = $3)
             ORDER BY seq DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .bind(webhook_id)
            .bind(job_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let delivery = delivery_row(row)?;
            let attempts = self.attempts(&delivery.id).await?;
            out.push((delivery, attempts));
        }
        Ok(out)
    }

    pub async fn attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, status_code, error, duration_ms FROM webhook_attempts
             WHERE delivery_id = $1 ORDER BY at_ms",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let code: Option<i64> = row.try_get("status_code")?;
                Ok(AttemptRow {
                    at_ms: row.try_get("at_ms")?,
                    status_code: code.and_then(|c| u16::try_from(c).ok()),
                    error: row.try_get("error")?,
                    duration_ms: row.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// Sends the account's delivery `id` again (due now, its retry window counted from now);
    /// `None` when the account has no such delivery.
    pub async fn redeliver(
        &self,
        account_id: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_try_ms = $1, retry_from_ms = $1,
                                           lease_until_ms = NULL
             WHERE id = $2 AND account_id = $3
               AND webhook_id IN (SELECT id FROM webhooks WHERE account_id = $3)",
        )
        .bind(now_ms)
        .bind(id)
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let Some(delivery) = self.delivery(id).await? else {
            return Ok(None);
        };
        // Whoever asks to send again wants to know now whether the receiver is back.
        let mut tx = self.pool.begin().await?;
        release(&mut tx, &delivery.webhook_id, now_ms).await?;
        tx.commit().await?;
        Ok(Some(delivery))
    }

    /// Drops deliveries that ended before `before_ms` and their tries; how many went.
    pub async fn purge_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN
               (SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_ms < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_ms < $1",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(gone)
    }
}
