//! `ckrv run --cloud`: send the spec, the repository and the base branch; print the job id.

use std::path::Path;

use anyhow::Context as _;
use ckrv_wit::types::JobCreate;

use crate::cli::RunArgs;
use crate::cloud::Cloud;
use crate::config::Config;
use crate::{git, output};

pub async fn run(config: &Config, args: RunArgs) -> anyhow::Result<()> {
    if !args.cloud {
        anyhow::bail!("local runs are not part of this build: pass --cloud");
    }
    let spec = read_spec(&args.spec)?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let repo_url = match args.repo {
        Some(url) => url,
        None => git::origin_url(&cwd)?,
    };
    // A token in the URL would be stored and shown with the job: never send one.
    if let Err(ckrv_wit::repo_url::RepoUrlError::Credentials) =
        ckrv_wit::repo_url::check(&repo_url, true)
    {
        anyhow::bail!(
            "the repository URL carries credentials, which are never sent: give the URL without them \
             (--repo https://host/org/repo.git) and a stored credential (`ckrv cloud credentials add`, then --credential NAME)"
        );
    }
    let base_branch = match args.base_branch {
        Some(branch) => branch,
        None => git::current_branch(&cwd)?,
    };
    let request = JobCreate {
        spec_content: spec,
        git_repo_url: repo_url,
        git_base_branch: Some(base_branch),
        git_credential_name: args.credential,
        spec_path: Some(args.spec.to_string_lossy().into_owned()),
    };

    let mut cloud = Cloud::connect(config).await?;
    // One key for every try of this dispatch: a retry after a lost answer finds the job the
    // first try made instead of making another.
    let key = uuid::Uuid::new_v4().to_string();
    let job = cloud
        .call(async |p, ctx| p.dispatch(ctx, &request, &key).await)
        .await?;
    if args.json {
        return output::json(&job);
    }
    let short = output::short_id(&job.id);
    output::ok("Job Dispatched");
    output::line(format!("Job ID: {}", job.id));
    output::line(format!("Status: {}", job.status));
    output::blank();
    output::line(format!("Track progress:  ckrv status {short}"));
    output::line(format!("Stream logs:     ckrv logs {short} --follow"));
    output::line(format!("Pull results:    ckrv pull {short}"));
    Ok(())
}

fn read_spec(path: &Path) -> anyhow::Result<String> {
    let spec = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spec {}", path.display()))?;
    if spec.trim().is_empty() {
        anyhow::bail!("the spec {} is empty", path.display());
    }
    Ok(spec)
}
