//! Reading a job's log: a page after a cursor, or a live SSE stream with `follow=true`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ckrv_wit::types::{LogEntry, LogPage};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::jobs::resolve;
use crate::auth::Session;
use crate::error::{ApiJson, ApiQuery, AppError, invalid};
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 500;
const MAX_LIMIT: u32 = 1000;
/// Followers re-check this often even without a wake-up.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
pub struct LogQuery {
    after: Option<u64>,
    limit: Option<u32>,
    #[serde(default)]
    follow: bool,
}

pub async fn read(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response, AppError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let job_id = resolve(&state, &session, &id).await?.job.id;
    let after = query.after.unwrap_or(0);
    if query.follow {
        return Ok(Sse::new(follow(state, job_id, after))
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    Ok(ApiJson(page(&state, &job_id, after, limit).await?).into_response())
}

/// Reads the status before the entries: a terminal status then guarantees the page saw every
/// line the worker wrote before it completed the job.
async fn page(state: &AppState, job_id: &str, after: u64, limit: u32) -> Result<LogPage, AppError> {
    let status = state
        .store
        .job(job_id)
        .await?
        .map(|row| row.job.status)
        .ok_or_else(|| AppError::new(ckrv_wit::types::ErrorKind::NotFound, "job not found"))?;
    let entries = state.store.read_logs(job_id, after, limit).await?;
    Ok(LogPage {
        next_after: entries.last().map_or(after, |e| e.sequence),
        entries,
        job_status: status,
    })
}

struct Follower {
    state: AppState,
    job_id: String,
    after: u64,
    pending: VecDeque<LogEntry>,
    wake: broadcast::Receiver<String>,
    ended: bool,
}

/// `log` events in order, then one `end` event (data: the final status) when the job is over.
fn follow(
    state: AppState,
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
    };
    futures::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(entry) = f.pending.pop_front() {
                let event = Event::default()
                    .event("log")
                    .id(entry.sequence.to_string())
                    .json_data(&entry)
                    .unwrap_or_else(|_| Event::default().event("log").data(entry.message.clone()));
                return Some((Ok(event), f));
            }
            if f.ended {
                return None;
            }
            match page(&f.state, &f.job_id, f.after, DEFAULT_LIMIT).await {
                Ok(page) if !page.entries.is_empty() => {
                    f.after = page.next_after;
                    f.pending.extend(page.entries);
                    continue;
                }
                Ok(page) if page.job_status.is_terminal() => {
                    f.ended = true;
                    let end = Event::default().event("end").data(page.job_status.as_str());
                    return Some((Ok(end), f));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job_id = %f.job_id, error = %e, "log stream read failed");
                    f.ended = true;
                    let end = Event::default().event("error").data(e.description);
                    return Some((Ok(end), f));
                }
            }
            wait_for_change(&mut f.wake, &f.job_id).await;
        }
    })
}

async fn wait_for_change(wake: &mut broadcast::Receiver<String>, job_id: &str) {
    let _ = tokio::time::timeout(RECHECK, async {
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
