//! The job log: lines from the orchestrator, steps and agent go through one ordered channel and
//! are shipped to the API in batches, so a chatty agent costs few requests yet a reader following
//! the log sees each line within a quarter second.

use ckrv_wit::types::{LogBatch, LogLevel, LogLine};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest a line waits before it is sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Most lines in one batch.
pub const MAX_BATCH: usize = 500;

/// A handle for writing to the job log; cheap to clone.
#[derive(Clone, Debug)]
pub struct JobLog {
    tx: mpsc::UnboundedSender<LogLine>,
}

impl JobLog {
    /// A log and the receiving end its lines arrive at, in order.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<LogLine>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn write(&self, level: LogLevel, source: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(source, %level, message, "job log");
        // A closed channel means the job is over; late lines have nowhere to go.
        let _ = self.tx.send(LogLine {
            timestamp: crate::now(),
            level,
            source: source.to_string(),
            message,
        });
    }

    pub fn info(&self, source: &str, message: impl Into<String>) {
        self.write(LogLevel::Info, source, message);
    }

    pub fn warn(&self, source: &str, message: impl Into<String>) {
        self.write(LogLevel::Warn, source, message);
    }

    pub fn error(&self, source: &str, message: impl Into<String>) {
        self.write(LogLevel::Error, source, message);
    }
}

/// Where batches go: the API, or a test's vector.
pub trait BatchSink: Send + 'static {
    fn send(&mut self, batch: LogBatch) -> impl Future<Output = Result<(), String>> + Send;
}

impl BatchSink for crate::api_client::ApiClient {
    async fn send(&mut self, batch: LogBatch) -> Result<(), String> {
        self.logs(&batch).await.map_err(|e| e.to_string())
    }
}

/// Ships lines until every [`JobLog`] handle is dropped, then flushes the rest and returns.
pub async fn ship(mut rx: mpsc::UnboundedReceiver<LogLine>, mut sink: impl BatchSink) {
    while let Some(first) = rx.recv().await {
        let mut lines = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        let mut closed = false;
        while lines.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        send_with_retry(&mut sink, LogBatch { lines }).await;
        if closed {
            break;
        }
    }
}

async fn send_with_retry(sink: &mut impl BatchSink, batch: LogBatch) {
    for attempt in 1..=3u32 {
        match sink.send(batch.clone()).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(attempt, %error, "sending log lines failed");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(
        lines = batch.lines.len(),
        "dropping log lines the API would not take"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct VecSink(Arc<Mutex<Vec<LogBatch>>>);

    impl BatchSink for VecSink {
        async fn send(&mut self, batch: LogBatch) -> Result<(), String> {
            self.0.lock().unwrap().push(batch);
            Ok(())
        }
    }

    #[tokio::test]
    async fn lines_arrive_in_order_and_are_flushed_at_the_end() {
        let (log, rx) = JobLog::channel();
        let sink = VecSink::default();
        let shipper = tokio::spawn(ship(rx, sink.clone()));
        for i in 0..1200 {
            log.info("test", format!("line {i}"));
        }
        drop(log);
        shipper.await.unwrap();
        let batches = sink.0.lock().unwrap();
        assert!(batches.len() >= 3, "batches of at most {MAX_BATCH}");
        let all: Vec<_> = batches
            .iter()
            .flat_map(|b| b.lines.iter().map(|l| l.message.clone()))
            .collect();
        let expected: Vec<_> = (0..1200).map(|i| format!("line {i}")).collect();
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn a_quiet_log_is_still_flushed_promptly() {
        let (log, rx) = JobLog::channel();
        let sink = VecSink::default();
        let shipper = tokio::spawn(ship(rx, sink.clone()));
        log.info("test", "hello");
        tokio::time::sleep(FLUSH_INTERVAL * 3).await;
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        drop(log);
        shipper.await.unwrap();
    }
}
