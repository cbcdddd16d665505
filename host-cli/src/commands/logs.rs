//! `ckrv logs ID [--follow]`: reads pages after a cursor; following polls until the job ends.

use std::time::Duration;

use crate::cli::LogsArgs;
use crate::cloud::Cloud;
use crate::output;

const PAGE: u32 = 500;
const POLL: Duration = Duration::from_secs(1);

pub async fn run(cloud: &mut Cloud, args: LogsArgs) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = cloud
            .call(async |p, ctx| p.read_logs(ctx, &args.id, after, PAGE).await)
            .await?;
        for entry in &page.logs {
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
        tokio::time::sleep(POLL).await;
    }
}
