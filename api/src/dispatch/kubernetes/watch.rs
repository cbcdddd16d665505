//! What the cluster says about job pods, turned into what the engine does. Two watchers (Jobs
//! and Pods this API made, by label) read every change; a pod that cannot pull its image, is
//! evicted, or whose container dies fails its job with the reason, and a Job past its deadline
//! times its job out. The engine ignores a verdict on a claim that no longer runs, so every
//! replica may watch and report alike. On each (re)start the watchers list what exists: a pod
//! that failed while this API was down is judged then, and a Job left running for a job that
//! has ended is deleted. A pod that no node will take fails its job with the scheduler's
//! reason once it has waited the operator's schedule timeout.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

use super::manifests::{
    AGENT, GENERATION_LABEL, INSTALL_ENTRYPOINT, JOB_LABEL, MANAGED_SELECTOR, ORCHESTRATOR,
};
use crate::dispatch::WorkerExit;
use crate::store::Store;
use ckrv_wit::types::JobState;

/// Reasons a container waits that mean its image will not come.
const IMAGE_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
/// Reasons a container waits that mean it cannot be created as specified.
const CONFIG_FAILURES: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// The longest piece of a container's termination message put in a job's error.
const MAX_MESSAGE: usize = 400;

/// The claim an object was made for, from its labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    pub job_id: String,
    pub generation: i64,
}

impl Claim {
    pub fn of(meta: &ObjectMeta) -> Option<Self> {
        let labels = meta.labels.as_ref()?;
        Some(Self {
            job_id: labels.get(JOB_LABEL)?.clone(),
            generation: labels.get(GENERATION_LABEL)?.parse().ok()?,
        })
    }
}

/// What the cluster's word means for the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The worker cannot go on; the job fails with this reason (if its claim still runs).
    Failed(String),
    /// Kubernetes ended the Job at its deadline.
    TimedOut,
}

impl Verdict {
    fn exit(self, claim: Claim) -> WorkerExit {
        let (reason, timed_out) = match self {
            Self::Failed(reason) => (reason, false),
            Self::TimedOut => (String::new(), true),
        };
        WorkerExit {
            job_id: claim.job_id,
            generation: claim.generation,
            reason,
            timed_out,
        }
    }
}

/// Judges one state of a job's pod; `None` while all is well.
pub fn assess_pod(pod: &Pod) -> Option<Verdict> {
    let status = pod.status.as_ref()?;
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in all.clone() {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let message = waiting
            .message
            .as_deref()
            .map(|m| format!(": {}", clip(m)))
            .unwrap_or_default();
        if IMAGE_FAILURES.contains(&reason) {
            return Some(Verdict::Failed(format!(
                "image not found: {} (the {} container: {reason}{message})",
                container.image, container.name
            )));
        }
        if CONFIG_FAILURES.contains(&reason) {
            return Some(Verdict::Failed(format!(
                "the {} container cannot start ({reason}{message})",
                container.name
            )));
        }
    }
    match status.phase.as_deref() {
        Some("Failed") => Some(match status.reason.as_deref() {
            Some("DeadlineExceeded") => Verdict::TimedOut,
            Some("Evicted") => Verdict::Failed(format!(
                "the job's pod was evicted: {}",
                clip(status.message.as_deref().unwrap_or("no reason given"))
            )),
            reason => Verdict::Failed(all.clone().find_map(failure).unwrap_or_else(
                || match reason {
                    Some(reason) => format!(
                        "the job's pod failed ({reason}: {})",
                        clip(status.message.as_deref().unwrap_or_default())
                    ),
                    None => "the job's pod failed".to_string(),
                },
            )),
        }),
        Some("Succeeded") => Some(Verdict::Failed(
            "the job's pod ended without the worker completing the job".to_string(),
        )),
        // While it runs, a container that died leaves the other waiting for nothing.
        _ => all.clone().find_map(failure).map(Verdict::Failed),
    }
}

/// A container that ended badly, described; `None` for one that runs or ended well.
fn failure(container: &ContainerStatus) -> Option<String> {
    let ended = container.state.as_ref()?.terminated.as_ref()?;
    if ended.exit_code == 0 {
        return None;
    }
    let role = match container.name.as_str() {
        ORCHESTRATOR => "the orchestrator container",
        AGENT => "the agent container",
        INSTALL_ENTRYPOINT => "the install-entrypoint container",
        _ => "a container",
    };
    let reason = ended.reason.as_deref().unwrap_or("Error");
    if reason == "OOMKilled" {
        let flag = if container.name == AGENT {
            "--agent-memory"
        } else {
            "--worker-memory"
        };
        return Some(format!(
            "{role} ran out of memory (OOMKilled; its limit is {flag})"
        ));
    }
    let message = ended
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {}", clip(m)))
        .unwrap_or_default();
    Some(format!(
        "{role} ended with {reason} (exit code {}){message}",
        ended.exit_code
    ))
}

/// Judges one state of a job's Kubernetes Job; `None` while it runs.
pub fn assess_job(job: &Job) -> Option<Verdict> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if let Some(failed) = holds("Failed") {
        return Some(match failed.reason.as_deref() {
            Some("DeadlineExceeded") => Verdict::TimedOut,
            reason => Verdict::Failed(format!(
                "the job's Kubernetes Job failed ({}: {})",
                reason.unwrap_or("no reason given"),
                clip(failed.message.as_deref().unwrap_or_default())
            )),
        });
    }
    holds("Complete").map(|_| {
        Verdict::Failed("the job's pod ended without the worker completing the job".to_string())
    })
}

/// Since when the pod has been waiting for a node that can take it, if it is: its
/// `PodScheduled` condition is false for want of one (not, say, while gated).
fn unschedulable_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref().is_some_and(|p| p != "Pending") {
        return None;
    }
    let scheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")?;
    (scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable"))
        .then(|| scheduled.last_transition_time.as_ref().map(|t| t.0))
}

/// Judges a pod that has waited for a node since `since`: past `limit`, its job fails with
/// what the scheduler said.
pub fn assess_unscheduled(
    pod: &Pod,
    since: Timestamp,
    now: Timestamp,
    limit: Duration,
) -> Option<Verdict> {
    let waited = now.duration_since(since);
    if limit.is_zero() || waited.is_negative() || waited.unsigned_abs() < limit {
        return None;
    }
    let said = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.message.as_deref())
        .unwrap_or("no reason given");
    Some(Verdict::Failed(format!(
        "no node could take the job's pod in {}: {} (the operator's job node selector, \
         tolerations and resources decide where job pods fit)",
        humantime::format_duration(limit),
        clip(said)
    )))
}

/// Pods waiting for a node, by claim: the latest state and since when, re-judged on a timer
/// because a pod that stays unschedulable may not change again.
#[derive(Default)]
struct Unscheduled(HashMap<Claim, (Pod, Timestamp)>);

impl Unscheduled {
    /// Notes the pod's latest state; a verdict if it has waited too long already.
    fn observe(&mut self, claim: &Claim, pod: &Pod, limit: Duration) -> Option<Verdict> {
        let Some(since) = unschedulable_since(pod) else {
            self.forget(claim);
            return None;
        };
        let now = Timestamp::now();
        let first_seen = self.0.get(claim).map_or(now, |(_, seen)| *seen);
        let since = since.unwrap_or(first_seen);
        self.0.insert(claim.clone(), (pod.clone(), since));
        assess_unscheduled(pod, since, now, limit)
    }

    /// Stops timing the claim's pod: it was judged, or is gone.
    fn forget(&mut self, claim: &Claim) {
        self.0.remove(claim);
    }

    /// Verdicts on the pods that have now waited too long; they are forgotten.
    fn overdue(&mut self, limit: Duration) -> Vec<(Claim, Verdict)> {
        let now = Timestamp::now();
        let overdue: Vec<(Claim, Verdict)> = self
            .0
            .iter()
            .filter_map(|(claim, (pod, since))| {
                assess_unscheduled(pod, *since, now, limit).map(|v| (claim.clone(), v))
            })
            .collect();
        for (claim, _) in &overdue {
            self.forget(claim);
        }
        overdue
    }
}

/// Whether the Job has finished (either way) or is being deleted.
fn settled(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_some()
        || job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            })
}

fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Watches the namespace's job pods and Jobs until dropped, reporting verdicts on `exits` and
/// deleting Jobs whose job has ended.
pub async fn run(
    pods: Api<Pod>,
    jobs: Api<Job>,
    store: Store,
    exits: mpsc::UnboundedSender<WorkerExit>,
    schedule_timeout: Duration,
) {
    tokio::join!(
        watch_pods(pods, exits.clone(), schedule_timeout),
        watch_jobs(jobs, store, exits)
    );
}

async fn watch_pods(
    pods: Api<Pod>,
    exits: mpsc::UnboundedSender<WorkerExit>,
    schedule_timeout: Duration,
) {
    // One report per claim is enough: every later state of a failed pod says the same.
    let mut reported: HashSet<Claim> = HashSet::new();
    let mut unscheduled = Unscheduled::default();
    let report = |claim: Claim, verdict: Verdict, reported: &mut HashSet<Claim>| {
        tracing::info!(job_id = claim.job_id, ?verdict, "job pod judged");
        reported.insert(claim.clone());
        let _ = exits.send(verdict.exit(claim));
    };
    // A quarter of the timeout late at most; with no timeout there is nothing to time.
    let period = match schedule_timeout {
        Duration::ZERO => Duration::from_secs(3600),
        limit => (limit / 4).clamp(Duration::from_millis(250), Duration::from_secs(30)),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stream = watcher::watcher(pods, watcher::Config::default().labels(MANAGED_SELECTOR))
        .default_backoff()
        .boxed();
    loop {
        let event = tokio::select! {
            event = stream.next() => match event {
                Some(event) => event,
                None => break,
            },
            _ = tick.tick() => {
                for (claim, verdict) in unscheduled.overdue(schedule_timeout) {
                    report(claim, verdict, &mut reported);
                }
                continue;
            }
        };
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                let Some(claim) = Claim::of(&pod.metadata) else {
                    continue;
                };
                if reported.contains(&claim) {
                    continue;
                }
                if let Some(verdict) =
                    assess_pod(&pod).or_else(|| unscheduled.observe(&claim, &pod, schedule_timeout))
                {
                    unscheduled.forget(&claim);
                    report(claim, verdict, &mut reported);
                }
            }
            Ok(Event::Delete(pod)) => {
                let Some(claim) = Claim::of(&pod.metadata) else {
                    continue;
                };
                unscheduled.forget(&claim);
                if !reported.remove(&claim) {
                    // Gone before it ended: stopped by this API (the job has ended, and the
                    // engine ignores this) or by someone else.
                    let exit = Verdict::Failed("the job's pod was deleted".to_string()).exit(claim);
                    let _ = exits.send(exit);
                }
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(error) => tracing::warn!(%error, "watching job pods"),
        }
    }
}

async fn watch_jobs(jobs: Api<Job>, store: Store, exits: mpsc::UnboundedSender<WorkerExit>) {
    let mut reported: HashSet<Claim> = HashSet::new();
    let mut checked: HashSet<Claim> = HashSet::new();
    let mut stream = watcher::watcher(
        jobs.clone(),
        watcher::Config::default().labels(MANAGED_SELECTOR),
    )
    .default_backoff()
    .boxed();
    while let Some(event) = stream.next().await {
        let (job, listed) = match event {
            Ok(Event::Apply(job)) => (job, false),
            Ok(Event::InitApply(job)) => (job, true),
            Ok(Event::Delete(job)) => {
                if let Some(claim) = Claim::of(&job.metadata) {
                    reported.remove(&claim);
                    checked.remove(&claim);
                }
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(error) => {
                tracing::warn!(%error, "watching job Jobs");
                continue;
            }
        };
        let Some(claim) = Claim::of(&job.metadata) else {
            continue;
        };
        if !reported.contains(&claim)
            && let Some(verdict) = assess_job(&job)
        {
            reported.insert(claim.clone());
            let _ = exits.send(verdict.exit(claim.clone()));
        }
        // A Job found on (re)start, or first seen, must still serve its job's current claim.
        if !settled(&job) && (listed || checked.insert(claim.clone())) {
            delete_if_orphaned(&jobs, &store, &job, &claim).await;
        }
    }
}

/// Deletes a running Job whose job has ended or moved on to another claim: what a restart
/// finds left over from a stop this API could not finish.
async fn delete_if_orphaned(jobs: &Api<Job>, store: &Store, job: &Job, claim: &Claim) {
    let current = match store.job(&claim.job_id).await {
        Ok(row) => row.map(|r| (r.state, r.generation)),
        Err(error) => {
            tracing::warn!(job_id = claim.job_id, %error, "checking a Job's job");
            return;
        }
    };
    if current == Some((JobState::Running, claim.generation)) {
        return;
    }
    let Some(name) = job.metadata.name.as_deref() else {
        return;
    };
    tracing::info!(
        job_id = claim.job_id,
        name,
        "deleting a Kubernetes Job whose job no longer runs on it"
    );
    if let Err(error) = jobs.delete(name, &DeleteParams::foreground()).await {
        tracing::warn!(name, %error, "deleting an orphaned Job");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {JOB_LABEL: "j1", GENERATION_LABEL: "2"}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn only_a_pod_the_scheduler_cannot_place_waits_for_a_node() {
        let condition = |status: &str, reason: &str| {
            pod(
                serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
                "status": status, "reason": reason, "lastTransitionTime": "2026-12-01T10:00:00Z",
                "message": "0/3 nodes are available"}]}),
            )
        };
        let waiting = condition("False", "Unschedulable");
        let since: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        assert_eq!(unschedulable_since(&waiting), Some(Some(since)));
        assert_eq!(
            unschedulable_since(&condition("False", "SchedulingGated")),
            None
        );
        assert_eq!(unschedulable_since(&condition("True", "")), None);
        assert_eq!(
            unschedulable_since(&pod(serde_json::json!({"phase": "Running"}))),
            None
        );

        let limit = Duration::from_secs(600);
        let at = |time: &str| assess_unscheduled(&waiting, since, time.parse().unwrap(), limit);
        assert_eq!(at("2026-12-01T10:09:59Z"), None);
        assert!(matches!(
            at("2026-12-01T10:10:00Z"),
            Some(Verdict::Failed(m)) if m.starts_with("no node could take the job's pod in 10m: 0/3 nodes are available (")
        ));
        // A clock behind the cluster's, or no limit, waits on.
        assert_eq!(at("2026-12-01T09:00:00Z"), None);
        let never = assess_unscheduled(
            &waiting,
            since,
            "2027-01-01T00:00:00Z".parse().unwrap(),
            Duration::ZERO,
        );
        assert_eq!(never, None);
    }

    #[test]
    fn a_running_pod_is_fine_and_its_claim_is_read_from_labels() {
        let running = pod(
            serde_json::json!({"phase": "Running", "containerStatuses": [
            {"name": "orchestrator", "image": "w", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {}}},
            {"name": "agent", "image": "a", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {}}}]}),
        );
        assert_eq!(assess_pod(&running), None);
        assert_eq!(
            Claim::of(&running.metadata),
            Some(Claim {
                job_id: "j1".into(),
                generation: 2
            })
        );
    }

    #[test]
    fn an_agent_that_finished_first_is_not_a_failure() {
        let uploading = pod(
            serde_json::json!({"phase": "Running", "containerStatuses": [
            {"name": "orchestrator", "image": "w", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {}}},
            {"name": "agent", "image": "a", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(assess_pod(&uploading), None);
    }

    #[test]
    fn long_messages_are_clipped() {
        assert_eq!(clip(&"x".repeat(1000)).chars().count(), MAX_MESSAGE + 1);
        assert_eq!(clip(" short "), "short");
    }
}
