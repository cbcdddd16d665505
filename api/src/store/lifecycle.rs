//! The writes that move a job through its life. Each is one guarded statement: it changes the
//! row only if the job is still in a state the move may start from (`JobState::sources_of`)
//! and, for a worker's write, only if the worker's claim is the current one (its generation).
//! The API's job engine decides which move to make; these statements make sure a race or a
//! stale worker cannot make a move the rules forbid.

use ckrv_wit::types::{DiffStats, JobPhase, JobState, Publication, SetupSummary, Verification};
use sqlx::Row;

use ckrv_wit::protocol::webhook_events;

use super::{Backend, Store, StoreError, webhooks};

/// A state change of a job.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub job_id: &'a str,
    pub to: JobState,
    /// The claim the change is made under, which must still hold a running job; `None` when
    /// the service itself decides (a user cancels, a deadline passes).
    pub generation: Option<i64>,
    pub error_message: Option<&'a str>,
    pub now_ms: i64,
    pub now: &'a str,
}

/// A worker's hold on a running job, as the lease reaper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub generation: i64,
    pub phase: JobPhase,
    pub attempts: i64,
    /// The external worker whose credential was removed while it held the job (its token is
    /// revoked), rather than a lease that lapsed.
    pub removed_worker: Option<String>,
}

/// The key of the PostgreSQL advisory lock that serializes admission claims.
const ADMISSION_LOCK: i64 = 0x0063_6b72_7661_646d; // "ckrvadm"

/// How many jobs may run at once: in all, and for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub max_running: u32,
    pub max_running_per_account: u32,
}

/// Which job a claim takes.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// This job, if it is pending.
    Job(&'a str),
    /// The oldest pending job the limits admit: first come, first served, but no account
    /// takes more than its share.
    Next(Admission),
}

/// A worker's claim on a pending job, about to be made.
#[derive(Debug, Clone)]
pub struct NewClaim<'a> {
    /// Which worker holds it (`local` for the API's own).
    pub worker: &'a str,
    /// An external worker, claiming with the credential of that name: the claim holds only
    /// while the credential exists.
    pub external: bool,
    /// The hash of the token the worker will act with.
    pub token_hash: &'a str,
    /// The hash of the model token its agent calls the model gateway with.
    pub model_token_hash: &'a str,
    pub token_expires_ms: i64,
    pub lease_until_ms: i64,
    pub now_ms: i64,
    pub now: &'a str,
}

/// A claim just made: the job, and the generation the worker acts under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub job_id: String,
    pub generation: i64,
}

/// The webhook event of a move to `to` (a job back in the queue is queued again).
fn event_of(to: JobState) -> &'static str {
    match to {
        JobState::Pending => webhook_events::QUEUED,
        JobState::Running => webhook_events::STARTED,
        JobState::Succeeded => webhook_events::SUCCEEDED,
        JobState::Failed => webhook_events::FAILED,
        JobState::Timeout => webhook_events::TIMEOUT,
        JobState::Cancelled => webhook_events::CANCELLED,
    }
}

/// `state IN ($first, …)` for the states a move to `to` may start from.
fn from_states(to: JobState, first: usize) -> (String, Vec<&'static str>) {
    let states: Vec<&'static str> = JobState::sources_of(to).map(JobState::as_str).collect();
    let placeholders: Vec<String> = (0..states.len())
        .map(|i| format!("${}", first + i))
        .collect();
    (format!("state IN ({})", placeholders.join(", ")), states)
}

impl Store {
    /// Moves a job to `t.to` if the rules allow it from its current state (and, for a worker,
    /// if its claim is current). Leaving `running` ends the lease and revokes the job's worker
    /// tokens in the same transaction. False when nothing changed.
    pub async fn transition(&self, t: &Transition<'_>) -> Result<bool, StoreError> {
        debug_assert!(
            t.to != JobState::Running,
            "a job starts running only by a claim"
        );
        let terminal = t.to.is_terminal();
        let phase = if terminal {
            JobPhase::Finished
        } else {
            JobPhase::Queued
        };
        let (guard, states) = from_states(t.to, 8);
        let fence = match t.generation {
            // A claim holds only while its job runs: once re-queued, the worker it was given to
            // (whose exit may still be on its way) can no longer end the job.
            Some(_) => format!(
                " AND state = 'running' AND lease_generation = ${}",
                8 + states.len()
            ),
            None => String::new(),
        };
        let sql = format!(
            "UPDATE jobs SET state = $1, phase = $2, error_message = COALESCE($3, error_message),
                             completed_at = $4, updated_at = $5, lease_expires_ms = NULL,
                             worker = CASE WHEN $6 = 1 THEN worker END
             WHERE id = $7 AND {guard}{fence}"
        );
        let mut query = sqlx::query(&sql)
            .bind(t.to.as_str())
            .bind(phase.as_str())
            .bind(t.error_message)
            .bind(terminal.then_some(t.now))
            .bind(t.now)
            .bind(i64::from(terminal))
            .bind(t.job_id);
        for state in states {
            query = query.bind(state);
        }
        if let Some(generation) = t.generation {
            query = query.bind(generation);
        }
        let mut tx = self.pool.begin().await?;
        let changed = query.execute(&mut *tx).await?.rows_affected() == 1;
        if changed {
            sqlx::query("UPDATE tokens SET revoked = 1 WHERE kind = 'worker' AND job_id = $1")
                .bind(t.job_id)
                .execute(&mut *tx)
                .await?;
            webhooks::enqueue_event(&mut tx, t.job_id, event_of(t.to), t.now_ms).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Claims a pending job for `worker`: the one `pick` names, or the oldest the admission
    /// limits let start. It turns running under a new generation with a lease until
    /// `lease_until_ms`, and the worker's token (by its hash) is stored with that generation,
    /// all at once. `None` when there is no such job (claimed by someone else, ended, or
    /// nothing admitted).
    pub async fn claim(
        &self,
        pick: Pick<'_>,
        c: &NewClaim<'_>,
    ) -> Result<Option<Claimed>, StoreError> {
        let (target, first_guard) = match pick {
            Pick::Job(_) => ("id = $6".to_owned(), 7),
            // One statement picks and claims, so that on SQLite (one writer at a time) no two
            // claims can both see the last free slot.
            Pick::Next(_) => (
                "id = (SELECT j.id FROM jobs j
                       WHERE j.state = 'pending'
                         AND (SELECT COUNT(*) FROM jobs r WHERE r.state = 'running') < $6
                         AND (SELECT COUNT(*) FROM jobs r
                              WHERE r.state = 'running' AND r.account_id = j.account_id) < $7
                       ORDER BY j.seq LIMIT 1)"
                    .to_owned(),
                8,
            ),
        };
        let (guard, states) = from_states(JobState::Running, first_guard);
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_generation = lease_generation + 1,
                             lease_expires_ms = $1, attempts = attempts + 1, worker = $2,
                             started_ms = COALESCE(started_ms, $3),
                             started_at = COALESCE(started_at, $4), updated_at = $5
             WHERE {target} AND {guard}
             RETURNING id, lease_generation"
        );
        let mut query = sqlx::query(&sql)
            .bind(c.lease_until_ms)
            .bind(c.worker)
            .bind(c.now_ms)
            .bind(c.now)
            .bind(c.now);
        query = match pick {
            Pick::Job(job_id) => query.bind(job_id),
            Pick::Next(limits) => query
                .bind(i64::from(limits.max_running))
                .bind(i64::from(limits.max_running_per_account)),
        };
        for state in states {
            query = query.bind(state);
        }
        let mut tx = self.pool.begin().await?;
        if matches!(pick, Pick::Next(_)) && self.backend == Backend::Postgres {
            // PostgreSQL runs claims side by side, each counting the running jobs in its own
            // snapshot: one lock, held to commit, puts admission claims in a line.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ADMISSION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        if c.external {
            // Writing the credential's row holds it to commit: `workers remove` either comes
            // first (and there is nothing to hold, so no claim) or waits, then revokes the
            // token this claim stores.
            let held =
                sqlx::query("UPDATE worker_credentials SET last_claim_ms = $1 WHERE name = $2")
                    .bind(c.now_ms)
                    .bind(c.worker)
                    .execute(&mut *tx)
                    .await?;
            if held.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let job_id: String = row.try_get("id")?;
        let generation: i64 = row.try_get("lease_generation")?;
        sqlx::query(
            "INSERT INTO tokens (token_hash, kind, job_id, lease_generation, created_ms, expires_ms)
             VALUES ($1, 'worker', $2, $3, $4, $5)",
        )
        .bind(c.token_hash)
        .bind(&job_id)
        .bind(generation)
        .bind(c.now_ms)
        .bind(c.token_expires_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO model_tokens (token_hash, job_id, lease_generation) VALUES ($1, $2, $3)",
        )
        .bind(c.model_token_hash)
        .bind(&job_id)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        webhooks::enqueue_event(&mut tx, &job_id, webhook_events::STARTED, c.now_ms).await?;
        tx.commit().await?;
        Ok(Some(Claimed { job_id, generation }))
    }

    /// Extends the lease of a running job held under `generation`; false when the job is no
    /// longer running under that claim.
    pub async fn renew_lease(
        &self,
        job_id: &str,
        generation: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_ms = $1
             WHERE id = $2 AND state = 'running' AND lease_generation = $3",
        )
        .bind(lease_until_ms)
        .bind(job_id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives every running job a lease until at least `lease_until_ms`: after the API itself was
    /// down, its workers could not renew, so each gets a full lease to check in again.
    pub async fn extend_all_leases(&self, lease_until_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_ms = $1
             WHERE state = 'running' AND (lease_expires_ms IS NULL OR lease_expires_ms < $2)
               AND lease_generation > 0",
        )
        .bind(lease_until_ms)
        .bind(lease_until_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Running jobs whose lease ended before `now_ms` (or that never had one), and those whose
    /// worker's token was revoked while they run: only removing an external worker does that
    /// (a job's own end revokes its tokens as it leaves `running`), so its jobs are lost at
    /// once, on whichever replica looks first.
    pub async fn lapsed_leases(&self, now_ms: i64) -> Result<Vec<Lease>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.id, j.lease_generation, j.phase, j.attempts, j.worker,
                    CASE WHEN EXISTS (SELECT 1 FROM tokens t
                                      WHERE t.job_id = j.id AND t.lease_generation = j.lease_generation
                                        AND t.kind = 'worker' AND t.revoked = 1)
                         THEN 1 ELSE 0 END AS revoked
             FROM jobs j
             WHERE j.state = 'running'
               AND (j.lease_expires_ms IS NULL OR j.lease_expires_ms < $1
                    OR EXISTS (SELECT 1 FROM tokens t
                               WHERE t.job_id = j.id AND t.lease_generation = j.lease_generation
                                 AND t.kind = 'worker' AND t.revoked = 1))
             ORDER BY j.seq",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let worker: Option<String> = row.try_get("worker")?;
                let revoked = row.try_get::<i64, _>("revoked")? != 0;
                Ok(Lease {
                    job_id: row.try_get("id")?,
                    generation: row.try_get("lease_generation")?,
                    phase: super::parse_enum("phase", row.try_get("phase")?)?,
                    attempts: row.try_get("attempts")?,
                    removed_worker: worker.filter(|_| revoked),
                })
            })
            .collect()
    }

    /// Running jobs first started before `started_before_ms`: past their deadline.
    pub async fn overdue_jobs(&self, started_before_ms: i64) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND started_ms < $1 ORDER BY seq",
        )
        .bind(started_before_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Records the phase a worker reports, if the job runs under its claim and the phase may
    /// follow the current one; false otherwise.
    pub async fn set_phase(
        &self,
        job_id: &str,
        generation: i64,
        phase: JobPhase,
        agent: Option<&str>,
        now_ms: i64,
        now: &str,
    ) -> Result<bool, StoreError> {
        let before: Vec<&'static str> = JobPhase::ALL
            .into_iter()
            .filter(|p| p.can_become(phase))
            .map(JobPhase::as_str)
            .collect();
        if before.is_empty() {
            return Ok(false);
        }
        let placeholders: Vec<String> = (0..before.len()).map(|i| format!("${}", i + 6)).collect();
        let sql = format!(
            "UPDATE jobs SET phase = $1, agent = COALESCE($2, agent), updated_at = $3
             WHERE id = $4 AND state = 'running' AND lease_generation = $5
               AND phase IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql)
            .bind(phase.as_str())
            .bind(agent)
            .bind(now)
            .bind(job_id)
            .bind(generation);
        for phase in before {
            query = query.bind(phase);
        }
        let mut tx = self.pool.begin().await?;
        let changed = query.execute(&mut *tx).await?.rows_affected() == 1;
        if changed {
            webhooks::enqueue_event(&mut tx, job_id, webhook_events::PHASE, now_ms).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Records the egress policy the job's setup runs under; false unless the job runs under
    /// the worker's claim.
    pub async fn set_setup_egress(
        &self,
        job_id: &str,
        generation: i64,
        policy: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE jobs SET setup_egress = $1
             WHERE id = $2 AND state = 'running' AND lease_generation = $3",
        )
        .bind(policy)
        .bind(job_id)
        .bind(generation)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Records what the job changed; false unless it runs under the worker's claim.
    pub async fn set_diff_stats(
        &self,
        job_id: &str,
        generation: i64,
        stats: &DiffStats,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.update_claimed_json(
            "diff_stats_json = $1",
            "diff stats",
            stats,
            job_id,
            generation,
            now,
        )
        .await
    }

    /// Notes what the job's setup did; false unless the job runs under the worker's claim.
    pub async fn set_setup_summary(
        &self,
        job_id: &str,
        generation: i64,
        summary: &SetupSummary,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.update_claimed_json(
            "setup_json = $1",
            "setup summary",
            summary,
            job_id,
            generation,
            now,
        )
        .await
    }

    /// Notes what the job's verification found; false unless the job runs under the worker's
    /// claim.
    pub async fn set_verification(
        &self,
        job_id: &str,
        generation: i64,
        verification: &Verification,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.update_claimed_json(
            "verification_json = $1",
            "verification",
            verification,
            job_id,
            generation,
            now,
        )
        .await
    }

    /// Stores `value` as JSON by `assignment` (`column = $1`; `what` names it in an error);
    /// false unless the job runs under the worker's claim.
    async fn update_claimed_json(
        &self,
        assignment: &'static str,
        what: &str,
        value: &impl serde::Serialize,
        job_id: &str,
        generation: i64,
        now: &str,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(value)
            .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
        self.update_claimed(assignment, &json, job_id, generation, now)
            .await
    }

    /// Records where the job's result was published, with its `job.published` event in the
    /// same transaction; false unless the job runs under the worker's claim.
    pub async fn set_publication(
        &self,
        job_id: &str,
        generation: i64,
        publication: &Publication,
        now_ms: i64,
        now: &str,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(publication)
            .map_err(|e| StoreError::Corrupt(format!("publication: {e}")))?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE jobs SET publication_json = $1, updated_at = $2
             WHERE id = $3 AND state = 'running' AND lease_generation = $4",
        )
        .bind(&json)
        .bind(now)
        .bind(job_id)
        .bind(generation)
        .execute(&mut *tx)
        .await?;
        let changed = done.rows_affected() == 1;
        if changed {
            webhooks::enqueue_event(&mut tx, job_id, webhook_events::PUBLISHED, now_ms).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Notes that the job's diff, of this SHA-256, is in the artifact store; false unless the
    /// job runs under the worker's claim.
    pub async fn set_diff(
        &self,
        job_id: &str,
        generation: i64,
        sha256: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.update_claimed(
            "has_diff = 1, diff_sha256 = $1",
            sha256,
            job_id,
            generation,
            now,
        )
        .await
    }

    /// Applies `assignments` (which take `value` as `$1`) to a job that runs under the
    /// worker's claim; false otherwise.
    async fn update_claimed(
        &self,
        assignments: &'static str,
        value: &str,
        job_id: &str,
        generation: i64,
        now: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE jobs SET {assignments}, updated_at = $2
             WHERE id = $3 AND state = 'running' AND lease_generation = $4"
        );
        let done = sqlx::query(&sql)
            .bind(value)
            .bind(now)
            .bind(job_id)
            .bind(generation)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Random sequences of every lifecycle write, from the service and from current and stale
/// workers, against a real database (SQLite, or PostgreSQL under `CKRV_TEST_POSTGRES`): after
/// each write the row must be what the contract's rules say, and the invariants no rule may
/// break must hold.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{NewAccount, NewJob, TokenKind, TokenOwner};
    use ckrv_test_support::TestDatabase;
    use ckrv_wit::types::SubscriptionTier;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    /// Who makes a write: the service itself, the worker holding the current claim, or one
    /// whose claim was superseded.
    #[derive(Debug, Clone, Copy)]
    enum Writer {
        Service,
        Current,
        Stale,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Claim,
        Move(JobState, Writer),
        Phase(JobPhase, Writer),
        Renew(Writer),
        Diff(Writer),
    }

    fn writer() -> impl Strategy<Value = Writer> {
        prop_oneof![
            Just(Writer::Service),
            Just(Writer::Current),
            Just(Writer::Stale)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let state = proptest::sample::select(
            JobState::ALL
                .into_iter()
                .filter(|s| *s != JobState::Running)
                .collect::<Vec<_>>(),
        );
        let phase = proptest::sample::select(JobPhase::ALL.to_vec());
        prop_oneof![
            3 => Just(Op::Claim),
            3 => (state, writer()).prop_map(|(s, w)| Op::Move(s, w)),
            3 => (phase, writer()).prop_map(|(p, w)| Op::Phase(p, w)),
            1 => writer().prop_map(Op::Renew),
            1 => writer().prop_map(Op::Diff),
        ]
    }

    /// What the rules say the job is.
    #[derive(Debug)]
    struct Model {
        state: JobState,
        phase: JobPhase,
        generation: i64,
        /// Every worker token issued, with its generation.
        tokens: Vec<(String, i64)>,
    }

    impl Model {
        /// The generation a writer acts under; `None` for the service.
        fn fence(&self, writer: Writer) -> Option<i64> {
            match writer {
                Writer::Service => None,
                Writer::Current => Some(self.generation),
                Writer::Stale => Some(self.generation - 1),
            }
        }

        fn holds(&self, writer: Writer) -> bool {
            matches!(writer, Writer::Current) && self.state == JobState::Running
        }
    }

    async fn run(store: &Store, account: &str, case: usize, ops: &[Op]) -> Result<(), String> {
        let job_id = format!("job-{case}");
        store
            .insert_job_within_quota(
                &NewJob {
                    id: &job_id,
                    account_id: account,
                    spec: "spec",
                    spec_path: None,
                    git_repo_url: "https://localhost/r.git",
                    git_base_branch: "main",
                    git_credential_name: None,
                    feature_branch_name: "ckrv/x",
                    created_ms: 0,
                    created_at: "2026-11-23T00:00:00Z",
                    idempotency_key: None,
                    no_snapshot: false,
                    publish: ckrv_wit::types::PublishMode::None,
                    parent_id: None,
                    group: None,
                },
                u32::MAX,
                0,
            )
            .await
            .unwrap()
            .unwrap();
        let mut model = Model {
            state: JobState::Pending,
            phase: JobPhase::Queued,
            generation: 0,
            tokens: Vec::new(),
        };
        for (step, op) in ops.iter().enumerate() {
            let now = "2026-11-23T00:00:01Z";
            let changed = match op {
                Op::Claim => {
                    let token = format!("{job_id}-{step}");
                    let claimed = store
                        .claim(
                            Pick::Job(&job_id),
                            &NewClaim {
                                worker: "w",
                                external: false,
                                token_hash: &token,
                                model_token_hash: &format!("model-{token}"),
                                token_expires_ms: i64::MAX,
                                lease_until_ms: 10_000,
                                now_ms: 1,
                                now,
                            },
                        )
                        .await
                        .unwrap();
                    let expected = model.state.can_become(JobState::Running);
                    if expected {
                        model.generation += 1;
                        model.state = JobState::Running;
                        model.tokens.push((token, model.generation));
                        let made = Claimed {
                            job_id: job_id.clone(),
                            generation: model.generation,
                        };
                        if claimed != Some(made) {
                            return Err(format!("{op:?}: claimed {claimed:?}"));
                        }
                    } else if claimed.is_some() {
                        return Err(format!("{op:?}: claimed a {} job", model.state));
                    }
                    expected == claimed.is_some()
                }
                Op::Move(to, writer) => {
                    let changed = store
                        .transition(&Transition {
                            job_id: &job_id,
                            to: *to,
                            generation: model.fence(*writer),
                            // As the engine does: a reason only for an end.
                            error_message: to.is_terminal().then_some("why"),
                            now_ms: 2,
                            now,
                        })
                        .await
                        .unwrap();
                    let allowed = match writer {
                        Writer::Service => true,
                        Writer::Current => model.state == JobState::Running,
                        Writer::Stale => false,
                    };
                    let expected = model.state.can_become(*to) && allowed;
                    if expected {
                        model.state = *to;
                        model.phase = if to.is_terminal() {
                            JobPhase::Finished
                        } else {
                            JobPhase::Queued
                        };
                    }
                    expected == changed
                }
                Op::Phase(phase, writer) => {
                    let Some(generation) = model.fence(*writer) else {
                        continue;
                    };
                    let changed = store
                        .set_phase(&job_id, generation, *phase, None, 0, now)
                        .await
                        .unwrap();
                    let expected = model.holds(*writer) && model.phase.can_become(*phase);
                    if expected {
                        model.phase = *phase;
                    }
                    expected == changed
                }
                Op::Renew(writer) => {
                    let Some(generation) = model.fence(*writer) else {
                        continue;
                    };
                    let changed = store
                        .renew_lease(&job_id, generation, 20_000)
                        .await
                        .unwrap();
                    model.holds(*writer) == changed
                }
                Op::Diff(writer) => {
                    let Some(generation) = model.fence(*writer) else {
                        continue;
                    };
                    let changed = store
                        .set_diff(&job_id, generation, "0".repeat(64).as_str(), now)
                        .await
                        .unwrap();
                    model.holds(*writer) == changed
                }
            };
            if !changed {
                return Err(format!(
                    "step {step} {op:?}: the store disagreed with {model:?}"
                ));
            }
            check(store, &job_id, &model)
                .await
                .map_err(|e| format!("after step {step} {op:?}: {e}"))?;
        }
        Ok(())
    }

    /// The row matches the model, and the invariants hold.
    async fn check(store: &Store, job_id: &str, model: &Model) -> Result<(), String> {
        let row = store.job(job_id).await.unwrap().unwrap();
        let lease: Option<i64> =
            sqlx::query_scalar("SELECT lease_expires_ms FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_one(&store.pool)
                .await
                .unwrap();
        let running = row.state == JobState::Running;
        let terminal = row.state.is_terminal();
        let facts = [
            (row.state == model.state, "state as the rules say"),
            (row.job.phase == Some(model.phase), "phase as the rules say"),
            (
                row.generation == model.generation,
                "one generation per claim",
            ),
            (
                row.job.completed_at.is_some() == terminal,
                "completed_at iff terminal",
            ),
            (
                (row.job.phase == Some(JobPhase::Finished)) == terminal,
                "finished iff terminal",
            ),
            (lease.is_some() == running, "a lease iff running"),
            (
                row.job.error_message.is_some() == terminal,
                "an error only once ended",
            ),
        ];
        if let Some((_, what)) = facts.iter().find(|(holds, _)| !holds) {
            return Err(format!("{what}: {row:?} vs {model:?}"));
        }
        for (token, generation) in &model.tokens {
            let owner = store
                .token_owner(token, &[TokenKind::Worker], 3)
                .await
                .unwrap();
            let live = running && *generation == model.generation;
            let expected = live.then(|| TokenOwner::Worker {
                job_id: job_id.to_owned(),
                generation: *generation,
            });
            if owner != expected {
                return Err(format!(
                    "token of generation {generation}: {owner:?}, expected {expected:?}"
                ));
            }
        }
        Ok(())
    }

    #[test]
    fn every_write_follows_the_rules_and_keeps_the_invariants() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (store, account, _database) = runtime.block_on(async {
            let database = TestDatabase::new(dir.path()).await;
            let store = Store::open(&crate::store::Database::from_url(database.url()).unwrap())
                .await
                .unwrap();
            let account = store
                .create_account(&NewAccount {
                    email: "prop@example.com",
                    name: "prop",
                    tier: SubscriptionTier::Enterprise,
                    is_admin: false,
                    password_hash: None,
                })
                .await
                .unwrap()
                .unwrap();
            (store, account.id, database)
        });
        let mut runner = TestRunner::new(Config {
            cases: 96,
            ..Config::default()
        });
        let case = std::sync::atomic::AtomicUsize::new(0);
        let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime
                .block_on(run(&store, &account, n, &ops))
                .map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
