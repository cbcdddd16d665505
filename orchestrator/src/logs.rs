//! The job log: lines from the orchestrator, steps and agent go through one ordered channel and
//! are shipped to the API in batches, so a chatty agent costs few requests yet a reader following
//! the log sees each line within a quarter second. The agent's lines take a place among at most
//! [`MAX_IN_FLIGHT`] unshipped ones, so an agent faster than the API waits instead of filling
//! memory.

use ckrv_wit::types::{LogBatch, LogLevel, LogLine};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Longest a line waits before it is sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Most lines in one batch.
pub const MAX_BATCH: usize = 500;
/// Most agent lines written but not yet shipped.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// A line on its way, holding its place among the agent's unshipped lines.
#[derive(Debug)]
pub struct Queued {
    line: LogLine,
    _place: Option<OwnedSemaphorePermit>,
}

impl Queued {
    /// The line, giving up its place.
    pub fn into_line(self) -> LogLine {
        self.line
    }
}

/// Where a job log's lines arrive, in order.
pub type LogLines = mpsc::UnboundedReceiver<Queued>;

/// A handle for writing to the job log; cheap to clone.
#[derive(Clone, Debug)]
pub struct JobLog {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
}

impl JobLog {
    /// A log and the receiving end its lines arrive at, in order.
    pub fn channel() -> (Self, LogLines) {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        (Self { tx, room }, rx)
    }

    /// Writes a line of the orchestrator's or a step's own (a few per job).
    pub fn write(&self, level: LogLevel, source: &str, message: impl Into<String>) {
        self.queue(line(level, source, message.into()), None);
    }

    /// Writes a line of the agent's, waiting while too many are unshipped.
    pub async fn send(&self, level: LogLevel, source: &str, message: String) {
        let Ok(place) = Arc::clone(&self.room).acquire_owned().await else {
            return;
        };
        self.queue(line(level, source, message), Some(place));
    }

    fn queue(&self, line: LogLine, place: Option<OwnedSemaphorePermit>) {
        tracing::debug!(source = line.source, level = %line.level, message = line.message, "job log");
        // A closed channel means the job is over; late lines have nowhere to go.
        let _ = self.tx.send(Queued {
            line,
            _place: place,
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

fn line(level: LogLevel, source: &str, message: String) -> LogLine {
    LogLine {
        timestamp: crate::now(),
        level,
        source: source.to_string(),
        message,
    }
}

/// Ships lines until every [`JobLog`] handle is dropped, then flushes the rest and returns.
/// A batch's lines keep their places until it is sent.
pub async fn ship(mut rx: LogLines, mut sink: impl BatchSink, first_sequence: u64) {
    let mut next = first_sequence;
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
        let batch = LogBatch {
            first_sequence: next,
            lines: lines.iter().map(|q| q.line.clone()).collect(),
        };
        next += batch.lines.len() as u64;
        // The API client retries what may succeed later (its requests are safe to repeat); a
        // batch it gives up on is lost, and said so.
        let count = batch.lines.len();
        if let Err(error) = sink.send(batch).await {
            tracing::error!(lines = count, %error, "dropping log lines the API would not take");
        }
        drop(lines);
        if closed {
            break;
        }
    }
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
        let shipper = tokio::spawn(ship(rx, sink.clone(), 1));
        for i in 0..1200 {
            log.info("test", format!("line {i}"));
        }
        drop(log);
        shipper.await.unwrap();
        let batches = sink.0.lock().unwrap();
        assert!(batches.len() >= 3, "batches of at most {MAX_BATCH}");
        // Numbered from the first sequence on, without gaps or overlaps.
        let mut next = 1;
        for batch in batches.iter() {
            assert_eq!(batch.first_sequence, next);
            next += batch.lines.len() as u64;
        }
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
        let shipper = tokio::spawn(ship(rx, sink.clone(), 1));
        log.info("test", "hello");
        tokio::time::sleep(FLUSH_INTERVAL * 3).await;
        assert_eq!(sink.0.lock().unwrap().len(), 1);
        drop(log);
        shipper.await.unwrap();
    }
}
