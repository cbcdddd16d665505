//! `ckrv run`: with `--cloud`, send the spec, the repository and the base branch and print the
//! job id; without, run the same pipeline here (`ckrv-orchestrator local`: the same steps,
//! agent definitions and sandbox) and leave the change in the worktree as `pull` would.

use std::path::Path;

use anyhow::Context as _;
use ckrv_wit::types::{GroupCreate, JobCreate};

use crate::cli::RunArgs;
use crate::cloud::Cloud;
use crate::config::Config;
use crate::{git, output, worktree};

pub async fn run(config: &Config, args: RunArgs) -> anyhow::Result<()> {
    if !args.cloud {
        return local(config, args).await;
    }
    let spec = match &args.spec {
        Some(path) => read_spec(path)?,
        None => String::new(),
    };
    let cwd = std::env::current_dir().context("reading the current directory")?;
    // A follow-up runs on its job's repository and base: the service fills them in.
    let follow_up = args.continue_from.is_some();
    let repo_url = match args.repo {
        Some(url) => url,
        None if follow_up => String::new(),
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
        Some(branch) => Some(branch),
        None if follow_up => None,
        None => Some(git::current_branch(&cwd)?),
    };
    let request = JobCreate {
        spec_content: spec,
        git_repo_url: repo_url,
        git_base_branch: base_branch,
        git_credential_name: args.credential,
        spec_path: args
            .spec
            .as_ref()
            .map(|path| path.to_string_lossy().into_owned()),
        no_snapshot: args.no_snapshot.then_some(true),
        publish: args.publish,
        continues: args.continue_from,
        feedback: args.message,
    };

    let mut cloud = Cloud::connect(config).await?;
    if args.attempts.is_some() || args.agents.is_some() {
        let request = GroupCreate {
            job: request,
            agents: args.agents,
            attempts: args.attempts,
            stop_at_first_verified: args.stop_at_first_verified.then_some(true),
        };
        return group(&mut cloud, &request, args.json).await;
    }
    if args.stop_at_first_verified {
        anyhow::bail!(
            "--stop-at-first-verified needs an attempt group: add --attempts N or --agents a,b"
        );
    }
    // One key for every try of this dispatch: a retry after a lost answer finds the job the
    // first try made instead of making another.
    let key = uuid::Uuid::new_v4().to_string();
    let job = cloud
        .call(async |p, ctx| p.dispatch(ctx, &request, &key).await)
        .await?;
    if args.json {
        output::json(&job)?;
        return ended_at_once(&job);
    }
    let short = output::short_id(&job.id);
    output::ok("Job Dispatched");
    output::line(format!("Job ID: {}", job.id));
    output::line(format!("Status: {}", job.status));
    output::blank();
    output::line(format!("Track progress:  ckrv status {short}"));
    output::line(format!("Stream logs:     ckrv logs {short} --follow"));
    output::line(format!("Pull results:    ckrv pull {short}"));
    ended_at_once(&job)
}

/// Dispatches an attempt group and prints its id and attempts.
async fn group(cloud: &mut Cloud, request: &GroupCreate, json: bool) -> anyhow::Result<()> {
    let group = cloud
        .call(async |p, ctx| p.dispatch_group(ctx, request).await)
        .await?;
    if json {
        return output::json(&group);
    }
    let short = output::short_id(&group.id);
    output::ok(format!(
        "Attempt group dispatched: {} attempts",
        group.attempts.len()
    ));
    output::line(format!("Group ID: {}", group.id));
    let mut attempts = group.attempts.clone();
    attempts.sort_by_key(|j| j.attempt);
    for job in &attempts {
        output::line(format!(
            "  attempt {}: job {}",
            job.attempt.unwrap_or_default(),
            output::short_id(&job.id)
        ));
    }
    output::blank();
    output::line(format!("Compare attempts: ckrv status {short}"));
    output::line(format!("Pull the best:    ckrv pull {short}"));
    output::line(format!("Cancel them all:  ckrv cancel {short}"));
    Ok(())
}

/// A job the service made but could not start (no worker could be started for it) has ended
/// already: an error, so scripts do not wait for it.
fn ended_at_once(job: &ckrv_wit::types::Job) -> anyhow::Result<()> {
    let state = job.lifecycle();
    if !state.is_terminal() || state == ckrv_wit::types::JobState::Succeeded {
        return Ok(());
    }
    anyhow::bail!(
        "job {} {state} at once: {}",
        output::short_id(&job.id),
        job.error_message
            .as_deref()
            .unwrap_or("the service gave no reason")
    )
}

/// Runs the spec on this machine against the current repository's committed base branch, and
/// applies the change to the worktree unless it conflicts with local edits.
async fn local(config: &Config, args: RunArgs) -> anyhow::Result<()> {
    let Some(spec) = args.spec.clone() else {
        anyhow::bail!("a local run needs --spec FILE");
    };
    read_spec(&spec)?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let top = git::toplevel(&cwd)?;
    let base_branch = match &args.base_branch {
        Some(branch) => branch.clone(),
        None => git::current_branch(&cwd)?,
    };
    let repo = args
        .repo
        .clone()
        .unwrap_or_else(|| top.display().to_string());
    let orchestrator = orchestrator_program()?;
    // The change is kept beside the repository's own files, so a conflict loses nothing.
    let git_dir = git::git(&top, &["rev-parse", "--absolute-git-dir"], None)?;
    let keep = std::path::PathBuf::from(git_dir.trim()).join("ckrv");
    std::fs::create_dir_all(&keep).with_context(|| format!("creating {}", keep.display()))?;
    let patch = keep.join("last-local-run.patch");
    let mut command = tokio::process::Command::new(&orchestrator);
    command
        .arg("local")
        .arg("--spec")
        .arg(&spec)
        .args(["--repo", &repo, "--base-branch", &base_branch])
        .arg("--out")
        .arg(&patch)
        .arg("--compile-cache")
        .arg(config.cache_dir.join("compiled-steps"));
    if let Some(pipeline) = &args.pipeline {
        command.arg("--pipeline").arg(pipeline);
    }
    if args.insecure_no_sandbox {
        command.arg("--insecure-no-sandbox");
    }
    if args.json {
        command.arg("--json-log");
    }
    if !args.json {
        output::ok(format!("Running {} here, on {base_branch}", spec.display()));
    }
    // The job's log streams to stderr as it is written.
    let status = command
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {}", orchestrator.display()))?;
    if !status.success() {
        anyhow::bail!("the local run failed (its log is above); nothing was changed");
    }
    let diff = std::fs::read(&patch).with_context(|| format!("reading {}", patch.display()))?;
    if diff.is_empty() {
        if args.json {
            return output::json(&serde_json::json!({"applied": false, "files": []}));
        }
        output::line("The agent changed nothing; your worktree is untouched.");
        return Ok(());
    }
    let found = worktree::inspect(&top, &diff)?;
    if !found.blocked.is_empty() {
        anyhow::bail!(
            "the change conflicts with your worktree in:\n  {}\n  nothing was changed; it is \
             kept in {}: apply it with conflict markers using `git apply --3way {}`",
            found.blocked.join("\n  "),
            patch.display(),
            patch.display()
        );
    }
    if !found.risks.is_empty() && !args.yes {
        worktree::confirm(
            "the change",
            &format!(
                "read it in {}, then apply it with `git apply {}`",
                patch.display(),
                patch.display()
            ),
            &found.risks,
            args.json,
        )?;
    }
    worktree::apply(&top, &diff, &found.files)?;
    if args.json {
        return output::json(&serde_json::json!({
            "applied": true,
            "files": found.files,
            "risks": found.risks,
            "patch": patch,
        }));
    }
    output::ok("Changes applied:");
    for line in output::diffstat(&found.files) {
        output::line(line);
    }
    output::blank();
    output::line("Review with: git diff HEAD");
    Ok(())
}

/// `ckrv-orchestrator`: `CKRV_ORCHESTRATOR`, else beside this program, else on `PATH`.
fn orchestrator_program() -> anyhow::Result<std::path::PathBuf> {
    use ckrv_wit::programs;
    if let Some(path) = std::env::var_os("CKRV_ORCHESTRATOR").filter(|p| !p.is_empty()) {
        return programs::resolve(std::path::Path::new(&path))
            .map_err(|e| anyhow::anyhow!("CKRV_ORCHESTRATOR: {e}"));
    }
    programs::locate(programs::ORCHESTRATOR).map_err(|e| {
        anyhow::anyhow!(
            "local runs need ckrv-orchestrator: {e}; install it (`cargo install --path \
             orchestrator`), or run in the cloud with --cloud"
        )
    })
}

fn read_spec(path: &Path) -> anyhow::Result<String> {
    let spec = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the spec {}", path.display()))?;
    if spec.trim().is_empty() {
        anyhow::bail!("the spec {} is empty", path.display());
    }
    Ok(spec)
}
