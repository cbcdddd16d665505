//! Wake-ups between replicas that share one PostgreSQL database: each replica `NOTIFY`s the
//! jobs it changed and `LISTEN`s for the others'. Only a wake-up: followers then read the
//! database, and re-read it on their own anyway, so a lost notification only delays them.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use super::JobEvents;
use crate::store::Store;

/// The channel jobs' changes are announced on; the payload is the job id.
pub const CHANNEL: &str = "ckrv_jobs";

/// Publishes this replica's changes and relays the other replicas', until dropped.
pub async fn relay(
    url: url::Url,
    store: Store,
    events: JobEvents,
    mut outbox: mpsc::UnboundedReceiver<String>,
) {
    let publish = async {
        while let Some(job_id) = outbox.recv().await {
            if let Err(error) = store.notify(CHANNEL, &job_id).await {
                tracing::warn!(%error, "announcing a job's change to the other replicas");
            }
        }
    };
    let listen = async {
        loop {
            if let Err(error) = listen(&url, &events).await {
                tracing::warn!(%error, "listening for the other replicas' changes; retrying");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(publish, listen);
}

async fn listen(url: &url::Url, events: &JobEvents) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url.as_str()).await?;
    listener.listen(CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        events.wake_local(notification.payload());
    }
}
