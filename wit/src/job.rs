//! Behaviour of the job models, defined once: which moves a job may make, how a state reads in
//! the contract's terms, and how a diff is summed up in one line.

use crate::types::{
    DiffStats, Job, JobPhase, JobState, JobStatus, PublishMode, ResultStatus, Verdict, Verification,
};

impl JobState {
    /// Whether a job in this state may move to `next`. The API's job engine writes no state
    /// change this refuses. A pending job is claimed by a worker, or ends before any worker ran
    /// it (cancelled, past its deadline, or impossible to dispatch); a running job ends, or goes
    /// back to waiting when its worker was lost before the job got anywhere. Terminal states
    /// are final.
    pub const fn can_become(self, next: Self) -> bool {
        match self {
            Self::Pending => matches!(
                next,
                Self::Running | Self::Failed | Self::Timeout | Self::Cancelled
            ),
            Self::Running => !matches!(next, Self::Running),
            Self::Succeeded | Self::Failed | Self::Timeout | Self::Cancelled => false,
        }
    }

    /// The states from which a job may move to `next`: the guard of the engine's update.
    pub fn sources_of(next: Self) -> impl Iterator<Item = Self> {
        Self::ALL.into_iter().filter(move |s| s.can_become(next))
    }

    /// A terminal job never changes again.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Timeout | Self::Cancelled
        )
    }

    /// The contract's `status`, which has no `cancelled`: a cancelled job did not succeed and
    /// never will, so a client that knows only the contract sees it `failed`.
    pub const fn status(self) -> JobStatus {
        match self {
            Self::Pending => JobStatus::Pending,
            Self::Running => JobStatus::Running,
            Self::Succeeded => JobStatus::Succeeded,
            Self::Failed | Self::Cancelled => JobStatus::Failed,
            Self::Timeout => JobStatus::Timeout,
        }
    }

    /// The contract's `result_status`: how the job ended, once it has.
    pub const fn result_status(self) -> Option<ResultStatus> {
        match self {
            Self::Pending | Self::Running => None,
            Self::Succeeded => Some(ResultStatus::Succeeded),
            Self::Failed | Self::Cancelled => Some(ResultStatus::Failed),
            Self::Timeout => Some(ResultStatus::Timeout),
        }
    }

    /// The states a contract `status` filter selects.
    pub fn with_status(status: JobStatus) -> impl Iterator<Item = Self> {
        Self::ALL.into_iter().filter(move |s| s.status() == status)
    }
}

impl JobPhase {
    /// Where the phase falls in a job's life, for ordering.
    const fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Cloning => 1,
            Self::Setup => 2,
            Self::Agent => 3,
            Self::Diffing => 4,
            Self::Verifying => 5,
            Self::Uploading => 6,
            Self::Publishing => 7,
            Self::Finished => 8,
        }
    }

    /// Whether a running job's worker may report `next` after this phase: forward or the same
    /// (a pipeline may run several steps in one phase), never back to `queued`, and never
    /// `finished`, which only the job's end sets.
    pub const fn can_become(self, next: Self) -> bool {
        !matches!(next, Self::Queued | Self::Finished) && next.rank() >= self.rank()
    }

    /// Whether a worker lost in this phase may be replaced by another: nothing of the job's
    /// result exists yet, so running it again changes nothing anyone saw.
    pub const fn is_restartable(self) -> bool {
        self.rank() <= Self::Cloning.rank()
    }
}

impl PublishMode {
    /// A mode as people write it (`--publish`, a spec's `publish:`): the JSON name, or with
    /// `-` for `_` (`draft-pr`).
    pub fn parse(text: &str) -> Result<Self, String> {
        text.trim().replace('-', "_").parse().map_err(|_| {
            format!(
                "`{text}` is not a way to publish; use one of {}",
                Self::ALL.map(Self::as_str).join(", ")
            )
        })
    }

    /// Whether the job's result leaves the API at all.
    pub const fn publishes(self) -> bool {
        !matches!(self, Self::None)
    }

    /// Whether a pull request is opened.
    pub const fn opens_pull_request(self) -> bool {
        matches!(self, Self::Pr | Self::DraftPr)
    }
}

impl Verification {
    /// Whether the check passed: `None` when it could not run, which says nothing of the change.
    pub const fn verified(&self) -> Option<bool> {
        match self.verdict {
            Verdict::Passed => Some(true),
            Verdict::Failed | Verdict::TimedOut => Some(false),
            Verdict::NotRun => None,
        }
    }

    /// One line on what the check found, as the job's log and `ckrv status` say it:
    /// `` `cargo test` passed in 12.3 s (41 passed, 0 failed, 2 skipped)``, `` `…` failed: exit
    /// status 101 in 3.2 s``, `` `…` timed out after 600.0 s``, `` `…` not run; why``.
    pub fn line(&self) -> String {
        let seconds = self.duration_ms as f64 / 1000.0;
        let tests = self.tests.as_ref().map_or(String::new(), |t| {
            format!(
                " ({} passed, {} failed, {} skipped)",
                t.passed, t.failed, t.skipped
            )
        });
        let note = self
            .note
            .as_deref()
            .map_or(String::new(), |n| format!("; {n}"));
        let command = &self.command;
        match (self.verdict, self.exit_code) {
            (Verdict::Passed, _) => format!("`{command}` passed in {seconds:.1} s{tests}{note}"),
            (Verdict::Failed, Some(code)) => {
                format!("`{command}` failed: exit status {code} in {seconds:.1} s{tests}{note}")
            }
            (Verdict::Failed, None) => format!("`{command}` failed in {seconds:.1} s{tests}{note}"),
            (Verdict::TimedOut, _) => format!("`{command}` timed out after {seconds:.1} s{note}"),
            (Verdict::NotRun, _) => format!("`{command}` not run{note}"),
        }
    }
}

impl JobStatus {
    /// The state a contract status stands for, read from a server that sends no `state`
    /// (`failed` may have been a cancellation; the contract cannot say).
    pub const fn state(self) -> JobState {
        match self {
            Self::Pending => JobState::Pending,
            Self::Running => JobState::Running,
            Self::Succeeded => JobState::Succeeded,
            Self::Failed => JobState::Failed,
            Self::Timeout => JobState::Timeout,
        }
    }
}

impl Job {
    /// The job's full state: the `state` extension when the server sent it, else what the
    /// contract's `status` says.
    pub fn lifecycle(&self) -> JobState {
        self.state.unwrap_or_else(|| self.status.state())
    }

    /// Whether the job's change can be pulled: it succeeded, or it failed after its worker
    /// had uploaded the whole change (a later step failed, such as `publish` refused by the
    /// forge), so the change is as complete as a success's.
    pub fn change_is_pullable(&self) -> bool {
        match self.lifecycle() {
            JobState::Succeeded => true,
            JobState::Failed => self.diff_stats.is_some() && self.diff_sha256.is_some(),
            _ => false,
        }
    }
}

impl DiffStats {
    /// `2 files changed, 13 insertions(+), 1 deletion(-)`, as `git diff --shortstat` says it.
    pub fn summary_line(&self) -> String {
        let plural =
            |n: u32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        if self.files_changed == 0 {
            return "no changes".to_string();
        }
        let mut line = plural(self.files_changed, "file changed", "files changed");
        if self.insertions > 0 {
            line.push_str(&format!(
                ", {}",
                plural(self.insertions, "insertion(+)", "insertions(+)")
            ));
        }
        if self.deletions > 0 {
            line.push_str(&format!(
                ", {}",
                plural(self.deletions, "deletion(-)", "deletions(-)")
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verification(verdict: Verdict) -> Verification {
        Verification {
            command: "cargo test".into(),
            verdict,
            exit_code: None,
            duration_ms: 12_345,
            last_lines: Vec::new(),
            tests: None,
            note: None,
        }
    }

    #[test]
    fn a_verification_says_what_happened_and_why_in_one_line() {
        let mut passed = verification(Verdict::Passed);
        passed.tests = Some(crate::types::TestCounts {
            passed: 41,
            failed: 0,
            skipped: 2,
        });
        assert_eq!(
            passed.line(),
            "`cargo test` passed in 12.3 s (41 passed, 0 failed, 2 skipped)"
        );
        assert_eq!(passed.verified(), Some(true));
        let mut failed = verification(Verdict::Failed);
        failed.exit_code = Some(101);
        assert_eq!(
            failed.line(),
            "`cargo test` failed: exit status 101 in 12.3 s"
        );
        assert_eq!(failed.verified(), Some(false));
        let mut not_run = verification(Verdict::NotRun);
        not_run.note = Some("no sandbox".into());
        assert_eq!(not_run.line(), "`cargo test` not run; no sandbox");
        assert_eq!(not_run.verified(), None);
        let timed_out = verification(Verdict::TimedOut);
        assert_eq!(timed_out.line(), "`cargo test` timed out after 12.3 s");
        assert_eq!(timed_out.verified(), Some(false));
    }

    #[test]
    fn every_state_reads_as_a_contract_status_and_terminal_states_have_a_result() {
        for state in JobState::ALL {
            let status = state.status();
            assert_eq!(
                state.result_status().is_some(),
                state.is_terminal(),
                "{state}"
            );
            if state != JobState::Cancelled {
                assert_eq!(status.state(), state, "{state} round-trips");
                assert_eq!(status.as_str(), state.as_str());
            }
        }
        assert_eq!(JobState::Cancelled.status(), JobStatus::Failed);
        assert_eq!(
            JobState::Cancelled.result_status(),
            Some(ResultStatus::Failed)
        );
        let failed: Vec<JobState> = JobState::with_status(JobStatus::Failed).collect();
        assert_eq!(failed, [JobState::Failed, JobState::Cancelled]);
    }

    #[test]
    fn terminal_states_are_final_and_every_live_state_can_end() {
        for state in JobState::ALL {
            for next in JobState::ALL {
                if state.is_terminal() {
                    assert!(!state.can_become(next), "{state} -> {next}");
                }
            }
            if !state.is_terminal() {
                for end in [JobState::Failed, JobState::Timeout, JobState::Cancelled] {
                    assert!(state.can_become(end), "{state} -> {end}");
                }
            }
            assert!(!state.can_become(state), "{state} -> itself");
        }
        // Only a running job succeeds: success needs a worker.
        let to_success: Vec<JobState> = JobState::sources_of(JobState::Succeeded).collect();
        assert_eq!(to_success, [JobState::Running]);
        assert!(JobState::Running.can_become(JobState::Pending));
    }

    #[test]
    fn phases_only_move_forward_and_finished_is_set_by_the_end() {
        assert!(JobPhase::Cloning.can_become(JobPhase::Agent));
        assert!(JobPhase::Cloning.can_become(JobPhase::Setup));
        assert!(JobPhase::Setup.can_become(JobPhase::Agent));
        assert!(!JobPhase::Agent.can_become(JobPhase::Setup));
        assert!(!JobPhase::Setup.is_restartable());
        assert!(JobPhase::Agent.can_become(JobPhase::Agent));
        assert!(!JobPhase::Diffing.can_become(JobPhase::Cloning));
        assert!(!JobPhase::Uploading.can_become(JobPhase::Finished));
        assert!(!JobPhase::Cloning.can_become(JobPhase::Queued));
        assert!(JobPhase::Queued.is_restartable() && JobPhase::Cloning.is_restartable());
        assert!(!JobPhase::Agent.is_restartable());
    }

    #[test]
    fn summary_lines_read_like_git_shortstat() {
        let stats = |files, insertions, deletions| DiffStats {
            files_changed: files,
            insertions,
            deletions,
            files: Vec::new(),
            base_commit: None,
        };
        assert_eq!(stats(0, 0, 0).summary_line(), "no changes");
        assert_eq!(
            stats(1, 1, 0).summary_line(),
            "1 file changed, 1 insertion(+)"
        );
        assert_eq!(
            stats(3, 241, 2).summary_line(),
            "3 files changed, 241 insertions(+), 2 deletions(-)"
        );
        assert_eq!(
            stats(1, 0, 1).summary_line(),
            "1 file changed, 1 deletion(-)"
        );
    }
}
