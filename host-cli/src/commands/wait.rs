//! `ckrv wait ID`: block until the job ends; the exit status says how it ended.

use std::time::{Duration, Instant};

use ckrv_wit::types::JobState;

use crate::cli::WaitArgs;
use crate::cloud::Cloud;
use crate::exit::Exit;
use crate::{output, progress};

/// How often the job is read while it runs.
const POLL: Duration = Duration::from_secs(1);

pub async fn run(cloud: &mut Cloud, args: WaitArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let spinner = progress::Spinner::start(!args.json);
    let job = loop {
        let job = cloud.job(&args.id).await?;
        let state = job.lifecycle();
        if state.is_terminal() {
            break job;
        }
        spinner.set(format!(
            "job {} {state}{}",
            output::short_id(&job.id),
            job.phase
                .map(|p| format!(" ({})", output::phase_name(p)))
                .unwrap_or_default()
        ));
        if args.timeout.is_some_and(|limit| started.elapsed() >= limit) {
            drop(spinner);
            return Err(Exit::new(
                Exit::GAVE_UP,
                format!(
                    "job {} is still {state} after {}; `ckrv wait` again, or `ckrv cancel` it",
                    output::short_id(&job.id),
                    humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
                ),
            )
            .into());
        }
        tokio::time::sleep(POLL).await;
    };
    drop(spinner);
    let state = job.lifecycle();
    if args.json {
        output::json(&job)?;
    } else {
        for line in output::job_lines(&job, time::OffsetDateTime::now_utc()) {
            output::line(line);
        }
    }
    match state {
        JobState::Succeeded => Ok(()),
        state => Err(Exit::quiet(Exit::for_state(state)).into()),
    }
}
