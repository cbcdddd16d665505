//! What the worker tells the API (log batches, phases, its completion) leaves in the order it
//! happened. While the API does not answer, reports wait in a spool file on disk, one JSON
//! report per line, and are replayed oldest first when it returns, each until the API takes it:
//! an outage of any length (up to [`GIVE_UP_AFTER`]) loses and repeats nothing, and the agent
//! keeps running meanwhile, its output going to disk instead of filling memory. Log batches
//! carry their sequence numbers, so one the API took just before it went away is stored once.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ckrv_wit::types::{JobCompletion, LogBatch, PhaseUpdate};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Reports handed over but not yet sent or spooled: a little slack between the log shipper and
/// a slow API.
pub const BUFFER: usize = 16;
/// An API away longer than this is not coming back for this job.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// One thing the worker tells the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    Logs(LogBatch),
    /// Boxed: with a verification it is the largest report by far.
    Phase(Box<PhaseUpdate>),
    Complete(JobCompletion),
}

/// What the outbox is handed, in order.
#[derive(Debug)]
pub enum Outgoing {
    Report(Report),
    /// Answered once every report handed over before it is delivered: how a step that talks
    /// to the API waits for it to be back.
    Barrier(oneshot::Sender<()>),
}

/// How one attempt to deliver a report went.
#[derive(Debug)]
pub enum Delivery {
    Taken,
    /// The API answered and will never take it (e.g. the job ended elsewhere): dropped.
    Refused(String),
    /// The API did not answer, or is restarting: try again later.
    Unreachable(String),
}

/// Where reports go: the API, or a test's script.
pub trait ReportSink: Send + 'static {
    fn deliver(&mut self, report: &Report) -> impl Future<Output = Delivery> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("keeping reports on disk at {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("the API has not answered for {0:?}; {1} reports were not delivered")]
    GaveUp(Duration, u64),
}

/// What delivery came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    pub taken: usize,
    pub refused: usize,
    /// Reports that waited on disk at some point.
    pub spooled: usize,
}

/// Delivers every report from `reports` in order until the channel closes and all are
/// delivered, spooling to `spool` while the API is away.
pub async fn deliver(
    mut outgoing: mpsc::Receiver<Outgoing>,
    mut sink: impl ReportSink,
    spool: &Path,
) -> Result<Delivered, OutboxError> {
    let mut spool = Spool::create(spool)?;
    let mut done = Delivered::default();
    let mut open = true;
    let mut wait = FIRST_RETRY;
    let mut away_since = Instant::now();
    // Barriers waiting for the spool to be read past the report count they came after.
    let mut barriers: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
    loop {
        if spool.is_empty() {
            for (_, barrier) in barriers.drain(..) {
                let _ = barrier.send(());
            }
            let report = match outgoing.recv().await {
                None => return Ok(done),
                Some(Outgoing::Barrier(barrier)) => {
                    let _ = barrier.send(());
                    continue;
                }
                Some(Outgoing::Report(report)) => report,
            };
            match sink.deliver(&report).await {
                Delivery::Taken => done.taken += 1,
                Delivery::Refused(why) => refused(&mut done, &why),
                Delivery::Unreachable(why) => {
                    tracing::warn!(error = %why, "the API does not answer; keeping reports on disk until it does");
                    away_since = Instant::now();
                    wait = FIRST_RETRY;
                    spool.push(&report)?;
                    done.spooled += 1;
                }
            }
            continue;
        }
        if away_since.elapsed() > GIVE_UP_AFTER {
            return Err(OutboxError::GaveUp(GIVE_UP_AFTER, spool.len()));
        }
        // Away: new reports go to disk at once; the oldest is retried now and then.
        tokio::select! {
            biased;
            item = outgoing.recv(), if open => match item {
                Some(Outgoing::Report(report)) => {
                    spool.push(&report)?;
                    done.spooled += 1;
                }
                Some(Outgoing::Barrier(barrier)) => barriers.push((spool.pushed, barrier)),
                None => open = false,
            },
            () = tokio::time::sleep(wait) => {
                let head = spool.head()?;
                match sink.deliver(&head).await {
                    Delivery::Unreachable(_) => wait = (wait * 2).min(MAX_RETRY),
                    answered => {
                        match answered {
                            Delivery::Refused(why) => refused(&mut done, &why),
                            _ => done.taken += 1,
                        }
                        spool.pop()?;
                        wait = Duration::ZERO;
                        let read = spool.popped;
                        let (ready, waiting) =
                            barriers.drain(..).partition(|(after, _)| *after <= read);
                        barriers = waiting;
                        for (_, barrier) in ready {
                            let _ = barrier.send(());
                        }
                        if spool.is_empty() {
                            tracing::info!("the API is back; every kept report delivered");
                            wait = FIRST_RETRY;
                        }
                    }
                }
            }
        }
    }
}

fn refused(done: &mut Delivered, why: &str) {
    tracing::warn!(error = %why, "the API refused a report; dropping it");
    done.refused += 1;
}

/// A file of reports: appended at the end, read from `read_at`, emptied when all are read.
struct Spool {
    path: PathBuf,
    file: File,
    read_at: u64,
    /// Reports written and read since the start: the file holds the difference.
    pushed: u64,
    popped: u64,
    /// The report at `read_at` and its length in bytes, once read.
    head: Option<(Report, u64)>,
}

impl Spool {
    fn create(path: &Path) -> Result<Self, OutboxError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Self::error(path, source))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            read_at: 0,
            pushed: 0,
            popped: 0,
            head: None,
        })
    }

    fn error(path: &Path, source: std::io::Error) -> OutboxError {
        OutboxError::Spool {
            path: path.display().to_string(),
            source,
        }
    }

    fn is_empty(&self) -> bool {
        self.pushed == self.popped
    }

    fn len(&self) -> u64 {
        self.pushed - self.popped
    }

    fn push(&mut self, report: &Report) -> Result<(), OutboxError> {
        let mut line = serde_json::to_vec(report).map_err(|e| Self::error(&self.path, e.into()))?;
        line.push(b'\n');
        self.file
            .seek(SeekFrom::End(0))
            .and_then(|_| self.file.write_all(&line))
            .map_err(|source| Self::error(&self.path, source))?;
        self.pushed += 1;
        Ok(())
    }

    fn head(&mut self) -> Result<Report, OutboxError> {
        if let Some((report, _)) = &self.head {
            return Ok(report.clone());
        }
        let mut line = Vec::new();
        self.file
            .seek(SeekFrom::Start(self.read_at))
            .map_err(|source| Self::error(&self.path, source))?;
        BufReader::new(&mut self.file)
            .read_until(b'\n', &mut line)
            .map_err(|source| Self::error(&self.path, source))?;
        let report: Report = serde_json::from_slice(&line)
            .map_err(|e| Self::error(&self.path, std::io::Error::other(e)))?;
        self.head = Some((report.clone(), line.len() as u64));
        Ok(report)
    }

    fn pop(&mut self) -> Result<(), OutboxError> {
        let Some((_, length)) = self.head.take() else {
            return Ok(());
        };
        self.read_at += length;
        self.popped += 1;
        if self.is_empty() {
            self.read_at = 0;
            self.file
                .set_len(0)
                .map_err(|source| Self::error(&self.path, source))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ckrv_wit::types::{JobPhase, JobState, LogLevel, LogLine};
    use std::sync::{Arc, Mutex};

    /// An API that is away until `back_at`, then takes everything; it records what it took and
    /// how long the spool file got.
    struct ScriptedApi {
        back_at: Instant,
        taken: Arc<Mutex<Vec<Report>>>,
        spool: PathBuf,
        largest_spool: Arc<Mutex<u64>>,
    }

    impl ReportSink for ScriptedApi {
        async fn deliver(&mut self, report: &Report) -> Delivery {
            let size = std::fs::metadata(&self.spool).map(|m| m.len()).unwrap_or(0);
            let mut largest = self.largest_spool.lock().unwrap();
            *largest = (*largest).max(size);
            if Instant::now() < self.back_at {
                return Delivery::Unreachable("connection refused".into());
            }
            if matches!(report, Report::Phase(p) if p.phase == JobPhase::Diffing) {
                return Delivery::Refused("409 the job ended".into());
            }
            self.taken.lock().unwrap().push(report.clone());
            Delivery::Taken
        }
    }

    fn batch(first: u64, n: u64) -> Report {
        Report::Logs(LogBatch {
            first_sequence: first,
            lines: (first..first + n)
                .map(|i| LogLine {
                    timestamp: "2026-11-23T00:00:00Z".into(),
                    level: LogLevel::Info,
                    source: "agent".into(),
                    message: format!("line {i}"),
                })
                .collect(),
        })
    }

    fn phase(phase: JobPhase) -> Report {
        Report::Phase(Box::new(PhaseUpdate {
            phase,
            agent: None,
            setup: None,
            setup_egress: None,
            verification: None,
        }))
    }

    /// Ten minutes without the API (in paused time): everything produced meanwhile waits on
    /// disk and arrives afterwards, in order, once each.
    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_any_retry_loses_and_repeats_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("reports.jsonl");
        let taken = Arc::new(Mutex::new(Vec::new()));
        let largest = Arc::new(Mutex::new(0));
        let api = ScriptedApi {
            back_at: Instant::now() + Duration::from_secs(600),
            taken: Arc::clone(&taken),
            spool: spool.clone(),
            largest_spool: Arc::clone(&largest),
        };
        let (tx, rx) = mpsc::channel(BUFFER);
        let delivery = tokio::spawn({
            let spool = spool.clone();
            async move { deliver(rx, api, &spool).await }
        });
        let mut sent = vec![phase(JobPhase::Cloning)];
        for n in 0..200 {
            sent.push(batch(n * 50 + 1, 50));
            if n == 100 {
                sent.push(phase(JobPhase::Agent));
            }
        }
        sent.push(Report::Complete(JobCompletion {
            state: JobState::Succeeded,
            error_message: None,
        }));
        for (i, report) in sent.iter().enumerate() {
            tx.send(Outgoing::Report(report.clone())).await.unwrap();
            // Spread over the outage: the job goes on while the API is away.
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
        }
        drop(tx);
        let done = delivery.await.unwrap().unwrap();
        assert_eq!(*taken.lock().unwrap(), sent, "in order, once each");
        assert_eq!(done.taken, sent.len());
        assert!(done.spooled == sent.len(), "{done:?}");
        assert!(
            *largest.lock().unwrap() > 100_000,
            "the reports waited on disk"
        );
        assert_eq!(std::fs::metadata(&spool).unwrap().len(), 0, "emptied");
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_the_api_refuses_is_dropped_and_the_rest_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("reports.jsonl");
        let taken = Arc::new(Mutex::new(Vec::new()));
        let api = ScriptedApi {
            back_at: Instant::now() + Duration::from_secs(5),
            taken: Arc::clone(&taken),
            spool: spool.clone(),
            largest_spool: Arc::default(),
        };
        let (tx, rx) = mpsc::channel(BUFFER);
        for report in [batch(1, 2), phase(JobPhase::Diffing), batch(3, 1)] {
            tx.send(Outgoing::Report(report)).await.unwrap();
        }
        drop(tx);
        let done = deliver(rx, api, &spool).await.unwrap();
        assert_eq!(*taken.lock().unwrap(), vec![batch(1, 2), batch(3, 1)]);
        assert_eq!((done.taken, done.refused), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_that_never_returns_is_given_up_on_with_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("reports.jsonl");
        let api = ScriptedApi {
            back_at: Instant::now() + GIVE_UP_AFTER * 2,
            taken: Arc::default(),
            spool: spool.clone(),
            largest_spool: Arc::default(),
        };
        let (tx, rx) = mpsc::channel(BUFFER);
        tx.send(Outgoing::Report(batch(1, 1))).await.unwrap();
        tx.send(Outgoing::Report(phase(JobPhase::Agent)))
            .await
            .unwrap();
        drop(tx);
        let error = deliver(rx, api, &spool).await.unwrap_err();
        assert!(matches!(error, OutboxError::GaveUp(_, 2)), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_barrier_opens_only_once_everything_before_it_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("reports.jsonl");
        let taken = Arc::new(Mutex::new(Vec::new()));
        let back_at = Instant::now() + Duration::from_secs(60);
        let api = ScriptedApi {
            back_at,
            taken: Arc::clone(&taken),
            spool: spool.clone(),
            largest_spool: Arc::default(),
        };
        let (tx, rx) = mpsc::channel(BUFFER);
        let delivery = tokio::spawn(async move { deliver(rx, api, &spool).await });
        let (barrier, mut opened) = oneshot::channel();
        tx.send(Outgoing::Report(batch(1, 1))).await.unwrap();
        tx.send(Outgoing::Barrier(barrier)).await.unwrap();
        tx.send(Outgoing::Report(batch(2, 1))).await.unwrap();
        let early = tokio::time::timeout(Duration::from_secs(30), &mut opened).await;
        assert!(early.is_err(), "open while the API is away");
        opened.await.unwrap();
        assert!(Instant::now() >= back_at);
        assert_eq!(taken.lock().unwrap().first(), Some(&batch(1, 1)));
        drop(tx);
        delivery.await.unwrap().unwrap();
        assert_eq!(*taken.lock().unwrap(), vec![batch(1, 1), batch(2, 1)]);
    }
}
