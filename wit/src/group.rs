//! How an attempt group's attempts rank (docs/attempts.md): by evidence, best first. The API
//! ranks them for `GET /v1/groups/{id}`, and `ckrv pull GROUP` applies the first.

use std::cmp::Ordering;

use crate::types::{Group, Job};

/// What decides between two attempts, in order.
struct Evidence {
    /// It has a change to pull.
    pullable: bool,
    /// Verified first, then not known, then failed.
    verified: u8,
    tests_passed: u32,
    /// Lines inserted and deleted: the smaller change wins a tie.
    lines: u64,
    cost_usd: f64,
    attempt: u32,
}

impl Evidence {
    fn of(job: &Job) -> Self {
        Self {
            pullable: job.change_is_pullable(),
            verified: match job.verified {
                Some(true) => 2,
                None => 1,
                Some(false) => 0,
            },
            tests_passed: job
                .verification
                .as_ref()
                .and_then(|v| v.tests.as_ref())
                .map_or(0, |t| t.passed),
            lines: job
                .diff_stats
                .as_ref()
                .map_or(0, |d| u64::from(d.insertions) + u64::from(d.deletions)),
            cost_usd: job.usage.as_ref().map_or(0.0, |u| u.cost_usd),
            attempt: job.attempt.unwrap_or(u32::MAX),
        }
    }

    /// Best first.
    fn order(&self, other: &Self) -> Ordering {
        other
            .pullable
            .cmp(&self.pullable)
            .then(other.verified.cmp(&self.verified))
            .then(other.tests_passed.cmp(&self.tests_passed))
            .then(self.lines.cmp(&other.lines))
            .then(self.cost_usd.total_cmp(&other.cost_usd))
            .then(self.attempt.cmp(&other.attempt))
    }
}

impl Group {
    /// The attempt the group names its winner, if it has one (and lists it).
    pub fn winning_job(&self) -> Option<&Job> {
        let winner = self.winner.as_deref()?;
        self.attempts.iter().find(|job| job.id == winner)
    }
}

/// Sorts a group's attempts best first.
pub fn rank(attempts: &mut [Job]) {
    attempts.sort_by(|a, b| Evidence::of(a).order(&Evidence::of(b)));
}

/// The winner of ranked attempts, if one has a change to pull, and why it won against the
/// runner-up, in words a person reads in `ckrv status`.
pub fn winner(ranked: &[Job]) -> Option<(&Job, String)> {
    let first = ranked.first().filter(|j| j.change_is_pullable())?;
    let best = Evidence::of(first);
    let Some(second) = ranked.get(1) else {
        return Some((first, "the only attempt".to_string()));
    };
    let next = Evidence::of(second);
    let other = format!("attempt {}", second.attempt.unwrap_or_default());
    let reason = if !next.pullable {
        format!("the only attempt with a change to pull yet ({other} has none)")
    } else if best.verified != next.verified {
        let theirs = match next.verified {
            1 => "was not verified",
            _ => "failed its check",
        };
        format!("verified by the project's check; {other} {theirs}")
    } else if best.tests_passed != next.tests_passed {
        format!(
            "more tests passed: {} against {}'s {}",
            best.tests_passed, other, next.tests_passed
        )
    } else if best.lines != next.lines {
        format!(
            "the smaller change: {} lines against {}'s {}",
            best.lines, other, next.lines
        )
    } else if best.cost_usd.total_cmp(&next.cost_usd) == Ordering::Less {
        format!(
            "cheaper: ${:.4} against {}'s ${:.4}",
            best.cost_usd, other, next.cost_usd
        )
    } else {
        format!("as good as {other}, and earlier")
    };
    Some((first, reason))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn attempt(n: u32, extra: serde_json::Value) -> Job {
        let mut job = serde_json::json!({
            "id": format!("job-{n}"), "status": "succeeded", "state": "succeeded",
            "git_repo_url": "http://127.0.0.1:1/r.git", "git_base_branch": "main",
            "created_at": "2026-12-07T00:00:00Z", "attempt": n,
            "diff_sha256": "ab", "diff_stats": {"files_changed": 1, "insertions": 5, "deletions": 1, "files": []},
        });
        for (k, v) in extra.as_object().unwrap() {
            job[k] = v.clone();
        }
        serde_json::from_value(job).unwrap()
    }

    fn verified(passed: u32) -> serde_json::Value {
        serde_json::json!({"verified": true, "verification": {"command": "t", "verdict": "passed",
            "duration_ms": 1, "last_lines": [], "tests": {"passed": passed, "failed": 0, "skipped": 0}}})
    }

    fn order(jobs: &mut [Job]) -> Vec<u32> {
        rank(jobs);
        jobs.iter().map(|j| j.attempt.unwrap()).collect()
    }

    #[test]
    fn evidence_ranks_attempts_verified_then_tests_then_size_then_cost() {
        let failed_check = serde_json::json!({"verified": false});
        let no_change = serde_json::json!({"state": "failed", "status": "failed",
                                           "diff_sha256": null, "diff_stats": null});
        let mut jobs = vec![
            attempt(1, failed_check),
            attempt(2, verified(3)),
            attempt(3, no_change),
            attempt(4, serde_json::json!({})),
            attempt(5, verified(7)),
        ];
        assert_eq!(order(&mut jobs), [5, 2, 4, 1, 3]);
        let (won, why) = winner(&jobs).unwrap();
        assert_eq!(won.attempt, Some(5));
        assert_eq!(why, "more tests passed: 7 against attempt 2's 3");

        let mut pair = vec![
            attempt(1, serde_json::json!({"verified": false})),
            attempt(2, verified(1)),
        ];
        rank(&mut pair);
        assert_eq!(
            winner(&pair).unwrap().1,
            "verified by the project's check; attempt 1 failed its check"
        );

        let small = serde_json::json!({"diff_stats": {"files_changed": 1, "insertions": 1, "deletions": 0, "files": []}});
        let mut sizes = vec![attempt(1, serde_json::json!({})), attempt(2, small)];
        assert_eq!(order(&mut sizes), [2, 1]);
        assert_eq!(
            winner(&sizes).unwrap().1,
            "the smaller change: 1 lines against attempt 1's 6"
        );

        let cheap = serde_json::json!({"usage": {"requests": 1, "input_tokens": 1,
                                                  "output_tokens": 1, "cost_usd": 0.01}});
        let dear = serde_json::json!({"usage": {"requests": 1, "input_tokens": 1,
                                                 "output_tokens": 1, "cost_usd": 0.5}});
        let mut costs = vec![attempt(1, dear), attempt(2, cheap)];
        assert_eq!(order(&mut costs), [2, 1]);
        assert!(winner(&costs).unwrap().1.starts_with("cheaper: $0.0100"));

        let mut ties = vec![
            attempt(2, serde_json::json!({})),
            attempt(1, serde_json::json!({})),
        ];
        assert_eq!(order(&mut ties), [1, 2]);
        assert_eq!(
            winner(&ties).unwrap().1,
            "as good as attempt 2, and earlier"
        );
    }

    #[test]
    fn no_winner_until_an_attempt_has_a_change() {
        let running = serde_json::json!({"state": "running", "status": "running",
                                         "diff_sha256": null, "diff_stats": null});
        let mut jobs = vec![attempt(1, running)];
        rank(&mut jobs);
        assert!(winner(&jobs).is_none());
        let mut one = vec![attempt(1, serde_json::json!({}))];
        assert_eq!(winner(&one).unwrap().1, "the only attempt");
        rank(&mut one);
    }

    #[test]
    fn the_winning_job_is_the_listed_attempt_the_group_names() {
        let mut group = Group {
            id: "g".into(),
            created_at: "2026-12-07T00:00:00Z".into(),
            stop_at_first_verified: false,
            attempts: vec![
                attempt(1, serde_json::json!({})),
                attempt(2, serde_json::json!({})),
            ],
            winner: Some("job-2".into()),
            reason: Some("smaller".into()),
        };
        assert_eq!(group.winning_job().and_then(|j| j.attempt), Some(2));
        group.winner = Some("job-9".into());
        assert!(group.winning_job().is_none(), "a winner it does not list");
        group.winner = None;
        assert!(group.winning_job().is_none());
    }
}
