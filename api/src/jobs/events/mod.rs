//! Wakes log followers when a job gains log lines or changes status. Followers re-read the
//! store after a wake-up, and on their own every [`JobEvents::recheck`], so a missed or
//! lagged notification only delays them. Replicas sharing PostgreSQL pass their wake-ups to
//! each other with `NOTIFY` ([`postgres`]); the database stays the only source of truth.

pub mod postgres;

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

/// How often a follower re-reads when nothing woke it.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<String>,
    /// Flips once, when the server begins to stop: followers end their streams.
    stopping: watch::Sender<bool>,
    /// Changes to tell the other replicas of, when there are any.
    outbox: Option<mpsc::UnboundedSender<String>>,
    recheck: Duration,
}

impl JobEvents {
    pub fn new(recheck: Duration) -> Self {
        let (sender, _) = broadcast::channel(256);
        let (stopping, _) = watch::channel(false);
        Self {
            sender,
            stopping,
            outbox: None,
            recheck,
        }
    }

    /// Events whose changes are also sent out on the returned receiver, for other replicas.
    pub fn with_outbox(recheck: Duration) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut events = Self::new(recheck);
        events.outbox = Some(tx);
        (events, rx)
    }

    pub fn recheck(&self) -> Duration {
        self.recheck
    }

    /// The server is stopping: every follower ends its stream.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether the server has begun to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once the server begins to stop.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.subscribe();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }

    /// Tells followers of `job_id`, here and on the other replicas, that something changed.
    pub fn changed(&self, job_id: &str) {
        self.wake_local(job_id);
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(job_id.to_string());
        }
    }

    /// Tells this replica's followers of `job_id` that something changed.
    pub fn wake_local(&self, job_id: &str) {
        // No receivers is fine: nobody is following.
        let _ = self.sender.send(job_id.to_string());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new(DEFAULT_RECHECK)
    }
}
