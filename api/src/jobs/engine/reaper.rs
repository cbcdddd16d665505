//! What the engine does on its own: on start, give surviving workers time to check in and
//! dispatch what waits; then, every fraction of a lease, end or re-queue jobs whose worker
//! stopped renewing its lease or was removed by an operator, and time out jobs past their
//! deadline.

use std::time::Duration;

use super::JobEngine;
use crate::clock;
use crate::identity::tokens::duration_ms;
use crate::store::StoreError;

/// At most this many lost early workers per job before it fails instead of waiting again.
const MAX_ATTEMPTS: i64 = 2;

impl JobEngine {
    /// After a start: running jobs get a full lease (their workers could not renew while this
    /// API was down), and pending jobs are dispatched.
    pub async fn reconcile(&self) -> Result<(), StoreError> {
        let until = clock::millis(clock::now()) + duration_ms(self.settings.lease);
        let extended = self.store.extend_all_leases(until).await?;
        if extended > 0 {
            tracing::info!(
                jobs = extended,
                "waiting one lease for running jobs' workers"
            );
        }
        self.schedule().await.map(drop)
    }

    /// One pass: lost workers (lapsed leases, removed workers), then deadlines, then whatever
    /// waits and may now start (jobs created on another replica, slots freed there). A removed
    /// worker's jobs follow the same rules as a silent one's, whichever process removed it:
    /// every replica's reaper sees the revoked tokens in the database, and the guarded
    /// transition lets exactly one of them move each job.
    pub async fn reap(&self) -> Result<(), StoreError> {
        let now_ms = clock::millis(clock::now());
        for lease in self.store.lapsed_leases(now_ms).await? {
            if lease.phase.is_restartable() && lease.attempts < MAX_ATTEMPTS {
                self.requeue(&lease.job_id, lease.generation).await?;
            } else {
                let reason = match &lease.removed_worker {
                    Some(worker) => format!(
                        "worker lost: {worker} was removed (`ckrv-api workers remove`) while {}",
                        lease.phase
                    ),
                    None => format!(
                        "worker lost: no heartbeat for {} while {}",
                        humantime::format_duration(self.settings.lease),
                        lease.phase
                    ),
                };
                self.fail(&lease.job_id, Some(lease.generation), &reason)
                    .await?;
            }
        }
        let deadline = now_ms - duration_ms(self.settings.job_timeout);
        for job_id in self.store.overdue_jobs(deadline).await? {
            self.time_out(&job_id, None).await?;
        }
        self.schedule().await.map(drop)
    }
}

/// Reconciles once, then reaps every quarter lease (at most every 5 s) and starts waiting jobs
/// as slots free, until dropped.
pub async fn run_reaper(engine: JobEngine) {
    if let Err(e) = engine.reconcile().await {
        tracing::error!(error = %e, "reconciling jobs after start");
    }
    let period =
        (engine.settings.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let reaping = async {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = engine.reap().await {
                tracing::error!(error = %e, "reaping jobs");
            }
        }
    };
    tokio::join!(engine.clone().run_scheduler(), reaping);
}
