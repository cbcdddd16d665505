//! Follow-ups (docs/follow-ups.md): a job that continues a finished one of the account's,
//! from its change. The request is made whole from the job it continues: that job's
//! repository, base branch and credential, and its spec with the feedback after it.

use ckrv_wit::types::{ErrorKind, JobCreate};

use crate::error::{AppError, invalid};
use crate::identity::extract::Session;
use crate::jobs::JobsState;
use crate::store::JobRow;

/// The heading the feedback goes under in a follow-up's spec.
pub const FEEDBACK_HEADING: &str = "## Feedback on the previous attempt";

/// `request` made whole when it continues a job, with that job; as it is otherwise.
pub(super) async fn continued(
    state: &JobsState,
    session: &Session,
    mut request: JobCreate,
) -> Result<(JobCreate, Option<JobRow>), AppError> {
    let Some(parent_id) = request.continues.clone() else {
        if request.feedback.is_some() {
            return Err(invalid(
                "feedback: it goes with `continues`, the job it is feedback on",
            ));
        }
        return Ok((request, None));
    };
    let parent = super::lookup::resolve(state, session, parent_id.trim()).await?;
    let short = &parent.job.id[..8.min(parent.job.id.len())];
    let conflict = |why: String| AppError::new(ErrorKind::Conflict, why);
    if parent.expired_at.is_some() {
        return Err(conflict(format!(
            "job {short}'s change expired under the retention rule; start a new job instead"
        )));
    }
    if !parent.job.change_is_pullable() || !parent.has_diff {
        return Err(conflict(format!(
            "job {short} is {} and has no uploaded change to continue from; a follow-up \
             continues a job that succeeded",
            parent.state
        )));
    }
    let Some(base) = parent
        .job
        .diff_stats
        .as_ref()
        .and_then(|stats| stats.base_commit.as_deref())
    else {
        return Err(conflict(format!(
            "job {short} records no base commit, so its change cannot be started from"
        )));
    };
    if base.is_empty() {
        return Err(conflict(format!(
            "job {short} records an empty base commit"
        )));
    }
    let repo = request.git_repo_url.trim();
    if !repo.is_empty() && repo != parent.job.git_repo_url {
        return Err(invalid(format!(
            "git_repo_url: a follow-up runs on its job's repository, {}; leave it out",
            parent.job.git_repo_url
        )));
    }
    request.git_repo_url = parent.job.git_repo_url.clone();
    if let Some(branch) = request.git_base_branch.as_deref()
        && branch.trim() != parent.job.git_base_branch
    {
        return Err(invalid(format!(
            "git_base_branch: a follow-up starts from its job's base, {}; leave it out",
            parent.job.git_base_branch
        )));
    }
    request.git_base_branch = Some(parent.job.git_base_branch.clone());
    if request.git_credential_name.is_none() {
        request.git_credential_name = parent.credential_name.clone();
    }
    match (
        request.feedback.take(),
        request.spec_content.trim().is_empty(),
    ) {
        (Some(feedback), true) if !feedback.trim().is_empty() => {
            request.spec_content = format!(
                "{}\n\n{FEEDBACK_HEADING} (job {short})\n\n{}\n",
                parent.spec.trim_end(),
                feedback.trim()
            );
        }
        (Some(_), true) => return Err(invalid("feedback is empty: say what to do next")),
        (Some(_), false) => {
            return Err(invalid(
                "a follow-up takes feedback or a spec_content of its own, not both",
            ));
        }
        (None, true) => {
            return Err(invalid(
                "a follow-up needs feedback (`ckrv run --cloud --continue ID --message TEXT`) or a spec",
            ));
        }
        (None, false) => {}
    }
    Ok((request, Some(parent)))
}
