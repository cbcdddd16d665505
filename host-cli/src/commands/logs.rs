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
        for entry in &page.entries {
            if args.json {
                output::emit(serde_json::to_string(entry)?);
            } else {
                output::emit(output::log_line(entry));
            }
        }
        after = page.next_after;
        if !page.entries.is_empty() {
            continue;
        }
        // The status was read before the entries, so a terminal status here means the log
        // is complete.
        if !args.follow || page.job_status.is_terminal() {
            if args.follow && !args.json {
                eprintln!("▌ Job {}", page.job_status);
            }
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
