//! Reading a job's log: a page after a cursor, or a live SSE stream with `follow=true`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ckrv_wit::types::{ErrorKind, LogEntry, LogResponse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::lookup::resolve;
use crate::error::{ApiJson, ApiQuery, AppError, invalid};
use crate::identity::extract::Session;
use crate::jobs::JobsState;
use crate::jobs::log_archive;
use crate::store::JobRow;

/// Entries per response. A contract client reads one response as the whole log, so the default
/// is the most a response holds.
const MAX_LIMIT: u32 = 10_000;
/// Entries per read while following the database's rows.
const FOLLOW_BATCH: u32 = 500;
/// The longest a page read may wait for entries (`wait_ms`): under common proxies' idle limits.
const MAX_WAIT_MS: u32 = 30_000;

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
    /// Extension: only entries with a sequence above this.
    after: Option<u64>,
    /// Extension: only the last this many entries (of those after `after`).
    tail: Option<u64>,
    /// Extension: at most this many entries.
    limit: Option<u32>,
    /// Extension: when no entry is there yet and the job has not ended, wait up to this many
    /// milliseconds for one (a long poll), so a follower sees each line as it is written.
    wait_ms: Option<u32>,
}

pub async fn read(
    State(state): State<JobsState>,
    session: Session,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let limit = query.limit.unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let wait_ms = query.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(invalid(format!(
            "wait_ms must be between 0 and {MAX_WAIT_MS}"
        )));
    }
    let row = resolve(&state, &session, &id).await?;
    if let Some(when) = &row.expired_at {
        return Err(super::expired(&row.job.id, when));
    }
    // An SSE client reconnecting says where it was (the event id is the sequence).
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut after = query.after.max(resumed).unwrap_or(0);
    if let Some(tail) = query.tail {
        let last = match row.logs_archived_at {
            Some(_) => log_archive::last_sequence(&state.artifacts, archived(&row)).await?,
            None => state.store.last_log_sequence(&row.job.id).await?,
        };
        after = after.max(last.saturating_sub(tail));
    }
    let job_id = row.job.id;
    if query.follow {
        return Ok(Sse::new(follow(state, job_id, after))
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let wait = Duration::from_millis(u64::from(wait_ms));
    Ok(ApiJson(waiting_page(&state, &job_id, after, limit, wait).await?).into_response())
}

/// A page; while it would be empty and the job is still going, waits up to `wait` for an
/// entry or the job's end. Subscribes before the first read, so no wake-up is missed.
async fn waiting_page(
    state: &JobsState,
    job_id: &str,
    after: u64,
    limit: u32,
    wait: Duration,
) -> Result<LogResponse, AppError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut wake = state.events.subscribe();
    loop {
        let page = page(state, job_id, after, limit).await?;
        let ended = page.job_state.is_some_and(|s| s.is_terminal());
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !page.logs.is_empty() || ended || left.is_zero() {
            return Ok(page);
        }
        tokio::select! {
            () = wait_for_change(&mut wake, job_id, state.events.recheck().min(left)) => {}
            () = state.events.stopping() => return Ok(page),
        }
    }
}

/// Reads the state before the entries: a terminal state then guarantees the page saw every
/// line the worker wrote before it completed the job. An archived log is read from the
/// artifact store; its rows stay in the database long after readers have switched.
async fn page(
    state: &JobsState,
    job_id: &str,
    after: u64,
    limit: u32,
) -> Result<LogResponse, AppError> {
    Ok(read_page(state, job_id, after, limit).await?.0)
}

/// A page, and whether it came from the archive.
async fn read_page(
    state: &JobsState,
    job_id: &str,
    after: u64,
    limit: u32,
) -> Result<(LogResponse, bool), AppError> {
    let row = state
        .store
        .job(job_id)
        .await?
        .ok_or_else(|| AppError::new(ErrorKind::NotFound, "job not found"))?;
    let is_archived = row.logs_archived_at.is_some();
    let logs = if is_archived {
        log_archive::read(&state.artifacts, archived(&row), after, limit).await?
    } else {
        state.store.read_logs(job_id, after, limit).await?
    };
    let page = LogResponse {
        next_after: Some(logs.last().and_then(|e| e.sequence).unwrap_or(after)),
        logs,
        job_state: Some(row.state),
    };
    Ok((page, is_archived))
}

/// The job's archived log, as the archive module checks it.
fn archived(row: &JobRow) -> log_archive::Archived<'_> {
    log_archive::Archived {
        job_id: &row.job.id,
        sha256: row.logs_sha256.as_deref(),
    }
}

struct Follower {
    state: JobsState,
    job_id: String,
    after: u64,
    pending: VecDeque<LogEntry>,
    wake: broadcast::Receiver<String>,
    ended: bool,
    /// Entries per read: the archive is read from its start each time, so in large pages.
    batch: u32,
}

/// `log` events in order, then one `end` event (data: the final status) when the job is over.
fn follow(
    state: JobsState,
    job_id: String,
    after: u64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let wake = state.events.subscribe();
    let follower = Follower {
        state,
        job_id,
        after,
        pending: VecDeque::new(),
        wake,
        ended: false,
        batch: FOLLOW_BATCH,
    };
    futures::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(entry) = f.pending.pop_front() {
                let mut event = Event::default().event("log");
                if let Some(sequence) = entry.sequence {
                    event = event.id(sequence.to_string());
                }
                let event = event
                    .json_data(&entry)
                    .unwrap_or_else(|_| Event::default().event("log").data(entry.message.clone()));
                return Some((Ok(event), f));
            }
            if f.ended {
                return None;
            }
            let read = read_page(&f.state, &f.job_id, f.after, f.batch).await;
            if let Ok((_, true)) = &read {
                f.batch = MAX_LIMIT;
            }
            match read.map(|(page, _)| page) {
                Ok(page) if !page.logs.is_empty() => {
                    f.after = page.next_after.unwrap_or(f.after);
                    f.pending.extend(page.logs);
                    continue;
                }
                Ok(LogResponse {
                    job_state: Some(job_state),
                    ..
                }) if job_state.is_terminal() => {
                    f.ended = true;
                    let end = Event::default().event("end").data(job_state.as_str());
                    return Some((Ok(end), f));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job_id = %f.job_id, error = %e, "log stream read failed");
                    f.ended = true;
                    let end = Event::default().event("error").data(e.description());
                    return Some((Ok(end), f));
                }
            }
            let recheck = f.state.events.recheck();
            tokio::select! {
                () = wait_for_change(&mut f.wake, &f.job_id, recheck) => {}
                () = f.state.events.stopping() => {
                    // The server is stopping: end cleanly; the client resumes elsewhere or
                    // later from the last event id.
                    f.ended = true;
                    let bye = Event::default()
                        .event("shutdown")
                        .data("the server is stopping; reconnect with Last-Event-ID to resume");
                    return Some((Ok(bye), f));
                }
            }
        }
    })
}

async fn wait_for_change(wake: &mut broadcast::Receiver<String>, job_id: &str, recheck: Duration) {
    let _ = tokio::time::timeout(recheck, async {
        loop {
            match wake.recv().await {
                Ok(changed) if changed == job_id => return,
                Ok(_) => {}
                // Missed some wake-ups: re-read now.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    })
    .await;
}
