//! `ckrv pull ID`: fetch a succeeded job's diff and apply it to this worktree, or change
//! nothing if it does not apply cleanly.

use anyhow::Context as _;
use ckrv_wit::types::JobStatus;

use crate::cli::JobArgs;
use crate::cloud::Cloud;
use crate::{git, output};

pub async fn run(cloud: &mut Cloud, args: JobArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let top = git::toplevel(&cwd)?;
    let job = cloud
        .call(async |p, ctx| p.get_job(ctx, &args.id).await)
        .await?;
    let short = output::short_id(&job.id).to_string();
    if job.status != JobStatus::Succeeded {
        anyhow::bail!(
            "job {short} is {}, so there is nothing to pull; see `ckrv status {short}`",
            job.status
        );
    }
    if !args.json {
        output::ok("Fetching results...");
    }
    let diff = cloud
        .call(async |p, ctx| p.fetch_diff(ctx, &job.id).await)
        .await?;
    let files = if diff.is_empty() {
        Vec::new()
    } else {
        git::git(&top, &["apply", "--check", "-"], Some(&diff)).map_err(|e| {
            anyhow::anyhow!("the diff does not apply to your worktree (nothing was changed): {e}")
        })?;
        let stats = git::parse_numstat(&git::git(&top, &["apply", "--numstat", "-"], Some(&diff))?);
        let created: Vec<&str> = stats
            .iter()
            .map(|f| f.path.as_str())
            .filter(|path| !top.join(path).exists())
            .collect();
        git::git(&top, &["apply", "-"], Some(&diff)).context("applying the diff")?;
        // Mark new files intent-to-add so `git diff HEAD` shows the whole change. (Not
        // `git apply --intent-to-add`: git 2.47 drops the rest of the index with it.)
        if !created.is_empty() {
            let mut args = vec!["add", "--intent-to-add", "--"];
            args.extend(&created);
            git::git(&top, &args, None).context("marking the new files intent-to-add")?;
        }
        stats
    };
    if args.json {
        return output::json(&serde_json::json!({
            "job": job,
            "applied": !files.is_empty(),
            "files": files,
        }));
    }
    if files.is_empty() {
        output::line("The job changed nothing; your worktree is untouched.");
        return Ok(());
    }
    output::ok("Applying diff to worktree...");
    output::blank();
    output::line("Changes applied:");
    for line in output::diffstat(&files) {
        output::line(line);
    }
    output::blank();
    output::line("Review with: git diff HEAD");
    output::line(format!(
        "Commit with: git add -A && git commit -m \"{}\"",
        commit_subject(&job.spec_path)
    ));
    Ok(())
}

/// A commit subject from the spec's path: `specs/greeting/spec.md` → "Feature: greeting".
fn commit_subject(spec_path: &str) -> String {
    let path = std::path::Path::new(spec_path);
    let name = match path.file_stem().and_then(|s| s.to_str()) {
        Some("spec" | "SPEC" | "README") => path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str()),
        other => other,
    };
    format!("Feature: {}", name.unwrap_or("cloud job"))
}

#[cfg(test)]
mod tests {
    use super::commit_subject;

    #[test]
    fn commit_subjects_name_the_spec() {
        assert_eq!(
            commit_subject("specs/greeting/spec.md"),
            "Feature: greeting"
        );
        assert_eq!(commit_subject("docs/auth.md"), "Feature: auth");
        assert_eq!(commit_subject(""), "Feature: cloud job");
    }
}
