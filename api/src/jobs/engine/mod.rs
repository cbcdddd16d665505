//! The job engine: the one place that moves jobs through their lives. Handlers, dispatchers and
//! the background reaper ask it to create, claim, advance, complete, cancel, fail, time out or
//! re-queue a job; it checks the move against the rules of the contract crate
//! (`JobState::can_become`), writes it with a guarded update (`store::lifecycle`), stops the
//! worker of a job that ended, and wakes the job's followers. Nothing else writes job state.

mod reaper;

pub use reaper::run_reaper;

use std::sync::Arc;
use std::time::Duration;

use ckrv_wit::types::{DiffStats, JobPhase, JobState, Publication, SetupSummary, Verification};
use tokio::sync::{Notify, mpsc};

use crate::clock;
use crate::dispatch::{Dispatcher, WorkerExit, WorkerStart};
use crate::identity::tokens::{self, duration_ms, hash_secret, new_secret};
use crate::jobs::events::JobEvents;
use crate::store::{Admission, Claimed, NewClaim, Pick, Store, StoreError, Transition};

/// How long workers hold jobs, how long jobs may run, and how many run at once.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// A worker that has not renewed its lease for this long is lost.
    pub lease: Duration,
    /// A job running longer than this (from its first start) ends `timeout`.
    pub job_timeout: Duration,
    /// Jobs beyond these limits wait `pending` (phase `queued`), first come first served.
    pub admission: Admission,
    /// A job's log keeps this many lines, then says it was truncated.
    pub max_log_lines: u64,
    /// How long a repository's setup (`.ckrv/environment.toml`) may run before its job fails.
    pub setup_timeout: Duration,
    /// How long a job's verification may run before it is stopped (the job goes on).
    pub verify_timeout: Duration,
    /// The largest snapshot of a setup a worker may save.
    pub max_snapshot_bytes: u64,
    /// What an account's snapshots may hold together; the least recently used go past it.
    pub account_snapshot_bytes: u64,
}

const MIB: u64 = 1024 * 1024;

/// How long a repository's setup, or a job's verification, may run unless the operator says
/// otherwise.
pub const DEFAULT_SETUP_TIMEOUT: Duration = Duration::from_secs(10 * 60);

impl Default for EngineSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let cores = u32::try_from(cores).unwrap_or(u32::MAX);
        Self {
            lease: Duration::from_secs(30),
            job_timeout: Duration::from_secs(60 * 60),
            setup_timeout: DEFAULT_SETUP_TIMEOUT,
            verify_timeout: DEFAULT_SETUP_TIMEOUT,
            max_snapshot_bytes: 2048 * MIB,
            account_snapshot_bytes: 10 * 1024 * MIB,
            admission: Admission {
                max_running: cores,
                max_running_per_account: cores,
            },
            max_log_lines: 100_000,
        }
    }
}

impl EngineSettings {
    /// How often a worker renews its lease: three chances before it lapses.
    pub fn heartbeat(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(100))
    }
}

/// A job a worker may now run: its claim and the token that proves it.
#[derive(Debug)]
pub struct Claim {
    pub job_id: String,
    pub generation: i64,
    pub token: String,
}

#[derive(Clone)]
pub struct JobEngine {
    store: Store,
    events: JobEvents,
    dispatcher: Arc<dyn Dispatcher>,
    settings: EngineSettings,
    /// Rung when a job ends and its slot may start another.
    slot_freed: Arc<Notify>,
}

impl JobEngine {
    /// The engine, and the task that fails jobs whose local worker ended without finishing
    /// them (reported on `exits`).
    pub fn new(
        store: Store,
        events: JobEvents,
        dispatcher: Arc<dyn Dispatcher>,
        settings: EngineSettings,
        exits: mpsc::UnboundedReceiver<WorkerExit>,
    ) -> Self {
        let engine = Self {
            store,
            events,
            dispatcher,
            settings,
            slot_freed: Arc::new(Notify::new()),
        };
        tokio::spawn(engine.clone().watch_exits(exits));
        engine
    }

    pub fn settings(&self) -> EngineSettings {
        self.settings
    }

    /// Whether this server starts workers for its jobs itself (locally or on Kubernetes), as
    /// the worker named [`tokens::SERVER_WORKER`]; if not, only external workers run jobs.
    pub fn starts_workers(&self) -> bool {
        self.dispatcher.starts_workers()
    }

    /// Claims for `worker`, under a new generation, the job `pick` names, with a token that
    /// acts on it until the job's deadline has long passed; `None` when there is none to claim.
    pub async fn claim(&self, pick: Pick<'_>, worker: &str) -> Result<Option<Claim>, StoreError> {
        self.claim_as(pick, worker, false).await
    }

    /// As [`JobEngine::claim`], for the external worker whose credential is named `worker`:
    /// nothing is claimed once that credential is removed (`ckrv-api workers remove`).
    pub async fn claim_external(
        &self,
        pick: Pick<'_>,
        worker: &str,
    ) -> Result<Option<Claim>, StoreError> {
        self.claim_as(pick, worker, true).await
    }

    async fn claim_as(
        &self,
        pick: Pick<'_>,
        worker: &str,
        external: bool,
    ) -> Result<Option<Claim>, StoreError> {
        let now = clock::now();
        let now_ms = clock::millis(now);
        let token = new_secret("ckrv_wt");
        let token_expires_ms = now_ms + duration_ms(self.settings.job_timeout * 2);
        let claimed = self
            .store
            .claim(
                pick,
                &NewClaim {
                    worker,
                    external,
                    token_hash: &hash_secret(&token),
                    model_token_hash: &hash_secret(&tokens::model_token(&token)),
                    token_expires_ms,
                    lease_until_ms: now_ms + duration_ms(self.settings.lease),
                    now_ms,
                    now: &clock::rfc3339(now),
                },
            )
            .await?;
        let Some(Claimed { job_id, generation }) = claimed else {
            return Ok(None);
        };
        tracing::info!(job_id, generation, worker, "job claimed");
        self.events.changed(&job_id);
        Ok(Some(Claim {
            job_id,
            generation,
            token,
        }))
    }

    /// Starts workers for waiting jobs, oldest first, as long as the admission limits let
    /// them start; returns each job started, with the reason if its worker could not start
    /// (that job has then failed). Nothing when workers elsewhere claim jobs themselves.
    pub async fn schedule(&self) -> Result<Vec<(String, Result<(), String>)>, StoreError> {
        let mut started = Vec::new();
        if !self.dispatcher.starts_workers() {
            return Ok(started);
        }
        let next = Pick::Next(self.settings.admission);
        while let Some(claim) = self.claim(next, tokens::SERVER_WORKER).await? {
            let outcome = self.start_worker(&claim).await?;
            started.push((claim.job_id, outcome));
        }
        Ok(started)
    }

    /// Hands a claimed job to the dispatcher; a job that cannot be started fails with the
    /// reason, which is also returned.
    async fn start_worker(&self, claim: &Claim) -> Result<Result<(), String>, StoreError> {
        let model_token = tokens::model_token(&claim.token);
        let start = WorkerStart {
            job_id: &claim.job_id,
            generation: claim.generation,
            token: &claim.token,
            model_token: &model_token,
        };
        match self.dispatcher.start(&start).await {
            Ok(()) => Ok(Ok(())),
            Err(e) => {
                let reason = format!("could not start a worker: {e}");
                tracing::error!(job_id = claim.job_id, error = %e, "dispatch failed");
                self.fail(&claim.job_id, Some(claim.generation), &reason)
                    .await?;
                Ok(Err(reason))
            }
        }
    }

    /// Schedules each time a job ends (and so may free a slot), until dropped.
    pub async fn run_scheduler(self) {
        loop {
            self.slot_freed.notified().await;
            if let Err(e) = self.schedule().await {
                tracing::error!(error = %e, "starting waiting jobs");
            }
        }
    }

    /// Renews the worker's lease; false when the job no longer runs under its claim (it was
    /// cancelled, timed out, or given to another worker), which tells the worker to stop.
    pub async fn heartbeat(&self, job_id: &str, generation: i64) -> Result<bool, StoreError> {
        let until = clock::millis(clock::now()) + duration_ms(self.settings.lease);
        self.store.renew_lease(job_id, generation, until).await
    }

    /// Records the phase the worker reports; false when the job does not run under its claim
    /// or the phase would go backwards.
    pub async fn phase(
        &self,
        job_id: &str,
        generation: i64,
        phase: JobPhase,
        agent: Option<&str>,
    ) -> Result<bool, StoreError> {
        let at = clock::now();
        let changed = self
            .store
            .set_phase(
                job_id,
                generation,
                phase,
                agent,
                clock::millis(at),
                &clock::rfc3339(at),
            )
            .await?;
        if !changed {
            return Ok(false);
        }
        self.events.changed(job_id);
        // The dispatcher acts before the worker hears back (on Kubernetes the pod's network
        // narrows before the agent starts); if it cannot, the job must not go on.
        if let Err(error) = self
            .dispatcher
            .phase_changed(job_id, generation, phase)
            .await
        {
            tracing::error!(job_id, %error, "the dispatcher could not follow the job's phase");
            self.fail(job_id, Some(generation), &error.to_string())
                .await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Work the dispatcher does while the server runs, if any.
    pub fn dispatcher_background(&self) -> Option<futures::future::BoxFuture<'static, ()>> {
        self.dispatcher.background()
    }

    /// Notes the uploaded diff's digest; false unless the job runs under the worker's claim.
    pub async fn attach_diff(
        &self,
        job_id: &str,
        generation: i64,
        sha256: &str,
    ) -> Result<bool, StoreError> {
        let now = clock::rfc3339(clock::now());
        self.store.set_diff(job_id, generation, sha256, &now).await
    }

    /// Records what the job changed; false unless the job runs under the worker's claim.
    pub async fn attach_result(
        &self,
        job_id: &str,
        generation: i64,
        stats: &DiffStats,
    ) -> Result<bool, StoreError> {
        let now = clock::rfc3339(clock::now());
        let changed = self
            .store
            .set_diff_stats(job_id, generation, stats, &now)
            .await?;
        Ok(self.followed(job_id, changed))
    }

    /// Tells the job's followers (`ckrv logs --follow`, event streams) when a worker's report
    /// changed it; says whether it did.
    fn followed(&self, job_id: &str, changed: bool) -> bool {
        if changed {
            self.events.changed(job_id);
        }
        changed
    }

    /// The worker's report of what the job's setup did; false unless the job runs under the
    /// worker's claim.
    pub async fn attach_setup(
        &self,
        job_id: &str,
        generation: i64,
        summary: &SetupSummary,
    ) -> Result<bool, StoreError> {
        let now = clock::rfc3339(clock::now());
        let changed = self
            .store
            .set_setup_summary(job_id, generation, summary, &now)
            .await?;
        Ok(self.followed(job_id, changed))
    }

    /// The worker's report of what the job's verification found; false unless the job runs
    /// under the worker's claim.
    pub async fn attach_verification(
        &self,
        job_id: &str,
        generation: i64,
        verification: &Verification,
    ) -> Result<bool, StoreError> {
        let now = clock::rfc3339(clock::now());
        let changed = self
            .store
            .set_verification(job_id, generation, verification, &now)
            .await?;
        if changed && verification.verified() == Some(true) {
            self.stop_the_other_attempts(job_id).await?;
        }
        Ok(self.followed(job_id, changed))
    }

    /// Once an attempt of a group that stops at the first verified one is verified, the
    /// group's other attempts still waiting or running are cancelled (docs/attempts.md).
    async fn stop_the_other_attempts(&self, job_id: &str) -> Result<(), StoreError> {
        let Some(group_id) = self
            .store
            .job(job_id)
            .await?
            .and_then(|row| row.job.group_id)
        else {
            return Ok(());
        };
        if !self
            .store
            .group(&group_id)
            .await?
            .is_some_and(|group| group.stop_at_first_verified)
        {
            return Ok(());
        }
        let reason = format!(
            "cancelled: attempt job {job_id} of its group was verified first (--stop-at-first-verified)"
        );
        for other in self.store.group_jobs(&group_id).await? {
            if other.job.id != job_id
                && self
                    .end(&other.job.id, None, JobState::Cancelled, Some(&reason))
                    .await?
            {
                tracing::info!(job_id = %other.job.id, group_id, "attempt stopped: another was verified first");
            }
        }
        Ok(())
    }

    /// Where the worker published the job's result; false unless the job runs under the
    /// worker's claim.
    pub async fn attach_publication(
        &self,
        job_id: &str,
        generation: i64,
        publication: &Publication,
    ) -> Result<bool, StoreError> {
        let now = clock::now();
        let changed = self
            .store
            .set_publication(
                job_id,
                generation,
                publication,
                clock::millis(now),
                &clock::rfc3339(now),
            )
            .await?;
        if changed {
            self.events.changed(job_id);
        }
        Ok(changed)
    }

    /// The worker's report of how the job ended (`succeeded` or `failed`).
    pub async fn complete(
        &self,
        job_id: &str,
        generation: i64,
        state: JobState,
        error_message: Option<&str>,
    ) -> Result<bool, StoreError> {
        debug_assert!(matches!(state, JobState::Succeeded | JobState::Failed));
        self.end(job_id, Some(generation), state, error_message)
            .await
    }

    /// The owner cancels the job, whatever it is doing.
    pub async fn cancel(&self, job_id: &str) -> Result<bool, StoreError> {
        self.end(
            job_id,
            None,
            JobState::Cancelled,
            Some("cancelled by the user"),
        )
        .await
    }

    /// The job cannot go on: its worker could not start, died, or was lost. With a generation,
    /// only if that claim is still the current one.
    pub async fn fail(
        &self,
        job_id: &str,
        generation: Option<i64>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.end(job_id, generation, JobState::Failed, Some(reason))
            .await
    }

    /// The job ran past its deadline; with a generation, only if that claim is still the
    /// current one.
    pub async fn time_out(
        &self,
        job_id: &str,
        generation: Option<i64>,
    ) -> Result<bool, StoreError> {
        let reason = format!(
            "the job ran longer than its {} deadline",
            humantime::format_duration(self.settings.job_timeout)
        );
        self.end(job_id, generation, JobState::Timeout, Some(&reason))
            .await
    }

    /// The worker holding `generation` was lost before the job got anywhere: the job waits for
    /// another worker, and is dispatched again.
    pub async fn requeue(&self, job_id: &str, generation: i64) -> Result<bool, StoreError> {
        let now = clock::now();
        let changed = self
            .store
            .transition(&Transition {
                job_id,
                to: JobState::Pending,
                generation: Some(generation),
                error_message: None,
                now_ms: clock::millis(now),
                now: &clock::rfc3339(now),
            })
            .await?;
        if changed {
            tracing::warn!(job_id, generation, "worker lost early; job queued again");
            self.dispatcher.stop(job_id).await;
            self.events.changed(job_id);
            self.slot_freed.notify_one();
        }
        Ok(changed)
    }

    async fn end(
        &self,
        job_id: &str,
        generation: Option<i64>,
        state: JobState,
        error_message: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = clock::now();
        let changed = self
            .store
            .transition(&Transition {
                job_id,
                to: state,
                generation,
                error_message,
                now_ms: clock::millis(now),
                now: &clock::rfc3339(now),
            })
            .await?;
        if changed {
            tracing::info!(job_id, %state, error = error_message, "job ended");
            self.dispatcher.stop(job_id).await;
            self.events.changed(job_id);
            self.slot_freed.notify_one();
        }
        Ok(changed)
    }

    async fn watch_exits(self, mut exits: mpsc::UnboundedReceiver<WorkerExit>) {
        while let Some(exit) = exits.recv().await {
            let ended = if exit.timed_out {
                self.time_out(&exit.job_id, Some(exit.generation)).await
            } else {
                self.fail(&exit.job_id, Some(exit.generation), &exit.reason)
                    .await
            };
            match ended {
                Ok(true) => tracing::warn!(
                    job_id = exit.job_id,
                    timed_out = exit.timed_out,
                    "{}",
                    exit.reason
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(job_id = exit.job_id, error = %e, "recording the worker's end");
                }
            }
        }
    }
}
