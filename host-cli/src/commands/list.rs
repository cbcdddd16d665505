//! `ckrv list [--status S] [--limit N]`: the account's jobs, newest first.

use ckrv_wit::types::{Job, JobStatus};
use time::OffsetDateTime;

use crate::cli::ListArgs;
use crate::cloud::Cloud;
use crate::output;

/// Jobs asked for per page.
const PAGE: u32 = 100;

pub async fn run(cloud: &mut Cloud, args: ListArgs) -> anyhow::Result<()> {
    let status = args
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()?;
    let jobs = recent(cloud, status, args.limit).await?;
    if args.json {
        return output::json(&ckrv_wit::types::JobListResponse {
            jobs,
            next_cursor: None,
        });
    }
    if jobs.is_empty() {
        output::line("No jobs yet. Start one with `ckrv run --cloud --spec FILE`.");
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let rows: Vec<[String; 5]> = jobs
        .iter()
        .map(|job| {
            [
                output::short_id(&job.id).to_string(),
                job.lifecycle().to_string(),
                output::relative(&job.created_at, now),
                job.spec_path.clone().unwrap_or_else(|| "-".into()),
                summary(job),
            ]
        })
        .collect();
    for line in output::table(&["ID", "STATUS", "CREATED", "SPEC", "RESULT"], &rows) {
        output::emit(line);
    }
    Ok(())
}

/// Up to `limit` of the newest jobs, following the provider's cursor.
pub async fn recent(
    cloud: &mut Cloud,
    status: Option<JobStatus>,
    limit: u32,
) -> anyhow::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    while (jobs.len() as u32) < limit {
        let want = (limit - jobs.len() as u32).min(PAGE);
        let page = cloud
            .call(async |p, ctx| p.list_jobs(ctx, status, cursor.as_deref(), want).await)
            .await?;
        let last = page.jobs.is_empty();
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) if !last => cursor = Some(next),
            _ => break,
        }
    }
    jobs.truncate(limit as usize);
    Ok(jobs)
}

/// The result column: what it changed, or why it did not.
fn summary(job: &Job) -> String {
    let text = job
        .result_summary
        .as_deref()
        .or(job.error_message.as_deref())
        .or(job.phase.map(output::phase_name))
        .unwrap_or("-");
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}
