//! `ckrv status ID`.

use crate::cli::JobArgs;
use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud, args: JobArgs) -> anyhow::Result<()> {
    let job = cloud
        .call(async |p, ctx| p.get_job(ctx, &args.id).await)
        .await?;
    if args.json {
        return output::json(&job);
    }
    for line in output::job_lines(&job, time::OffsetDateTime::now_utc()) {
        output::line(line);
    }
    Ok(())
}
