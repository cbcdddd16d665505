//! Wakes log followers when a job gains log lines or changes status. Followers re-read the
//! store after a wake-up, so a missed or lagged notification only delays them.

use tokio::sync::broadcast;

#[derive(Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<String>,
}

impl JobEvents {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(256);
        Self { sender }
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
