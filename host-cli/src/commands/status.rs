//! `ckrv status ID`: the job, and while it runs, when it should end.

use std::time::Duration;

use ckrv_wit::types::{Job, JobState, JobStatus};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::JobArgs;
use crate::cloud::{Cloud, Found};
use crate::output;

/// How many of the account's recent successes the ETA is estimated from.
const HISTORY: u32 = 20;

pub async fn run(cloud: &mut Cloud, args: JobArgs) -> anyhow::Result<()> {
    let job = match cloud.job_or_group(&args.id).await? {
        Found::Job(job) => *job,
        Found::Group(group) if args.json => return output::json(&group),
        Found::Group(group) => {
            for line in output::group_lines(&group) {
                output::line(line);
            }
            return Ok(());
        }
    };
    if args.json {
        return output::json(&job);
    }
    let now = OffsetDateTime::now_utc();
    let mut lines = output::job_lines(&job, now);
    if !job.lifecycle().is_terminal() {
        // Only a running job costs the second call; an estimate that cannot be made is left
        // out rather than failing the command.
        let recent = super::list::recent(cloud, Some(JobStatus::Succeeded), HISTORY)
            .await
            .unwrap_or_default();
        if let Some(eta) = eta(&job, &recent, now) {
            let at = lines.len().saturating_sub(1);
            lines.insert(at, format!("ETA: {eta}"));
        }
    }
    for line in lines {
        output::line(line);
    }
    Ok(())
}

/// "~5 minutes", from the median run time of `recent` finished jobs less this job's time so
/// far; `None` without history.
fn eta(job: &Job, recent: &[Job], now: OffsetDateTime) -> Option<String> {
    let mut durations: Vec<Duration> = recent.iter().filter_map(run_time).collect();
    if durations.is_empty() {
        return None;
    }
    durations.sort();
    let typical = durations[durations.len() / 2];
    let begun = job.started_at.as_deref().unwrap_or(&job.created_at);
    let elapsed = OffsetDateTime::parse(begun, &Rfc3339)
        .ok()
        .map(|at| Duration::try_from(now - at).unwrap_or_default())
        .unwrap_or_default();
    let left = typical.saturating_sub(elapsed);
    Some(match left.as_secs() {
        0..30 if job.lifecycle() == JobState::Running => "any moment now".to_string(),
        0..90 => "~1 minute".to_string(),
        s => format!("~{} minutes", s.div_ceil(60)),
    })
}

/// From creation (queueing included: the wait is part of the answer) to completion.
fn run_time(job: &Job) -> Option<Duration> {
    let created = OffsetDateTime::parse(&job.created_at, &Rfc3339).ok()?;
    let completed = OffsetDateTime::parse(job.completed_at.as_deref()?, &Rfc3339).ok()?;
    Duration::try_from(completed - created).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(created: &str, started: Option<&str>, completed: Option<&str>) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "3f8a9b2c", "status": if completed.is_some() { "succeeded" } else { "running" },
            "git_repo_url": "https://git.example.com/r.git", "git_base_branch": "main",
            "created_at": created, "started_at": started, "completed_at": completed,
        }))
        .unwrap()
    }

    #[test]
    fn the_eta_is_the_median_run_less_the_time_so_far() {
        let now = OffsetDateTime::parse("2026-11-24T10:00:00Z", &Rfc3339).unwrap();
        let history = [
            job("2026-11-23T10:00:00Z", None, Some("2026-11-23T10:04:00Z")),
            job("2026-11-23T11:00:00Z", None, Some("2026-11-23T11:06:00Z")),
            job("2026-11-23T12:00:00Z", None, Some("2026-11-23T12:30:00Z")),
        ];
        let running = job("2026-11-24T09:59:00Z", Some("2026-11-24T09:59:00Z"), None);
        assert_eq!(eta(&running, &history, now).as_deref(), Some("~5 minutes"));
        let late = job("2026-11-24T09:00:00Z", Some("2026-11-24T09:00:00Z"), None);
        assert_eq!(eta(&late, &history, now).as_deref(), Some("any moment now"));
        assert_eq!(eta(&running, &[], now), None);
    }
}
