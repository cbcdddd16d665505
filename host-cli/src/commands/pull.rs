//! `ckrv pull ID`: fetch a succeeded job's diff, check it is the one its worker uploaded, show
//! what it does beyond editing files, and apply it to this worktree, or change nothing.
//! `--check` only reports; `--3way` applies with conflict markers; `--branch NAME` commits it
//! on a new branch from the job's base commit and checks that out.

use std::path::Path;

use anyhow::Context as _;
use ckrv_wit::types::{Group, Job, JobState};
use sha2::{Digest as _, Sha256};

use crate::cli::PullArgs;
use crate::cloud::{Cloud, Found};
use crate::exit::Exit;
use crate::git::FileStat;
use crate::review::Risk;
use crate::{git, output, worktree};

/// The job whose change `id` names: the job, or an attempt group's attempt `attempt`, else its
/// best (docs/attempts.md).
pub(super) async fn the_change_of(
    cloud: &mut Cloud,
    id: &str,
    attempt: Option<u32>,
    quiet: bool,
) -> anyhow::Result<Job> {
    Ok(match cloud.job_or_group(id).await? {
        Found::Job(job) if attempt.is_some() => anyhow::bail!(
            "--attempt picks an attempt of a group, and {} is a job; leave --attempt out",
            output::short_id(&job.id)
        ),
        Found::Job(job) => *job,
        Found::Group(group) => attempt_of(*group, attempt, quiet)?,
    })
}

/// The job's diff, checked against the digest its worker recorded; and that digest.
pub(super) async fn fetch_checked(
    cloud: &mut Cloud,
    job: &Job,
    quiet: bool,
) -> anyhow::Result<(Vec<u8>, String)> {
    let short = output::short_id(&job.id);
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
        None if !quiet => {
            output::line("(the provider records no digest for this diff: it cannot be verified)")
        }
        None => {}
    }
    Ok((diff, sha256))
}

/// The attempt of `group` to pull: `--attempt N`, else the best (docs/attempts.md).
fn attempt_of(group: Group, attempt: Option<u32>, json: bool) -> anyhow::Result<Job> {
    let short = output::short_id(&group.id).to_string();
    let chosen = match attempt {
        Some(n) => group
            .attempts
            .into_iter()
            .find(|j| j.attempt == Some(n))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "group {short} has no attempt {n}; `ckrv status {short}` lists them"
                )
            })?,
        None => {
            let (Some(_), Some(reason)) = (&group.winner, &group.reason) else {
                anyhow::bail!(
                    "no attempt of group {short} has a change to pull yet; see `ckrv status {short}`"
                );
            };
            let best = group
                .winning_job()
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("group {short} names a winner it does not list"))?;
            if !json {
                output::line(format!(
                    "Pulling attempt {} of group {short} ({}), the best: {reason}",
                    best.attempt.unwrap_or_default(),
                    best.agent.as_deref().unwrap_or("its agent")
                ));
            }
            best
        }
    };
    Ok(chosen)
}

pub async fn run(cloud: &mut Cloud, args: PullArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let top = git::toplevel(&cwd)?;
    let job = the_change_of(cloud, &args.id, args.attempt, args.json).await?;
    let short = output::short_id(&job.id).to_string();
    let state = job.lifecycle();
    if !job.change_is_pullable() {
        anyhow::bail!(
            "job {short} is {state}, so there is nothing to pull; see `ckrv status {short}`"
        );
    }
    if state != JobState::Succeeded && !args.json {
        output::line(format!(
            "Job {short} failed after its change was uploaded ({}); pulling the change it made.",
            job.error_message.as_deref().unwrap_or("no reason given")
        ));
    }
    if !args.json {
        output::ok("Fetching results...");
    }
    let (diff, sha256) = fetch_checked(cloud, &job, args.json).await?;
    if diff.is_empty() {
        if args.json {
            return output::json(&Report::new(&job, "none", &sha256));
        }
        output::line("The job changed nothing; your worktree is untouched.");
        return Ok(());
    }
    let worktree::Inspection {
        files,
        risks,
        blocked,
    } = worktree::inspect(&top, &diff)?;
    let mut report = Report::new(&job, mode(&args), &sha256);
    report.files = files.clone();
    report.risks = risks.clone();

    if args.check {
        report.conflicts = blocked.clone();
        if args.json {
            output::json(&report)?;
        } else if blocked.is_empty() {
            output::ok(format!(
                "job {short}'s change applies cleanly to this worktree"
            ));
            for line in output::diffstat(&files) {
                output::line(line);
            }
        } else {
            output::line(format!(
                "job {short}'s change does not apply cleanly; it conflicts with:"
            ));
            for path in &blocked {
                output::line(format!("  {path}"));
            }
        }
        return if blocked.is_empty() {
            Ok(())
        } else {
            Err(Exit::quiet(1).into())
        };
    }
    if !risks.is_empty() && !args.yes {
        worktree::confirm(
            &format!("job {short}'s change"),
            &format!(
                "read it with `ckrv pull {short} --json` or in the job's log, then run `ckrv pull {short} --yes`"
            ),
            &risks,
            args.json,
        )?;
    }
    if let Some(branch) = &args.branch {
        return onto_branch(&top, &job, &diff, branch, report, args.json);
    }
    if !blocked.is_empty() && !args.three_way {
        anyhow::bail!(
            "job {short}'s change conflicts with your worktree in:\n  {}\n  nothing was changed; \
             apply with conflict markers (`ckrv pull {short} --3way`), or on a new branch from \
             the job's base (`ckrv pull {short} --branch NAME`)",
            blocked
                .iter()
                .map(|p| output::printable(p).into_owned())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    if args.three_way {
        // git merges only over files whose worktree matches the index: stage the edits to the
        // files the change touches first (they stay the developer's, now staged).
        let mut diff_args = vec!["diff", "--name-only", "-z", "--"];
        diff_args.extend(files.iter().map(|f| f.path.as_str()));
        let edited = git::git(&top, &diff_args, None)?;
        let edited: Vec<&str> = edited.split('\0').filter(|p| !p.is_empty()).collect();
        if !edited.is_empty() {
            let mut add = vec!["add", "--"];
            add.extend(&edited);
            git::git(&top, &add, None).context("staging your edits for the merge")?;
        }
        // git exits 1 with conflicts too: the markers are written, and the index lists them.
        let applied = git::git(&top, &["apply", "--3way", "-"], Some(&diff));
        report.conflicts = unmerged(&top)?;
        if let Err(e) = applied
            && report.conflicts.is_empty()
        {
            anyhow::bail!("the change could not be applied with --3way: {e}");
        }
    } else {
        worktree::apply(&top, &diff, &files)?;
    }
    report.applied = true;
    if args.json {
        output::json(&report)?;
    } else {
        output::ok("Applying diff to worktree...");
        output::blank();
        output::line("Changes applied:");
        for line in output::diffstat(&files) {
            output::line(line);
        }
        output::blank();
        if report.conflicts.is_empty() {
            output::line("Review with: git diff HEAD");
            output::line(format!(
                "Commit with: git add -A && git commit -m \"{}\"",
                commit_subject(job.spec_path.as_deref().unwrap_or_default())
            ));
        } else {
            output::line("These files have conflict markers: resolve them, then `git add` them:");
            for path in &report.conflicts {
                output::line(format!("  {path}"));
            }
        }
    }
    if report.conflicts.is_empty() {
        Ok(())
    } else {
        Err(Exit::quiet(1).into())
    }
}

/// What `pull --json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    job: &'a Job,
    mode: &'static str,
    applied: bool,
    files: Vec<FileStat>,
    /// Files the change does not apply to cleanly (`--check`), or left with conflict markers
    /// (`--3way`).
    conflicts: Vec<String>,
    branch: Option<String>,
    commit: Option<String>,
    sha256: String,
    risks: Vec<Risk>,
}

impl<'a> Report<'a> {
    fn new(job: &'a Job, mode: &'static str, sha256: &str) -> Self {
        Self {
            job,
            mode,
            applied: false,
            files: Vec::new(),
            conflicts: Vec::new(),
            branch: None,
            commit: None,
            sha256: sha256.to_string(),
            risks: Vec::new(),
        }
    }
}

fn mode(args: &PullArgs) -> &'static str {
    match (&args.branch, args.three_way, args.check) {
        (_, _, true) => "check",
        (Some(_), _, _) => "branch",
        (None, true, _) => "3way",
        (None, false, false) => "apply",
    }
}

/// Paths git left unmerged (with conflict markers).
fn unmerged(top: &Path) -> anyhow::Result<Vec<String>> {
    let out = git::git(top, &["diff", "--name-only", "-z", "--diff-filter=U"], None)?;
    Ok(out
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect())
}

/// Commits the change on a new branch `name` at the job's base commit, built in a private
/// index so the worktree is not touched, then checks the branch out. Edits in the worktree
/// that the switch would overwrite stop the checkout, never the edits: the branch stays.
fn onto_branch(
    top: &Path,
    job: &Job,
    diff: &[u8],
    name: &str,
    mut report: Report<'_>,
    json: bool,
) -> anyhow::Result<()> {
    let short = output::short_id(&job.id).to_string();
    git::git(top, &["check-ref-format", "--branch", name], None)
        .map_err(|_| anyhow::anyhow!("`{}` is not a valid branch name", output::printable(name)))?;
    if git::git(
        top,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{name}"),
        ],
        None,
    )
    .is_ok()
    {
        anyhow::bail!("a branch named {name} exists already: choose another --branch");
    }
    let Some(base) = job.diff_stats.as_ref().and_then(|s| s.base_commit.clone()) else {
        anyhow::bail!(
            "the provider records no base commit for job {short}, so there is nowhere to start \
             the branch: use `ckrv pull {short} --3way` instead"
        );
    };
    if !base.chars().all(|c| c.is_ascii_hexdigit()) || base.len() < 7 {
        anyhow::bail!(
            "the job's base commit `{}` is not a commit id",
            output::printable(&base)
        );
    }
    let commit_of = |rev: &str| {
        git::git(
            top,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ],
            None,
        )
    };
    if commit_of(&base).is_err() {
        // Not fetched yet: the job's base branch from origin usually brings it.
        let _ = git::git(
            top,
            &["fetch", "--quiet", "origin", &job.git_base_branch],
            None,
        );
        commit_of(&base).map_err(|_| {
            anyhow::anyhow!(
                "the job's base commit {base} is not in this repository: `git fetch origin` it, \
                 then pull again"
            )
        })?;
    }
    let scratch = tempfile::tempdir().context("a scratch directory for the branch's index")?;
    let index = scratch.path().join("index");
    let env = [("GIT_INDEX_FILE", index.as_path())];
    git::git_with_env(top, &["read-tree", &base], None, &env)?;
    git::git_with_env(top, &["apply", "--cached", "-"], Some(diff), &env)
        .context("applying the change to the job's base commit")?;
    let tree = git::git_with_env(top, &["write-tree"], None, &env)?;
    let message = format!(
        "{}\n\nMade by ckrv job {}.\n",
        commit_subject(job.spec_path.as_deref().unwrap_or_default()),
        job.id
    );
    let commit = git::git(
        top,
        &["commit-tree", tree.trim(), "-p", &base, "-m", &message],
        None,
    )
    .context("committing the change")?;
    let commit = commit.trim().to_string();
    git::git(top, &["branch", name, &commit], None)?;
    report.branch = Some(name.to_string());
    report.commit = Some(commit.clone());
    let switched = git::git(top, &["switch", "--quiet", name], None);
    report.applied = switched.is_ok();
    if json {
        output::json(&report)?;
    }
    if let Err(e) = switched {
        anyhow::bail!(
            "branch {name} holds job {short}'s change (commit {}), but checking it out would \
             overwrite your edits, so your worktree is as it was: commit or stash them, then \
             `git switch {name}`\n  git said: {e}",
            &commit[..12.min(commit.len())]
        );
    }
    if !json {
        output::ok(format!(
            "Job {short}'s change is commit {} on the new branch {name}, checked out",
            &commit[..12.min(commit.len())]
        ));
        for line in output::diffstat(&report.files) {
            output::line(line);
        }
        output::blank();
        output::line(format!("Review with: git show {name}"));
    }
    Ok(())
}

/// A commit subject from the spec's path: `specs/greeting/spec.md` → "Feature: greeting".
pub(crate) fn commit_subject(spec_path: &str) -> String {
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
