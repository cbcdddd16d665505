//! Wakes log followers when a job gains log lines or changes status. Followers re-read the
//! store after a wake-up, so a missed or lagged notification only delays them.

use tokio::sync::{broadcast, watch};

#[derive(Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<String>,
    /// Flips once, when the server begins to stop: followers end their streams.
    stopping: watch::Sender<bool>,
}

impl JobEvents {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(256);
        let (stopping, _) = watch::channel(false);
        Self { sender, stopping }
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

    /// Tells followers of `job_id` that something changed.
    pub fn changed(&self, job_id: &str) {
        // No receivers is fine: nobody is following.
        let _ = self.sender.send(job_id.to_string());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new()
    }
}
