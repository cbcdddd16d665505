//! `ckrv cancel ID`: stop a job; its worker is stopped and nothing is uploaded.

use ckrv_wit::types::ErrorKind;

use crate::cli::JobArgs;
use crate::cloud::{Cloud, describe};
use crate::output;

pub async fn run(cloud: &mut Cloud, args: JobArgs) -> anyhow::Result<()> {
    let job = cloud.job(&args.id).await?;
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
