//! A page of a log held whole, as a reader's `log-query` asks for it. Providers whose backend
//! serves a job's log in one piece (a server that speaks only the contract, GitHub's job logs)
//! number its entries by position and page them here, so cursors work the same everywhere.

use crate::types::{JobState, LogEntry, LogQuery, LogResponse};

/// The entries of `whole` that `query` asks for, numbered from 1 by position; `state` is the
/// job's, read before `whole`.
pub fn page(whole: Vec<LogEntry>, state: JobState, query: &LogQuery) -> LogResponse {
    let total = u64::try_from(whole.len()).unwrap_or(u64::MAX);
    let after = match query.tail {
        Some(tail) => query.after.max(total.saturating_sub(tail)),
        None => query.after,
    };
    let logs: Vec<LogEntry> = whole
        .into_iter()
        .zip(1u64..)
        .map(|(mut entry, position)| {
            entry.sequence = Some(position);
            entry
        })
        .skip(usize::try_from(after).unwrap_or(usize::MAX))
        .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
        .collect();
    LogResponse {
        next_after: Some(logs.last().and_then(|e| e.sequence).unwrap_or(after)),
        logs,
        job_state: Some(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogLevel;

    fn whole(n: usize) -> Vec<LogEntry> {
        (0..n)
            .map(|i| LogEntry {
                timestamp: "2026-11-24T10:00:00Z".into(),
                level: LogLevel::Info,
                source: "agent".into(),
                message: format!("line {}", i + 1),
                sequence: None,
            })
            .collect()
    }

    fn query(after: u64, limit: u32, tail: Option<u64>) -> LogQuery {
        LogQuery {
            after,
            limit,
            tail,
            wait_ms: 0,
        }
    }

    #[test]
    fn pages_follow_the_cursor_and_the_tail() {
        let page1 = page(whole(5), JobState::Running, &query(0, 2, None));
        let seqs: Vec<_> = page1.logs.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, [Some(1), Some(2)]);
        assert_eq!(page1.next_after, Some(2));
        let page2 = page(whole(5), JobState::Running, &query(2, 10, None));
        assert_eq!(page2.logs[0].message, "line 3");
        assert_eq!(page2.next_after, Some(5));
        let empty = page(whole(5), JobState::Succeeded, &query(5, 10, None));
        assert!(empty.logs.is_empty());
        assert_eq!(empty.next_after, Some(5));
        assert_eq!(empty.job_state, Some(JobState::Succeeded));
        let tail = page(whole(5), JobState::Running, &query(0, 10, Some(2)));
        let messages: Vec<_> = tail.logs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["line 4", "line 5"]);
    }
}
