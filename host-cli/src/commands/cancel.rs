//! `ckrv cancel ID`: stop a job; its worker is stopped and nothing is uploaded. For an attempt
//! group, every attempt still waiting or running.

use ckrv_wit::types::ErrorKind;

use crate::cli::JobArgs;
use crate::cloud::{Cloud, Found, describe};
use crate::output;

pub async fn run(cloud: &mut Cloud, args: JobArgs) -> anyhow::Result<()> {
    let job = match cloud.job_or_group(&args.id).await? {
        Found::Job(job) => *job,
        Found::Group(group) => return cancel_group(cloud, &group.id, args.json).await,
    };
    let short = output::short_id(&job.id).to_string();
    let job = match cloud
        .call_raw(async |p, ctx| p.cancel_job(ctx, &job.id).await)
        .await?
    {
        Ok(job) => job,
        Err(e) if e.error == ErrorKind::Conflict => anyhow::bail!(
            "job {short} has already ended ({}), so there is nothing to cancel; see `ckrv status {short}`",
            e.description()
        ),
        Err(e) => return Err(describe(e)),
    };
    if args.json {
        return output::json(&job);
    }
    output::ok(format!("Job {short} {}", job.lifecycle()));
    Ok(())
}

/// Cancels every attempt of the group still waiting or running.
async fn cancel_group(cloud: &mut Cloud, id: &str, json: bool) -> anyhow::Result<()> {
    let short = output::short_id(id).to_string();
    let group = match cloud
        .call_raw(async |p, ctx| p.cancel_group(ctx, id).await)
        .await?
    {
        Ok(group) => group,
        Err(e) if e.error == ErrorKind::Conflict => anyhow::bail!(
            "every attempt of group {short} has already ended, so there is nothing to cancel; see `ckrv status {short}`"
        ),
        Err(e) => return Err(describe(e)),
    };
    if json {
        return output::json(&group);
    }
    let cancelled = group
        .attempts
        .iter()
        .filter(|j| j.lifecycle() == ckrv_wit::types::JobState::Cancelled)
        .count();
    output::ok(format!(
        "Group {short}: {cancelled} of {} attempts cancelled",
        group.attempts.len()
    ));
    Ok(())
}
