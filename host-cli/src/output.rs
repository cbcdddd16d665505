//! How `ckrv` speaks: `▌`-prefixed blocks for people (the quickstart's style), JSON for
//! programs.

use ckrv_wit::types::{Job, JobStatus, LogEntry};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::git::FileStat;

/// Prints one line of stdout. When the reader has gone (`ckrv logs ID | head`), stop quietly
/// as other Unix tools do instead of panicking.
pub fn emit(text: impl std::fmt::Display) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

pub fn line(text: impl std::fmt::Display) {
    emit(format_args!("▌ {text}"));
}

pub fn ok(text: impl std::fmt::Display) {
    emit(format_args!("▌ ✔ {text}"));
}

pub fn blank() {
    emit("▌");
}

/// Pretty JSON of a contract type, exactly as the API sends it.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    emit(serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The first 8 characters of a job id: enough for every command.
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// "3 minutes ago", falling back to the timestamp as given.
pub fn relative(timestamp: &str, now: OffsetDateTime) -> String {
    let Ok(at) = OffsetDateTime::parse(timestamp, &Rfc3339) else {
        return timestamp.to_string();
    };
    let seconds = (now - at).whole_seconds();
    let (n, unit) = match seconds {
        s if s < 0 => return timestamp.to_string(),
        s if s < 60 => return "just now".to_string(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// "Free" for `free`.
pub fn title(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The lines `ckrv status` prints.
pub fn job_lines(job: &Job, now: OffsetDateTime) -> Vec<String> {
    let mut lines = vec![
        format!("Job: {}", job.id),
        format!("Status: {}", job.status),
    ];
    lines.push(match &job.agent {
        Some(agent) => format!("Phase: {} (agent: {agent})", job.phase),
        None => format!("Phase: {}", job.phase),
    });
    lines.push(format!(
        "Repository: {} ({} → {})",
        job.repo_url, job.base_branch, job.feature_branch
    ));
    lines.push(format!("Spec: {}", job.spec_path));
    lines.push(format!("Created: {}", relative(&job.created_at, now)));
    if let Some(started) = &job.started_at {
        lines.push(format!("Started: {}", relative(started, now)));
    }
    if let Some(finished) = &job.finished_at {
        lines.push(format!("Finished: {}", relative(finished, now)));
    }
    if let Some(result) = &job.result {
        lines.push(format!(
            "Result: {} file{} changed, +{} -{}",
            result.files_changed,
            if result.files_changed == 1 { "" } else { "s" },
            result.insertions,
            result.deletions
        ));
    }
    if let Some(error) = &job.error {
        lines.push(format!("Error: {error}"));
    }
    let short = short_id(&job.id);
    match job.status {
        JobStatus::Succeeded => lines.push(format!("Pull results:    ckrv pull {short}")),
        JobStatus::Pending | JobStatus::Running => {
            lines.push(format!("Stream logs:     ckrv logs {short} --follow"));
        }
        _ => lines.push(format!("Read the log:    ckrv logs {short}")),
    }
    lines
}

/// `[12:34:56] source: message`, the time in UTC.
pub fn log_line(entry: &LogEntry) -> String {
    let time = entry
        .timestamp
        .get(11..19)
        .filter(|t| t.as_bytes().get(2) == Some(&b':'))
        .unwrap_or(&entry.timestamp);
    format!("[{time}] {}: {}", entry.source, entry.message)
}

/// A `git diff --stat`-like table: `path | 12 +++--`.
pub fn diffstat(files: &[FileStat]) -> Vec<String> {
    const BAR: u32 = 40;
    let width = files
        .iter()
        .map(|f| f.path.chars().count())
        .max()
        .unwrap_or(0);
    let largest = files
        .iter()
        .map(|f| f.insertions + f.deletions)
        .max()
        .unwrap_or(0);
    files
        .iter()
        .map(|f| {
            let changes = f.insertions + f.deletions;
            let graph = if f.binary {
                "Bin".to_string()
            } else {
                // Scale long bars down, but never to nothing.
                let scale = |n: u32| {
                    if largest <= BAR || n == 0 {
                        n
                    } else {
                        (n * BAR / largest).max(1)
                    }
                };
                format!(
                    "{changes} {}{}",
                    "+".repeat(scale(f.insertions) as usize),
                    "-".repeat(scale(f.deletions) as usize)
                )
            };
            format!("  {:width$} | {graph}", f.path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn relative_times_read_naturally() {
        let now = datetime!(2026-11-22 12:00:00 UTC);
        assert_eq!(relative("2026-11-22T11:59:30Z", now), "just now");
        assert_eq!(relative("2026-11-22T11:58:00Z", now), "2 minutes ago");
        assert_eq!(relative("2026-11-22T11:00:00Z", now), "1 hour ago");
        assert_eq!(relative("2026-11-20T12:00:00Z", now), "2 days ago");
        assert_eq!(relative("garbage", now), "garbage");
    }

    #[test]
    fn diffstats_align_and_scale() {
        let files = [
            FileStat {
                path: "src/auth.rs".into(),
                insertions: 142,
                deletions: 0,
                binary: false,
            },
            FileStat {
                path: "src/main.rs".into(),
                insertions: 10,
                deletions: 2,
                binary: false,
            },
            FileStat {
                path: "logo.png".into(),
                insertions: 0,
                deletions: 0,
                binary: true,
            },
        ];
        let lines = diffstat(&files);
        assert_eq!(lines[0], format!("  src/auth.rs | 142 {}", "+".repeat(40)));
        assert_eq!(lines[1], "  src/main.rs | 12 ++-");
        assert_eq!(lines[2], "  logo.png    | Bin");
    }

    #[test]
    fn log_lines_show_the_time_source_and_message() {
        let entry = LogEntry {
            sequence: 1,
            timestamp: "2026-11-22T12:34:56Z".into(),
            level: ckrv_wit::types::LogLevel::Info,
            source: "orchestrator".into(),
            message: "Cloning repository...".into(),
        };
        assert_eq!(
            log_line(&entry),
            "[12:34:56] orchestrator: Cloning repository..."
        );
    }

    #[test]
    fn short_ids_and_titles() {
        assert_eq!(short_id("3f8a9b2c-1234"), "3f8a9b2c");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(title("free"), "Free");
    }
}
