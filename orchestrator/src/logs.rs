//! The job log: lines from the orchestrator, steps and agent, and the job's phases between them,
//! go through one ordered channel and are shipped to the outbox, lines in batches. A line goes
//! at once when nothing waits to be delivered; while a batch waits, lines gather behind it (for
//! at most a quarter second), so a chatty agent costs few requests and a reader following the
//! log sees a lone line within a round trip. The agent's lines take a place among at most [`MAX_IN_FLIGHT`] unshipped ones, so an
//! agent faster than the outbox waits instead of filling memory.

use crate::outbox::{Outgoing, Report};
use ckrv_wit::types::{LogBatch, LogLevel, LogLine, PhaseUpdate};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Longest a line waits before it is sent.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// While a batch waits to be delivered, how often the shipper looks whether it has gone.
const IDLE_CHECK: Duration = Duration::from_millis(5);
/// The least time between two batches: a chatty agent makes at most 20 requests a second.
const MIN_GAP: Duration = Duration::from_millis(50);
/// Most lines in one batch.
pub const MAX_BATCH: usize = 500;
/// Most agent lines written but not yet shipped.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// A line on its way, holding its place among the agent's unshipped lines; a phase; or a
/// barrier (see [`JobLog::delivered`]).
#[derive(Debug)]
pub enum Queued {
    Line {
        line: LogLine,
        _place: Option<OwnedSemaphorePermit>,
    },
    Phase(PhaseUpdate),
    Barrier(oneshot::Sender<()>),
}

impl Queued {
    /// The line, giving up its place; `None` for a phase.
    pub fn into_line(self) -> Option<LogLine> {
        match self {
            Self::Line { line, .. } => Some(line),
            Self::Phase(_) | Self::Barrier(_) => None,
        }
    }
}

/// Where a job log's lines arrive, in order.
pub type LogLines = mpsc::UnboundedReceiver<Queued>;

/// A handle for writing to the job log; cheap to clone.
#[derive(Clone, Debug)]
pub struct JobLog {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    scrubber: Scrubber,
}

/// What a secret's value becomes in a log line.
pub const REDACTED: &str = "[redacted]";

/// Replaces known secret values (the agent's secrets) in text bound for the API.
#[derive(Clone, Debug, Default)]
pub struct Scrubber {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Arc<[String]>,
}

impl Scrubber {
    pub fn new(secrets: Vec<String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self {
            secrets: secrets.into(),
        }
    }

    /// `text` with every secret value replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in self.secrets.iter() {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }
}

impl JobLog {
    /// A log and the receiving end its lines arrive at, in order.
    pub fn channel() -> (Self, LogLines) {
        Self::scrubbing(Scrubber::default())
    }

    /// As [`JobLog::channel`], replacing each of `secrets` with [`REDACTED`] in every line.
    pub fn scrubbing(scrubber: Scrubber) -> (Self, LogLines) {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        (Self { tx, room, scrubber }, rx)
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

    fn queue(&self, mut line: LogLine, place: Option<OwnedSemaphorePermit>) {
        line.message = self.scrubber.scrub(&line.message);
        tracing::debug!(source = line.source, level = %line.level, message = line.message, "job log");
        // A closed channel means the job is over; late lines have nowhere to go.
        let _ = self.tx.send(Queued::Line {
            line,
            _place: place,
        });
    }

    /// Reports the job's new phase after the lines written before it.
    pub fn phase(&self, update: PhaseUpdate) {
        let _ = self.tx.send(Queued::Phase(update));
    }

    /// Waits until the API has taken every line and phase written so far, however long it is
    /// away; false if it never will (the outbox gave up).
    pub async fn delivered(&self) -> bool {
        let (barrier, opened) = oneshot::channel();
        self.tx.send(Queued::Barrier(barrier)).is_ok() && opened.await.is_ok()
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

fn line(level: LogLevel, source: &str, message: String) -> LogLine {
    LogLine {
        timestamp: ckrv_wit::timestamp::now(),
        level,
        source: source.to_string(),
        message,
    }
}

/// Ships lines and phases to the outbox until every [`JobLog`] handle is dropped, then flushes
/// the rest and returns.
pub async fn ship(mut rx: LogLines, outbox: mpsc::Sender<Outgoing>, first_sequence: u64) {
    let mut next = first_sequence;
    let mut lines: Vec<Queued> = Vec::new();
    let mut closed = false;
    let mut last_sent: Option<tokio::time::Instant> = None;
    while !closed {
        let Some(first) = rx.recv().await else { break };
        // What ends this batch early: a phase or a barrier, sent after the lines before it.
        let mut after = None;
        match first {
            Queued::Line { .. } => lines.push(first),
            other => after = Some(other),
        }
        let deadline = tokio::time::Instant::now() + FLUSH_INTERVAL;
        let ready_at = last_sent
            .map_or_else(tokio::time::Instant::now, |at| at + MIN_GAP)
            .min(deadline);
        while after.is_none() && !lines.is_empty() && lines.len() < MAX_BATCH {
            // What is already written joins the batch.
            match rx.try_recv() {
                Ok(line @ Queued::Line { .. }) => {
                    lines.push(line);
                    continue;
                }
                Ok(other) => {
                    after = Some(other);
                    break;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            // Nothing waits to be delivered and the last batch was a while ago: send now
            // rather than wait for company.
            let now = tokio::time::Instant::now();
            let idle = outbox.capacity() == outbox.max_capacity();
            if (idle && now >= ready_at) || now >= deadline {
                break;
            }
            let wake = if idle { ready_at } else { now + IDLE_CHECK };
            match tokio::time::timeout_at(wake.min(deadline), rx.recv()).await {
                Ok(Some(line @ Queued::Line { .. })) => lines.push(line),
                Ok(Some(other)) => after = Some(other),
                Ok(None) => closed = true,
                Err(_) => {}
            }
            if closed {
                break;
            }
        }
        if !lines.is_empty() {
            let batch = LogBatch {
                first_sequence: next,
                lines: lines.drain(..).filter_map(Queued::into_line).collect(),
            };
            next += batch.lines.len() as u64;
            last_sent = Some(tokio::time::Instant::now());
            if outbox
                .send(Outgoing::Report(Report::Logs(batch)))
                .await
                .is_err()
            {
                return;
            }
        }
        let after = match after {
            Some(Queued::Phase(update)) => Outgoing::Report(Report::Phase(Box::new(update))),
            Some(Queued::Barrier(barrier)) => Outgoing::Barrier(barrier),
            _ => continue,
        };
        if outbox.send(after).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ckrv_wit::types::JobPhase;

    /// Everything shipped, once the log is closed.
    async fn shipped(log: JobLog, rx: LogLines) -> Vec<Report> {
        let (tx, mut reports) = mpsc::channel(4);
        let shipper = tokio::spawn(ship(rx, tx, 1));
        drop(log);
        let mut all = Vec::new();
        while let Some(item) = reports.recv().await {
            if let Outgoing::Report(report) = item {
                all.push(report);
            }
        }
        shipper.await.unwrap();
        all
    }

    fn batches(reports: &[Report]) -> Vec<&LogBatch> {
        reports
            .iter()
            .filter_map(|r| match r {
                Report::Logs(batch) => Some(batch),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn lines_arrive_in_order_and_are_flushed_at_the_end() {
        let (log, rx) = JobLog::channel();
        for i in 0..1200 {
            log.info("test", format!("line {i}"));
        }
        let reports = shipped(log, rx).await;
        let batches = batches(&reports);
        assert!(batches.len() >= 3, "batches of at most {MAX_BATCH}");
        // Numbered from the first sequence on, without gaps or overlaps.
        let mut next = 1;
        for batch in &batches {
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
    async fn a_phase_goes_out_between_the_lines_written_before_and_after_it() {
        let (log, rx) = JobLog::channel();
        log.info("test", "cloning…");
        log.phase(PhaseUpdate {
            phase: JobPhase::Agent,
            agent: Some("script".into()),
            setup: None,
            setup_egress: None,
            verification: None,
        });
        log.info("test", "agent says hi");
        let reports = shipped(log, rx).await;
        let kinds: Vec<String> = reports
            .iter()
            .map(|r| match r {
                Report::Logs(b) => format!("{}:{}", b.first_sequence, b.lines[0].message),
                Report::Phase(p) => format!("phase {}", p.phase),
                Report::Complete(_) => "complete".into(),
            })
            .collect();
        assert_eq!(kinds, ["1:cloning…", "phase agent", "2:agent says hi"]);
    }

    #[tokio::test]
    async fn a_quiet_log_is_still_flushed_promptly() {
        let (log, rx) = JobLog::channel();
        let (tx, mut reports) = mpsc::channel(4);
        let shipper = tokio::spawn(ship(rx, tx, 1));
        log.info("test", "hello");
        let first = tokio::time::timeout(FLUSH_INTERVAL * 3, reports.recv()).await;
        assert!(
            matches!(first, Ok(Some(Outgoing::Report(Report::Logs(_))))),
            "{first:?}"
        );
        drop(log);
        shipper.await.unwrap();
    }

    /// Reports as the outbox would take them: each delivery takes `rtt` (virtual time).
    async fn deliver_slowly(
        mut reports: mpsc::Receiver<Outgoing>,
        rtt: Duration,
    ) -> Vec<(tokio::time::Instant, Report)> {
        let mut got = Vec::new();
        while let Some(item) = reports.recv().await {
            if let Outgoing::Report(report) = item {
                got.push((tokio::time::Instant::now(), report));
                tokio::time::sleep(rtt).await;
            }
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_line_goes_at_once_and_a_chatty_agent_in_few_batches() {
        let (log, rx) = JobLog::channel();
        let (tx, reports) = mpsc::channel(crate::outbox::BUFFER);
        let shipper = tokio::spawn(ship(rx, tx, 1));
        let receiver = tokio::spawn(deliver_slowly(reports, Duration::from_millis(3)));
        // A lone line after a quiet while.
        let written = tokio::time::Instant::now();
        log.info("test", "alone");
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Then one line every 2 ms for 400 ms.
        for i in 0..200 {
            log.info("test", format!("chatty {i}"));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(log);
        shipper.await.unwrap();
        let got = receiver.await.unwrap();
        let (first_at, first) = &got[0];
        assert!(matches!(first, Report::Logs(b) if b.lines[0].message == "alone"));
        assert_eq!(*first_at, written, "the lone line did not wait");
        let chatty: usize = got[1..]
            .iter()
            .filter(|(_, r)| matches!(r, Report::Logs(_)))
            .count();
        // 400 ms at most one batch per MIN_GAP, and the last one at the end.
        assert!(chatty <= 10, "{chatty} batches for 200 lines");
        let total: usize = got
            .iter()
            .map(|(_, r)| match r {
                Report::Logs(b) => b.lines.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(total, 201);
    }
}
