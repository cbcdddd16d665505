//! `ckrv pull ID`: fetch a succeeded job's diff, check it is the one its worker uploaded, show
//! what it does beyond editing files, and apply it to this worktree, or change nothing.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use ckrv_wit::types::JobState;
use sha2::{Digest as _, Sha256};

use crate::cli::PullArgs;
use crate::cloud::Cloud;
use crate::review::{self, Risk};
use crate::{git, output};

pub async fn run(cloud: &mut Cloud, args: PullArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let top = git::toplevel(&cwd)?;
    let job = cloud
        .call(async |p, ctx| p.get_job(ctx, &args.id).await)
        .await?;
    let short = output::short_id(&job.id).to_string();
    let state = job.lifecycle();
    if state != JobState::Succeeded {
        anyhow::bail!(
            "job {short} is {state}, so there is nothing to pull; see `ckrv status {short}`"
        );
    }
    if !args.json {
        output::ok("Fetching results...");
    }
    let diff = cloud
        .call(async |p, ctx| p.fetch_diff(ctx, &job.id).await)
        .await?;
    let sha256 = hex::encode(Sha256::digest(&diff));
    match &job.diff_sha256 {
        Some(recorded) if !recorded.eq_ignore_ascii_case(&sha256) => anyhow::bail!(
            "the diff of job {short} is not the one its worker uploaded (SHA-256 {sha256}, \
             recorded {recorded}): it was changed in storage or on the way; nothing was changed"
        ),
        Some(_) => {}
        None if !args.json => {
            output::line("(the provider records no digest for this diff: it cannot be verified)")
        }
        None => {}
    }
    let (files, risks) = if diff.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        git::git(&top, &["apply", "--check", "-"], Some(&diff)).map_err(|e| {
            anyhow::anyhow!("the diff does not apply to your worktree (nothing was changed): {e}")
        })?;
        let files = git::parse_numstat(&git::git(&top, &["apply", "--numstat", "-"], Some(&diff))?);
        let summary = git::git(&top, &["apply", "--summary", "-"], Some(&diff))?;
        let risks = review::risks(&files, &summary);
        (files, risks)
    };
    if !risks.is_empty() && !args.yes {
        confirm(&short, &risks, args.json)?;
    }
    if !files.is_empty() {
        let created: Vec<&str> = files
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
    }
    if args.json {
        return output::json(&serde_json::json!({
            "job": job,
            "applied": !files.is_empty(),
            "files": files,
            "sha256": sha256,
            "risks": risks,
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
        commit_subject(job.spec_path.as_deref().unwrap_or_default())
    ));
    Ok(())
}

/// Shows what the change does beyond editing files and asks before going on; without a
/// terminal to ask on, refuses unless `--yes` was given.
fn confirm(short: &str, risks: &[Risk], json: bool) -> anyhow::Result<()> {
    let listed: Vec<String> = risks
        .iter()
        .map(|r| format!("{}: {}", output::printable(&r.path), r.why))
        .collect();
    let interactive = !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if !interactive {
        anyhow::bail!(
            "job {short}'s change needs a look before it is applied (nothing was changed):\n  {}\n  \
             read it with `ckrv pull {short} --json` or in the job's log, then run `ckrv pull {short} --yes`",
            listed.join("\n  ")
        );
    }
    output::blank();
    output::line("This change does more than edit files:");
    for line in &listed {
        output::line(format!("  {line}"));
    }
    eprint!("Apply it? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("not applied; nothing was changed")
    }
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
