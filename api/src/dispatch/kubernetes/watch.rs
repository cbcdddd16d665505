//! What the cluster says about job pods, turned into what the engine does. Two kube-runtime
//! controllers (of the Jobs and Pods this API made, by label) judge every object's latest
//! state; a pod that cannot pull its image, is evicted, or whose container dies fails its job
//! with the reason, and a Job past its deadline times its job out. The engine ignores a verdict
//! on a claim that no longer runs, so every replica may watch and report alike. On each
//! (re)start the controllers list what exists: a pod that failed while this API was down is
//! judged then, and a Job left running for a job that has ended is deleted. A pod that no node
//! will take is requeued for the moment its wait reaches the operator's schedule timeout, and
//! fails its job then with the scheduler's reason. The verdicts themselves are pure functions
//! of an object's state ([`assess_pod`], [`assess_job`], [`assess_unscheduled`]).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt as _, reflector};
use tokio::sync::mpsc;

use super::manifests::{
    AGENT, GENERATION_LABEL, INSTALL_ENTRYPOINT, JOB_LABEL, MANAGED_SELECTOR, ORCHESTRATOR,
};
use crate::dispatch::WorkerExit;
use crate::metrics::Metrics;
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

/// Why one object could not be handled; it is tried again after [`RETRY`].
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("checking the job of Job {name}: {source}")]
    Store {
        name: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("deleting the orphaned Job {name}: {source}")]
    Delete {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// How soon an object whose handling failed is handled again.
const RETRY: Duration = Duration::from_secs(5);

/// Watches the namespace's job pods and Jobs until dropped, reporting verdicts on `exits` and
/// deleting Jobs whose job has ended. Each is a kube-runtime controller: a reflector of the
/// objects this API made (by label), a reconciler per object, requeues for what must be
/// judged again later, and every error counted in `metrics`.
pub async fn run(
    pods: Api<Pod>,
    jobs: Api<Job>,
    store: Store,
    exits: mpsc::UnboundedSender<WorkerExit>,
    schedule_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let pods = control(
        pods,
        Arc::new(PodWatch {
            exits: exits.clone(),
            schedule_timeout,
            seen: Mutex::default(),
        }),
        reconcile_pod,
        "pods",
        Arc::clone(&metrics),
    );
    let jobs = control(
        jobs.clone(),
        Arc::new(JobWatch {
            jobs,
            store,
            exits,
            seen: Mutex::default(),
        }),
        reconcile_job,
        "jobs",
        metrics,
    );
    tokio::join!(pods, jobs);
}

/// What a watch keeps of the objects it has seen, and is told of each event first.
trait Watch<K>: Send + Sync + 'static {
    /// Sees every event before the controller does: deletions, and the start of a re-list.
    fn event(&self, event: &Event<K>);
}

/// Runs a controller for `api`'s objects this API made until dropped; errors are logged,
/// counted by `resource`, and retried (the watch with backoff, an object after [`RETRY`]).
async fn control<K, W, F, Fut>(
    api: Api<K>,
    watch: Arc<W>,
    reconcile: F,
    resource: &'static str,
    metrics: Arc<Metrics>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    W: Watch<K>,
    F: FnMut(Arc<K>, Arc<W>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, WatchError>> + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let told = Arc::clone(&watch);
    let trigger = watcher::watcher(api, watcher::Config::default().labels(MANAGED_SELECTOR))
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                told.event(event);
            }
        })
        .applied_objects();
    Controller::for_stream(trigger, reader)
        .run(reconcile, retry, watch)
        .for_each(|outcome| {
            if let Err(error) = outcome {
                // An object gone before its turn is expected, not an error.
                if !matches!(error, controller::Error::ObjectNotFound(_)) {
                    tracing::warn!(resource, %error, "watching job {resource}");
                    metrics.kubernetes_watch_error(resource);
                }
            }
            std::future::ready(())
        })
        .await;
}

/// The error policy: try the object again shortly.
fn retry<K, W>(_: Arc<K>, _: &WatchError, _: Arc<W>) -> Action {
    Action::requeue(RETRY)
}

/// The pods' watch: verdicts reported once per claim, and since when each pod has waited for
/// a node when its status does not say.
struct PodWatch {
    exits: mpsc::UnboundedSender<WorkerExit>,
    schedule_timeout: Duration,
    seen: Mutex<PodsSeen>,
}

#[derive(Default)]
struct PodsSeen {
    /// One report per claim is enough: every later state of a failed pod says the same.
    reported: HashSet<Claim>,
    /// When a pod waiting for a node was first seen, for a status without the time.
    waiting_since: HashMap<Claim, Timestamp>,
}

impl PodWatch {
    fn seen(&self) -> std::sync::MutexGuard<'_, PodsSeen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn report(&self, claim: Claim, verdict: Verdict) {
        tracing::info!(job_id = claim.job_id, ?verdict, "job pod judged");
        let mut seen = self.seen();
        seen.waiting_since.remove(&claim);
        seen.reported.insert(claim.clone());
        let _ = self.exits.send(verdict.exit(claim));
    }
}

impl Watch<Pod> for PodWatch {
    fn event(&self, event: &Event<Pod>) {
        let Event::Delete(pod) = event else {
            return;
        };
        let Some(claim) = Claim::of(&pod.metadata) else {
            return;
        };
        let mut seen = self.seen();
        seen.waiting_since.remove(&claim);
        if !seen.reported.remove(&claim) {
            // Not judged yet: its last state may say why it ended (the controller may not have
            // reached it before it went), else it was stopped before it ended, by this API
            // (the job has ended, and the engine ignores this) or by someone else.
            let verdict = assess_pod(pod)
                .unwrap_or_else(|| Verdict::Failed("the job's pod was deleted".to_string()));
            let _ = self.exits.send(verdict.exit(claim));
        }
    }
}

/// Judges the pod's latest state. A pod waiting for a node is judged again when its wait
/// reaches the schedule timeout, since it may not change again by then.
async fn reconcile_pod(pod: Arc<Pod>, watch: Arc<PodWatch>) -> Result<Action, WatchError> {
    let Some(claim) = Claim::of(&pod.metadata) else {
        return Ok(Action::await_change());
    };
    if watch.seen().reported.contains(&claim) {
        return Ok(Action::await_change());
    }
    if let Some(verdict) = assess_pod(&pod) {
        watch.report(claim, verdict);
        return Ok(Action::await_change());
    }
    let Some(since) = unschedulable_since(&pod) else {
        watch.seen().waiting_since.remove(&claim);
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    let since = since.unwrap_or_else(|| {
        *watch
            .seen()
            .waiting_since
            .entry(claim.clone())
            .or_insert(now)
    });
    let limit = watch.schedule_timeout;
    if let Some(verdict) = assess_unscheduled(&pod, since, now, limit) {
        watch.report(claim, verdict);
        return Ok(Action::await_change());
    }
    if limit.is_zero() {
        return Ok(Action::await_change());
    }
    let waited = now.duration_since(since).unsigned_abs();
    Ok(Action::requeue(limit.saturating_sub(waited)))
}

/// The Jobs' watch: verdicts reported once per claim, and the Jobs checked for a job that
/// still runs on them since the last (re)list.
struct JobWatch {
    jobs: Api<Job>,
    store: Store,
    exits: mpsc::UnboundedSender<WorkerExit>,
    seen: Mutex<JobsSeen>,
}

#[derive(Default)]
struct JobsSeen {
    reported: HashSet<Claim>,
    checked: HashSet<Claim>,
}

impl JobWatch {
    fn seen(&self) -> std::sync::MutexGuard<'_, JobsSeen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Watch<Job> for JobWatch {
    fn event(&self, event: &Event<Job>) {
        match event {
            Event::Delete(job) => {
                if let Some(claim) = Claim::of(&job.metadata) {
                    let mut seen = self.seen();
                    seen.reported.remove(&claim);
                    seen.checked.remove(&claim);
                }
            }
            // A (re)list: every Job it finds must be checked again, as on a restart.
            Event::Init => self.seen().checked.clear(),
            _ => {}
        }
    }
}

/// Reports a Job's verdict, and deletes a running Job whose job has ended or moved on.
async fn reconcile_job(job: Arc<Job>, watch: Arc<JobWatch>) -> Result<Action, WatchError> {
    let Some(claim) = Claim::of(&job.metadata) else {
        return Ok(Action::await_change());
    };
    if let Some(verdict) = assess_job(&job)
        && watch.seen().reported.insert(claim.clone())
    {
        let _ = watch.exits.send(verdict.exit(claim.clone()));
    }
    // A Job found on (re)start, or first seen, must still serve its job's current claim.
    if !settled(&job) && !watch.seen().checked.contains(&claim) {
        delete_if_orphaned(&watch, &job, &claim).await?;
        watch.seen().checked.insert(claim);
    }
    Ok(Action::await_change())
}

/// Deletes a running Job whose job has ended or moved on to another claim: what a restart
/// finds left over from a stop this API could not finish.
async fn delete_if_orphaned(watch: &JobWatch, job: &Job, claim: &Claim) -> Result<(), WatchError> {
    let Some(name) = job.metadata.name.as_deref() else {
        return Ok(());
    };
    let current = watch
        .store
        .job(&claim.job_id)
        .await
        .map_err(|source| WatchError::Store {
            name: name.to_string(),
            source,
        })?
        .map(|row| (row.state, row.generation));
    if current == Some((JobState::Running, claim.generation)) {
        return Ok(());
    }
    tracing::info!(
        job_id = claim.job_id,
        name,
        "deleting a Kubernetes Job whose job no longer runs on it"
    );
    watch
        .jobs
        .delete(name, &DeleteParams::foreground())
        .await
        .map(drop)
        .map_err(|source| WatchError::Delete {
            name: name.to_string(),
            source,
        })
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
