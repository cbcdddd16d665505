//! Where a follow-up starts (docs/follow-ups.md): its parent's base commit with the parent's
//! whole change applied. The base branch is pinned to that commit in the host's private
//! repository, so the diff (and a publish) are taken against it and a chain's change stays
//! one change from the original base.

use super::{GitError, HostGit};

impl HostGit {
    /// Makes the cloned workspace the chain's state: the job's branch at `base_commit`, the
    /// earlier job's `patch` applied to its files, `base_branch` pinned to that commit.
    pub async fn start_from(
        &self,
        base_branch: &str,
        base_commit: &str,
        patch: &[u8],
    ) -> Result<(), GitError> {
        let commit = self.resolve(base_commit).await.map_err(|_| {
            GitError::Start(format!(
                "the earlier job's base commit {base_commit} is no longer in {base_branch}; \
                 start a new job instead"
            ))
        })?;
        self.set_branch(base_branch, &commit).await?;
        self.git(
            &self.workspace,
            &["reset", "-q", "--hard", &commit],
            &[],
            &[],
        )
        .await?;
        if !patch.is_empty() {
            self.run_git(
                &self.workspace,
                &["apply", "--binary", "--whitespace=nowarn", "-"],
                &[],
                &[],
                Some(patch.to_vec()),
                &[0],
            )
            .await
            .map_err(|e| {
                GitError::Start(format!("the earlier job's change does not apply: {e}"))
            })?;
        }
        self.index_base(base_branch).await
    }
}
