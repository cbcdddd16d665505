//! `ckrv env list|rm`: the account's snapshots of repository setups (docs/environments.md).
//! Each belongs to one account; dropping one makes the next job of its repository run setup.

use time::OffsetDateTime;

use crate::cli::EnvCommand;
use crate::cloud::Cloud;
use crate::output;

pub async fn run(cloud: &mut Cloud, command: EnvCommand) -> anyhow::Result<()> {
    match command {
        EnvCommand::List { json } => list(cloud, json).await,
        EnvCommand::Rm { keys, all } => {
            let keys = if all {
                let snapshots = cloud
                    .call(async |p, ctx| p.snapshots_list(ctx).await)
                    .await?;
                snapshots.into_iter().map(|s| s.key).collect()
            } else {
                keys
            };
            if keys.is_empty() {
                output::line("No snapshots to drop");
            }
            for key in keys {
                let sent = key.clone();
                cloud
                    .call(async |p, ctx| p.snapshots_remove(ctx, &sent).await)
                    .await?;
                output::ok(format!(
                    "Snapshot {} dropped: the next job of its repository runs setup",
                    key.get(..12).unwrap_or(&key)
                ));
            }
            Ok(())
        }
    }
}

async fn list(cloud: &mut Cloud, json: bool) -> anyhow::Result<()> {
    let snapshots = cloud
        .call(async |p, ctx| p.snapshots_list(ctx).await)
        .await?;
    if json {
        return output::json(&snapshots);
    }
    if snapshots.is_empty() {
        output::line(
            "No snapshots. A job whose repository has .ckrv/environment.toml saves one after its setup",
        );
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let rows: Vec<[String; 6]> = snapshots
        .iter()
        .map(|s| {
            [
                s.key.get(..12).unwrap_or(&s.key).to_string(),
                s.repository.clone(),
                format!("{:.1} MB", s.bytes as f64 / 1_000_000.0),
                output::relative(&s.created_at, now),
                output::relative(&s.last_used_at, now),
                output::short_id(&s.job_id).to_string(),
            ]
        })
        .collect();
    let headers = ["KEY", "REPOSITORY", "SIZE", "SAVED", "LAST USED", "JOB"];
    for line in output::table(&headers, &rows) {
        output::emit(line);
    }
    Ok(())
}
