//! How `ckrv` speaks: `▌`-prefixed blocks for people (the quickstart's style), JSON for
//! programs.

use ckrv_wit::types::{Group, Job, JobPhase, JobState, LogEntry};
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

/// One `▌` line for people. Its text may carry what a job wrote, so it is made printable.
pub fn line(text: impl std::fmt::Display) {
    emit(format_args!("▌ {}", printable(&text.to_string())));
}

pub fn ok(text: impl std::fmt::Display) {
    emit(format_args!("▌ ✔ {}", printable(&text.to_string())));
}

/// Text a job, a server or a plugin wrote, made safe for a terminal: control characters (escape
/// sequences, carriage returns, backspaces) and the invisible bidirectional overrides that can
/// make text read differently from what it is are shown as `\x1b`-style escapes. Tabs and line
/// breaks inside an error stay.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t' && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Asks `question` on stderr and reads a yes or no from stdin; anything but yes is no.
pub fn ask_yes(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
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

/// "in 3 minutes" for a time to come, "now" for one due or past, falling back to the timestamp
/// as given.
pub fn ahead(timestamp: &str, now: OffsetDateTime) -> String {
    let Ok(at) = OffsetDateTime::parse(timestamp, &Rfc3339) else {
        return timestamp.to_string();
    };
    let seconds = (at - now).whole_seconds();
    let (n, unit) = match seconds {
        s if s < 60 => return "now".to_string(),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    format!("in {n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "Free" for `free`.
pub fn title(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A phase as people read it: the quickstart's "executing" while the agent works (`--json`
/// keeps the contract's `agent`).
pub fn phase_name(phase: JobPhase) -> &'static str {
    match phase {
        JobPhase::Agent => "executing",
        other => other.as_str(),
    }
}

/// What the repository's setup did, as `ckrv status` says it: `Setup: snapshot hit (1a2b3c4d,
/// 312.4 MB, restored in 0.8 s)` or `Setup: ran (41.0 s), snapshot saved (1a2b3c4d, 312.4 MB)`.
pub fn setup_line(setup: &ckrv_wit::types::SetupSummary) -> String {
    let seconds = setup.duration_ms as f64 / 1000.0;
    let snapshot = match (&setup.snapshot_key, setup.snapshot_bytes) {
        (Some(key), Some(bytes)) => format!(
            "{}, {:.1} MB",
            key.get(..8).unwrap_or(key),
            bytes as f64 / 1_000_000.0
        ),
        (Some(key), None) => key.get(..8).unwrap_or(key).to_string(),
        _ => String::new(),
    };
    if setup.snapshot_hit {
        return format!("Setup: snapshot hit ({snapshot}, restored in {seconds:.1} s)");
    }
    match (setup.saved, setup.snapshot_key.is_some()) {
        (true, _) => format!("Setup: ran ({seconds:.1} s), snapshot saved ({snapshot})"),
        (false, true) => {
            format!("Setup: ran ({seconds:.1} s), snapshot not saved (see `ckrv logs`)")
        }
        (false, false) => format!("Setup: ran ({seconds:.1} s)"),
    }
}

/// The lines `ckrv status` prints. Extensions a provider did not send are left out.
pub fn job_lines(job: &Job, now: OffsetDateTime) -> Vec<String> {
    let state = job.lifecycle();
    let mut lines = vec![format!("Job: {}", job.id), format!("Status: {state}")];
    match (job.phase.map(phase_name), &job.agent) {
        (Some(phase), Some(agent)) => lines.push(format!("Phase: {phase} (agent: {agent})")),
        (Some(phase), None) => lines.push(format!("Phase: {phase}")),
        (None, _) => {}
    }
    let branch = job
        .feature_branch_name
        .as_deref()
        .map(|b| format!(" → {b}"))
        .unwrap_or_default();
    lines.push(format!(
        "Repository: {} ({}{branch})",
        job.git_repo_url, job.git_base_branch
    ));
    if let Some(spec) = &job.spec_path {
        lines.push(format!("Spec: {spec}"));
    }
    lines.push(format!("Created: {}", relative(&job.created_at, now)));
    if let Some(started) = &job.started_at {
        lines.push(format!("Started: {}", relative(started, now)));
    }
    if let Some(completed) = &job.completed_at {
        lines.push(format!("Finished: {}", relative(completed, now)));
    }
    if let Some(summary) = &job.result_summary {
        lines.push(format!("Result: {summary}"));
    }
    if let Some(error) = &job.error_message {
        lines.push(format!("Error: {error}"));
    }
    if let Some(usage) = &job.usage {
        let requests = if usage.requests == 1 {
            "request"
        } else {
            "requests"
        };
        lines.push(format!(
            "Model usage: {} {requests}, {} input + {} output tokens, ${:.4}",
            usage.requests, usage.input_tokens, usage.output_tokens, usage.cost_usd
        ));
    }
    if let Some(refused) = job.egress_refusals {
        let connections = if refused == 1 {
            "connection"
        } else {
            "connections"
        };
        lines.push(format!(
            "Egress refused: {refused} {connections} outside the job's policy (see `ckrv logs`, source egress)"
        ));
    }
    if let Some(setup) = &job.setup {
        lines.push(setup_line(setup));
    }
    lines.extend(verification_lines(job));
    lines.extend(publish_lines(job));
    if let Some(parent) = &job.parent_id {
        lines.push(format!("Follows up: {}", short_id(parent)));
    }
    if let Some(follow_ups) = job.follow_ups.as_ref().filter(|f| !f.is_empty()) {
        let ids: Vec<&str> = follow_ups.iter().map(|id| short_id(id)).collect();
        lines.push(format!("Followed up by: {}", ids.join(", ")));
    }
    let short = short_id(&job.id);
    match state {
        _ if job.change_is_pullable() => {
            lines.push(format!("Pull results:    ckrv pull {short}"));
            lines.push(format!(
                "Follow up:       ckrv run --cloud --continue {short} --message \"…\""
            ));
        }
        JobState::Pending | JobState::Running => {
            lines.push(format!("Stream logs:     ckrv logs {short} --follow"));
        }
        _ => lines.push(format!("Read the log:    ckrv logs {short}")),
    }
    lines
}

/// What the project's own check found (docs/verification.md): `Verified: yes — …` and, when it
/// did not pass, its last lines, so that a person sees why.
fn verification_lines(job: &Job) -> Vec<String> {
    let Some(found) = &job.verification else {
        return Vec::new();
    };
    let word = match found.verified() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    };
    let mut lines = vec![format!("Verified: {word} — {}", found.line())];
    if found.verified() == Some(false) && !found.last_lines.is_empty() {
        lines.push("  Its last lines:".to_string());
        lines.extend(found.last_lines.iter().map(|l| format!("    {l}")));
    }
    lines
}

/// Where the job's result went: its branch and pull request once published, or where it will
/// go while the job runs.
fn publish_lines(job: &Job) -> Vec<String> {
    if let Some(publication) = &job.publication {
        let commit = publication.commit.get(..12).unwrap_or(&publication.commit);
        let mut lines = vec![format!(
            "Published: {} (commit {commit})",
            publication.branch
        )];
        if let Some(url) = &publication.pull_request_url {
            lines.push(format!("Pull request: {url}"));
        }
        return lines;
    }
    match job.publish {
        Some(mode) if mode.publishes() && !job.lifecycle().is_terminal() => {
            vec![format!("Publish: {mode}, once the change is uploaded")]
        }
        Some(mode) if mode.publishes() => vec![format!("Publish: {mode}, not published")],
        _ => Vec::new(),
    }
}

/// An attempt group as `ckrv status GROUP` shows it: its attempts ranked best first, with the
/// evidence they were ranked by, and why the best won (docs/attempts.md).
pub fn group_lines(group: &Group) -> Vec<String> {
    let short = short_id(&group.id);
    let ended = group
        .attempts
        .iter()
        .filter(|j| j.lifecycle().is_terminal())
        .count();
    let mut lines = vec![
        format!("Group: {}", group.id),
        format!(
            "Attempts: {} ({ended} ended){}",
            group.attempts.len(),
            if group.stop_at_first_verified {
                "; the rest stop once one is verified"
            } else {
                ""
            }
        ),
    ];
    let rows: Vec<[String; 10]> = group
        .attempts
        .iter()
        .enumerate()
        .map(|(rank, job)| attempt_row(rank + 1, job))
        .collect();
    lines.extend(table(
        &[
            "RANK", "ATTEMPT", "AGENT", "STATE", "VERIFIED", "TESTS", "CHANGE", "COST", "TIME",
            "JOB",
        ],
        &rows,
    ));
    match (group.winning_job(), &group.reason) {
        (Some(winner), Some(reason)) => {
            let attempt = winner.attempt.unwrap_or_default();
            lines.push(format!("Best: attempt {attempt}: {reason}"));
            lines.push(format!("Pull the best:   ckrv pull {short}"));
            lines.push(format!("Pull another:    ckrv pull {short} --attempt N"));
        }
        _ => lines.push(
            "No attempt has a change to pull yet; follow one with `ckrv logs JOB --follow`"
                .to_string(),
        ),
    }
    lines
}

/// One attempt's row: what it is ranked by, in short.
fn attempt_row(rank: usize, job: &Job) -> [String; 10] {
    let verified = match job.verified {
        Some(true) => "yes",
        Some(false) => "no",
        None if job.verification.is_some() => "not run",
        None => "-",
    };
    let tests = job
        .verification
        .as_ref()
        .and_then(|v| v.tests.as_ref())
        .map_or("-".to_string(), |t| {
            format!("{}/{}", t.passed, t.passed + t.failed)
        });
    let change = job.diff_stats.as_ref().map_or("-".to_string(), |d| {
        format!("+{} -{}", d.insertions, d.deletions)
    });
    [
        rank.to_string(),
        job.attempt.map_or("-".to_string(), |n| n.to_string()),
        job.agent.clone().unwrap_or_else(|| "-".to_string()),
        job.lifecycle().to_string(),
        verified.to_string(),
        tests,
        change,
        job.usage
            .as_ref()
            .map_or("-".to_string(), |u| format!("${:.4}", u.cost_usd)),
        run_time(job).unwrap_or_else(|| "-".to_string()),
        short_id(&job.id).to_string(),
    ]
}

/// How long a job ran, from its start to its end (`41s`, `3m 05s`), once it has ended.
fn run_time(job: &Job) -> Option<String> {
    let started = OffsetDateTime::parse(job.started_at.as_deref()?, &Rfc3339).ok()?;
    let ended = OffsetDateTime::parse(job.completed_at.as_deref()?, &Rfc3339).ok()?;
    let seconds = (ended - started).whole_seconds().max(0);
    Some(match seconds {
        0..60 => format!("{seconds}s"),
        _ => format!("{}m {:02}s", seconds / 60, seconds % 60),
    })
}

/// `[12:34:56] source: message`, the time in UTC.
pub fn log_line(entry: &LogEntry) -> String {
    let time = entry
        .timestamp
        .get(11..19)
        .filter(|t| t.as_bytes().get(2) == Some(&b':'))
        .unwrap_or(&entry.timestamp);
    let line = format!("[{time}] {}: {}", entry.source, entry.message);
    // A log line is one line: a job's embedded line breaks are shown, not obeyed.
    printable(&line).replace('\n', "\\n")
}

/// Left-aligned columns separated by two spaces, the last one unpadded, each cell made
/// printable (cells may quote a server).
pub fn table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> Vec<String> {
    let cells: Vec<[String; N]> = rows
        .iter()
        .map(|row| row.clone().map(|cell| printable(&cell).replace('\n', " ")))
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format = |row: [&str; N]| {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        line.trim_end().to_string()
    };
    std::iter::once(format(*headers))
        .chain(
            cells
                .iter()
                .map(|row| format(row.each_ref().map(String::as_str))),
        )
        .collect()
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

    #[test]
    fn tables_line_up_and_cells_cannot_drive_the_terminal() {
        let rows = [
            [
                "3f8a9b2c".to_string(),
                "running".to_string(),
                "x".to_string(),
            ],
            [
                "1".to_string(),
                "\u{1b}[2Jfailed".to_string(),
                "y\nz".to_string(),
            ],
        ];
        assert_eq!(
            table(&["ID", "STATUS", "RESULT"], &rows),
            [
                "ID        STATUS         RESULT",
                "3f8a9b2c  running        x",
                "1         \\x1b[2Jfailed  y z",
            ]
        );
    }
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
    fn times_to_come_read_naturally() {
        let now = datetime!(2026-11-22 12:00:00 UTC);
        assert_eq!(ahead("2026-11-22T12:00:30Z", now), "now");
        assert_eq!(ahead("2026-11-22T11:00:00Z", now), "now");
        assert_eq!(ahead("2026-11-22T12:05:00Z", now), "in 5 minutes");
        assert_eq!(ahead("2026-11-22T13:00:00Z", now), "in 1 hour");
        assert_eq!(ahead("2026-11-24T12:00:00Z", now), "in 2 days");
        assert_eq!(ahead("garbage", now), "garbage");
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
            sequence: Some(1),
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

    fn job(json: serde_json::Value) -> Job {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn status_shows_our_extensions_and_copes_without_them() {
        let now = datetime!(2026-11-22 12:10:00 UTC);
        let full = job(serde_json::json!({
            "id": "3f8a9b2c-1234", "status": "failed", "state": "cancelled",
            "phase": "finished", "agent": "script", "spec_path": "specs/a/spec.md",
            "git_repo_url": "https://git.example.com/r.git", "git_base_branch": "main",
            "feature_branch_name": "ckrv/3f8a9b2c", "created_at": "2026-11-22T12:00:00Z",
            "completed_at": "2026-11-22T12:05:00Z", "result_status": "failed",
            "error_message": "cancelled by the user",
            "usage": {"requests": 3, "input_tokens": 12000, "output_tokens": 800,
                      "cost_usd": 0.048},
            "egress_refusals": 2,
            "setup": {"snapshot_hit": true, "snapshot_key": "1a2b3c4d5e6f", "snapshot_bytes": 312_400_000,
                      "duration_ms": 800, "saved": false},
            "verified": false,
            "verification": {"command": "cargo test", "verdict": "failed", "exit_code": 101,
                             "duration_ms": 3200, "last_lines": ["test a ... FAILED", "1 failed"],
                             "tests": {"passed": 40, "failed": 1, "skipped": 0}},
        }));
        let lines = job_lines(&full, now);
        let verified = lines
            .iter()
            .position(|l| l.starts_with("Verified"))
            .unwrap();
        assert_eq!(
            lines[verified..verified + 4],
            [
                "Verified: no — `cargo test` failed: exit status 101 in 3.2 s (40 passed, 1 failed, 0 skipped)",
                "  Its last lines:",
                "    test a ... FAILED",
                "    1 failed",
            ]
        );
        assert!(
            lines.contains(
                &"Model usage: 3 requests, 12000 input + 800 output tokens, $0.0480".to_string()
            ),
            "{lines:?}"
        );
        assert!(lines.contains(
            &"Egress refused: 2 connections outside the job's policy (see `ckrv logs`, source egress)"
                .to_string()
        ));
        assert!(
            lines.contains(&"Status: cancelled".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"Setup: snapshot hit (1a2b3c4d, 312.4 MB, restored in 0.8 s)".to_string()
            ),
            "{lines:?}"
        );
        assert!(lines.contains(&"Phase: finished (agent: script)".to_string()));
        let executing = job(serde_json::json!({
            "id": "3f8a9b2c-1234", "status": "running", "phase": "agent",
            "agent": "claude-code", "git_repo_url": "https://git.example.com/r.git",
            "git_base_branch": "main", "created_at": "2026-11-22T12:00:00Z",
        }));
        assert!(
            job_lines(&executing, now).contains(&"Phase: executing (agent: claude-code)".into()),
            "the quickstart's words"
        );
        assert!(lines.contains(
            &"Repository: https://git.example.com/r.git (main → ckrv/3f8a9b2c)".to_string()
        ));
        assert!(lines.contains(&"Finished: 5 minutes ago".to_string()));
        assert!(lines.contains(&"Error: cancelled by the user".to_string()));

        // Only the contract's fields: no phase or spec line, the status as the contract says.
        let plain = job(serde_json::json!({
            "id": "3f8a9b2c-1234", "status": "succeeded",
            "git_repo_url": "https://git.example.com/r.git", "git_base_branch": "main",
            "created_at": "2026-11-22T12:00:00Z", "result_status": "succeeded",
            "result_summary": "1 file changed, 2 insertions(+)",
        }));
        let lines = job_lines(&plain, now);
        assert_eq!(lines[1], "Status: succeeded");
        assert!(!lines.iter().any(|l| l.starts_with("Phase")
            || l.starts_with("Spec")
            || l.starts_with("Model")
            || l.starts_with("Egress")
            || l.starts_with("Verified")
            || l.starts_with("Setup")));
        assert!(lines.contains(&"Repository: https://git.example.com/r.git (main)".to_string()));
        assert!(lines.contains(&"Result: 1 file changed, 2 insertions(+)".to_string()));
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "Pull results:    ckrv pull 3f8a9b2c",
                "Follow up:       ckrv run --cloud --continue 3f8a9b2c --message \"…\""
            ]
        );
        assert!(!lines.iter().any(|l| l.starts_with("Follows up")
            || l.starts_with("Followed up by")
            || l.starts_with("Published")));
    }

    #[test]
    fn the_setup_line_says_whether_a_snapshot_was_used_or_saved() {
        let summary = |json: serde_json::Value| -> ckrv_wit::types::SetupSummary {
            serde_json::from_value(json).unwrap()
        };
        let key = "1a2b3c4d5e6f7a8b";
        assert_eq!(
            setup_line(&summary(
                serde_json::json!({"snapshot_hit": false, "snapshot_key": key,
                "snapshot_bytes": 2_500_000, "duration_ms": 41_000, "saved": true})
            )),
            "Setup: ran (41.0 s), snapshot saved (1a2b3c4d, 2.5 MB)"
        );
        assert_eq!(
            setup_line(&summary(
                serde_json::json!({"snapshot_hit": false, "snapshot_key": key,
                "duration_ms": 1_500, "saved": false})
            )),
            "Setup: ran (1.5 s), snapshot not saved (see `ckrv logs`)"
        );
        assert_eq!(
            setup_line(&summary(
                serde_json::json!({"snapshot_hit": false, "duration_ms": 20,
                "saved": false})
            )),
            "Setup: ran (0.0 s)"
        );
    }

    #[test]
    fn a_group_shows_its_attempts_ranked_with_their_evidence_and_why_the_best_won() {
        let group: Group = serde_json::from_value(serde_json::json!({
            "id": "9a8b7c6d-0000", "created_at": "2026-12-07T10:00:00Z",
            "stop_at_first_verified": false, "winner": "2222aaaa-1", "reason": "the only attempt",
            "attempts": [{
                "id": "2222aaaa-1", "status": "succeeded", "state": "succeeded", "attempt": 2,
                "agent": "codex", "git_repo_url": "http://127.0.0.1:1/r.git", "git_base_branch": "main",
                "created_at": "2026-12-07T10:00:00Z", "started_at": "2026-12-07T10:00:05Z",
                "completed_at": "2026-12-07T10:03:10Z", "verified": true,
                "verification": {"command": "t", "verdict": "passed", "duration_ms": 1,
                                 "last_lines": [], "tests": {"passed": 9, "failed": 1, "skipped": 0}},
                "diff_stats": {"files_changed": 1, "insertions": 4, "deletions": 2, "files": []},
                "usage": {"requests": 2, "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.0123},
            }],
        }))
        .unwrap();
        let lines = group_lines(&group);
        assert_eq!(
            lines[2],
            "RANK  ATTEMPT  AGENT  STATE      VERIFIED  TESTS  CHANGE  COST     TIME    JOB"
        );
        assert_eq!(
            lines[3],
            "1     2        codex  succeeded  yes       9/10   +4 -2   $0.0123  3m 05s  2222aaaa"
        );
        assert_eq!(lines[4], "Best: attempt 2: the only attempt");
    }

    #[test]
    fn job_output_cannot_drive_the_terminal() {
        let entry = LogEntry {
            sequence: Some(1),
            timestamp: "2026-11-22T12:34:56Z".into(),
            level: ckrv_wit::types::LogLevel::Info,
            source: "agent\u{1b}]0;owned\u{7}".into(),
            message: "\u{1b}[2J\u{1b}[31mred\rover\nnext\u{202e}txt.exe\tok".into(),
        };
        let shown = log_line(&entry);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\t'),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "[12:34:56] agent\\x1b]0;owned\\x07: \\x1b[2J\\x1b[31mred\\x0dover\\nnext\\u{202e}txt.exe\tok"
        );
        assert_eq!(printable("plain text"), "plain text");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn short_ids_and_titles() {
        assert_eq!(short_id("3f8a9b2c-1234"), "3f8a9b2c");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(title("free"), "Free");
    }
}
