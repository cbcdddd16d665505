//! `ckrv logs ID [--follow] [--tail N] [--since WHEN]`: reads pages after a cursor. Following
//! asks the provider to wait for new lines (a long poll), so each line shows as it is written;
//! a dropped connection is retried from the last sequence seen, so nothing repeats or goes
//! missing.

use std::time::Duration;

use ckrv_wit::types::{ErrorKind, LogEntry, LogQuery};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::LogsArgs;
use crate::cloud::{Cloud, describe};
use crate::output;

const PAGE: u32 = 500;
/// How long one read may wait for a line: well under any proxy's idle limit.
const LONG_POLL_MS: u32 = 25_000;
/// The longest pause between tries while the service is unreachable.
const MAX_RETRY: Duration = Duration::from_secs(5);

pub async fn run(cloud: &mut Cloud, args: LogsArgs) -> anyhow::Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let mut after = 0;
    let mut tail = args.tail;
    let mut retry = Duration::from_millis(250);
    loop {
        let query = LogQuery {
            after,
            limit: PAGE,
            tail: tail.take(),
            wait_ms: if args.follow { LONG_POLL_MS } else { 0 },
        };
        let page = match cloud
            .call_raw(async |p, ctx| p.read_logs(ctx, &args.id, query.clone()).await)
            .await?
        {
            Ok(page) => page,
            // The connection dropped while following: ask again from the same cursor.
            Err(e) if args.follow && e.error == ErrorKind::Unavailable => {
                eprintln!(
                    "▌ connection lost ({}); retrying in {}",
                    output::printable(e.description()),
                    humantime::format_duration(retry)
                );
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
            Err(e) => return Err(describe(e)),
        };
        retry = Duration::from_millis(250);
        for entry in page.logs.iter().filter(|e| written_since(e, since)) {
            if args.json {
                output::emit(serde_json::to_string(entry)?);
            } else {
                output::emit(output::log_line(entry));
            }
        }
        after = page
            .next_after
            .or_else(|| page.logs.last().and_then(|e| e.sequence))
            .unwrap_or(after);
        if !page.logs.is_empty() {
            continue;
        }
        // The state was read before the entries, so a terminal state here means the log is
        // complete. A provider that reports none is asked for the job.
        let state = match page.job_state {
            Some(state) => state,
            None => cloud
                .call(async |p, ctx| p.get_job(ctx, &args.id).await)
                .await?
                .lifecycle(),
        };
        if !args.follow || state.is_terminal() {
            if args.follow && !args.json {
                eprintln!("▌ Job {state}");
            }
            return Ok(());
        }
    }
}

/// `--since`: an RFC 3339 time, or an age such as `10m` or `1h 30m`.
fn parse_since(value: &str) -> anyhow::Result<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(at);
    }
    let age = humantime::parse_duration(value).map_err(|_| {
        anyhow::anyhow!(
            "--since {value:?} is neither a time (2026-11-24T10:00:00Z) nor an age (10m, 2h)"
        )
    })?;
    Ok(OffsetDateTime::now_utc() - age)
}

/// Entries with a timestamp that cannot be read are shown rather than hidden.
fn written_since(entry: &LogEntry, since: Option<OffsetDateTime>) -> bool {
    since.is_none_or(|since| {
        OffsetDateTime::parse(&entry.timestamp, &Rfc3339).map_or(true, |at| at >= since)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckrv_wit::types::LogLevel;

    fn entry(timestamp: &str) -> LogEntry {
        LogEntry {
            timestamp: timestamp.into(),
            level: LogLevel::Info,
            source: "agent".into(),
            message: "m".into(),
            sequence: Some(1),
        }
    }

    #[test]
    fn since_takes_a_time_or_an_age() {
        let at = parse_since("2026-11-24T10:00:00Z").unwrap();
        assert!(written_since(&entry("2026-11-24T10:00:00Z"), Some(at)));
        assert!(!written_since(&entry("2026-11-24T09:59:59Z"), Some(at)));
        assert!(written_since(&entry("not a time"), Some(at)));
        let ten_minutes_ago = parse_since("10m").unwrap();
        let age = OffsetDateTime::now_utc() - ten_minutes_ago;
        assert!((age.whole_seconds() - 600).abs() <= 5, "{age}");
        let err = parse_since("yesterday-ish").unwrap_err().to_string();
        assert!(err.contains("--since"), "{err}");
    }
}
