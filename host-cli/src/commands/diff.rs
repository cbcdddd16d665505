//! `ckrv diff ID`: print a job's change as `git apply` reads it, checked against the digest its
//! worker recorded, without touching the worktree. For an attempt group, its best attempt's, or
//! `--attempt K`'s (docs/attempts.md).

use std::io::Write as _;

use anyhow::Context as _;

use crate::cli::DiffArgs;
use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud, args: DiffArgs) -> anyhow::Result<()> {
    // Only the diff goes to stdout, so it can be piped to `git apply` or a pager.
    let job = super::pull::the_change_of(cloud, &args.id, args.attempt, true).await?;
    let short = output::short_id(&job.id).to_string();
    if !job.change_is_pullable() {
        anyhow::bail!(
            "job {short} is {}, so it has no change to show; see `ckrv status {short}`",
            job.lifecycle()
        );
    }
    let (diff, _) = super::pull::fetch_checked(cloud, &job, true).await?;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&diff).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the diff to stdout"),
    }
}
