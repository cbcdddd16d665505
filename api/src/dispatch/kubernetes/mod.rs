//! The Kubernetes dispatcher: each claimed job becomes a `batch/v1` Job in the operator's
//! namespace whose pod runs the orchestrator beside the agent's own container
//! (docs/job-pod.md), a Secret only that pod mounts, and a NetworkPolicy that narrows once the
//! clone is done. Stopping a job deletes its Job with foreground propagation; the watchers in
//! [`watch`] turn what the cluster reports into the engine's transitions. Every name is a
//! function of the job and its claim, so any replica can stop what another started.

pub mod manifests;
pub mod settings;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ckrv_agents::AgentDefinition;
use ckrv_wit::types::JobPhase;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use self::manifests::{JOB_LABEL, JobPod, NetworkStage};
pub use self::settings::{KubernetesSettings, Resources, SettingsError};
use super::{DispatchError, Dispatcher, WorkerExit, WorkerStart};
use crate::dispatch::worker_setup::WorkerSetup;
use crate::metrics::Metrics;
use crate::store::{JobRow, Store};

/// Starts each job's worker as a Kubernetes Job.
pub struct KubernetesDispatcher {
    client: kube::Client,
    settings: Arc<KubernetesSettings>,
    store: Store,
    workers: Arc<WorkerSetup>,
    exits: mpsc::UnboundedSender<WorkerExit>,
    /// Where the watch counts its errors.
    metrics: Arc<Metrics>,
    /// Claims whose pod network this replica has set after the clone, with whether that
    /// network opened public HTTPS (for a step's `allowed_hosts`).
    narrowed: Mutex<HashMap<(String, i64), bool>>,
}

impl KubernetesDispatcher {
    pub fn new(
        client: kube::Client,
        settings: KubernetesSettings,
        store: Store,
        workers: Arc<WorkerSetup>,
        exits: mpsc::UnboundedSender<WorkerExit>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            store,
            workers,
            exits,
            metrics,
            narrowed: Mutex::default(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }

    /// The job's pod, as its stored row and the agent its spec names make it.
    fn job_pod<'a>(&self, row: &'a JobRow, agent: &'a AgentDefinition) -> JobPod<'a> {
        JobPod {
            job_id: &row.job.id,
            generation: row.generation,
            agent,
            repo_port: manifests::repository_port(&row.job.git_repo_url),
            // Set per phase (`phase_changed`): only while a step with allowed hosts runs,
            // never while the agent does.
            public_https_after_clone: false,
            model_keys: self.workers.keys_for(&row.spec),
        }
    }

    /// The job's row and agent.
    async fn job_and_agent(
        &self,
        job_id: &str,
    ) -> Result<(JobRow, AgentDefinition), DispatchError> {
        let row = self
            .store
            .job(job_id)
            .await
            .map_err(|e| DispatchError::Store(e.to_string()))?
            .ok_or_else(|| DispatchError::Store(format!("job {job_id} is not in the database")))?;
        let agent = ckrv_agents::parse_spec(&row.spec)
            .and_then(|spec| ckrv_agents::resolve(&spec).map(|i| i.agent.clone()))
            .map_err(|e| DispatchError::Spec(e.to_string()))?;
        Ok((row, agent))
    }

    /// Makes the Secret and the policy the suspended Job's pod needs, then lets it start.
    async fn complete_start(
        &self,
        created: &Job,
        pod: &JobPod<'_>,
        token: &str,
        model_token: &str,
    ) -> Result<(), DispatchError> {
        let name = manifests::object_name(pod.job_id, pod.generation);
        let owner = manifests::owned_by(created).ok_or_else(|| DispatchError::Kubernetes {
            action: format!("creating the Job {name}"),
            problem: "the cluster's answer has no uid".to_string(),
        })?;
        let create = PostParams::default();
        self.api::<Secret>()
            .create(
                &create,
                &manifests::secret(&self.settings, pod, token, model_token, owner.clone()),
            )
            .await
            .map_err(kube_error(&format!("creating the Secret {name}")))?;
        self.api::<NetworkPolicy>()
            .create(
                &create,
                &manifests::network_policy(&self.settings, pod, NetworkStage::Clone, owner),
            )
            .await
            .map_err(kube_error(&format!("creating the NetworkPolicy {name}")))?;
        let resume = serde_json::json!({"spec": {"suspend": false}});
        self.api::<Job>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&resume))
            .await
            .map_err(kube_error(&format!("starting the Job {name}")))?;
        Ok(())
    }

    fn narrowed(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), bool>> {
        self.narrowed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Dispatcher for KubernetesDispatcher {
    async fn start(&self, job: &WorkerStart<'_>) -> Result<(), DispatchError> {
        let (row, agent) = self.job_and_agent(job.job_id).await?;
        let pod = JobPod {
            generation: job.generation,
            ..self.job_pod(&row, &agent)
        };
        let name = manifests::object_name(pod.job_id, pod.generation);
        let jobs = self.api::<Job>();
        let created = jobs
            .create(
                &PostParams::default(),
                &manifests::job(&self.settings, &pod),
            )
            .await
            .map_err(kube_error(&format!("creating the Job {name}")))?;
        if let Err(error) = self
            .complete_start(&created, &pod, job.token, job.model_token)
            .await
        {
            // Nothing half-made stays behind: the Job takes what it owns with it.
            if let Err(e) = jobs.delete(&name, &DeleteParams::foreground()).await {
                tracing::warn!(name, error = %e, "removing a Job that could not start");
            }
            return Err(error);
        }
        tracing::info!(job_id = job.job_id, name, "Kubernetes Job started");
        Ok(())
    }

    async fn stop(&self, job_id: &str) {
        self.narrowed().retain(|(id, _), _| id != job_id);
        let jobs = self.api::<Job>();
        let mine = ListParams::default().labels(&format!("{JOB_LABEL}={job_id}"));
        let listed = match jobs.list(&mine).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::error!(job_id, %error, "listing the job's Kubernetes Jobs to stop them");
                return;
            }
        };
        for job in listed {
            let Some(name) = job.metadata.name.as_deref() else {
                continue;
            };
            match jobs.delete(name, &DeleteParams::foreground()).await {
                Ok(_) => tracing::info!(job_id, name, "Kubernetes Job deleted"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => tracing::error!(job_id, name, %error, "deleting a Kubernetes Job"),
            }
        }
    }

    async fn phase_changed(
        &self,
        job_id: &str,
        generation: i64,
        phase: JobPhase,
    ) -> Result<(), DispatchError> {
        let claim = (job_id.to_string(), generation);
        let https = public_https_in(&self.workers.pipeline, phase);
        if phase.is_restartable() || self.narrowed().get(&claim) == Some(&https) {
            return Ok(());
        }
        let (row, agent) = self.job_and_agent(job_id).await?;
        let pod = JobPod {
            generation,
            public_https_after_clone: https,
            ..self.job_pod(&row, &agent)
        };
        let name = manifests::object_name(job_id, generation);
        let egress = manifests::egress(&self.settings, &pod, NetworkStage::AfterClone);
        let narrow = serde_json::json!({"spec": {"egress": egress}});
        self.api::<NetworkPolicy>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&narrow))
            .await
            .map_err(kube_error(&format!(
                "narrowing the network of the job's pod (NetworkPolicy {name})"
            )))?;
        self.narrowed().insert(claim, https);
        tracing::info!(
            job_id,
            name,
            %phase,
            public_https = https,
            "the job pod's network set for its phase"
        );
        Ok(())
    }

    fn background(&self) -> Option<futures::future::BoxFuture<'static, ()>> {
        Some(Box::pin(watch::run(
            self.api(),
            self.api(),
            self.store.clone(),
            self.exits.clone(),
            self.settings.scheduling.schedule_timeout,
            Arc::clone(&self.metrics),
        )))
    }
}

/// Whether the pod's network opens public HTTPS in `phase`: while a step stage that reports
/// it has allowed hosts, and never in the agent stage's phase.
fn public_https_in(pipeline: &ckrv_pipeline::Pipeline, phase: JobPhase) -> bool {
    let agent_phase = pipeline
        .stages
        .iter()
        .any(|s| s.kind == ckrv_wit::types::StageKind::Agent && s.phase == phase);
    !agent_phase
        && pipeline
            .stages
            .iter()
            .any(|s| s.phase == phase && !s.allowed_hosts.is_empty())
}

/// Checks that the pipeline lets the pod's network narrow before the agent starts: that
/// happens when the job's phase moves past `cloning`, so the agent stage must report a later
/// phase than that; and that no step with allowed hosts shares the agent's phase, whose
/// network opens nothing public.
pub fn check_pipeline(pipeline: &ckrv_pipeline::Pipeline) -> Result<(), SettingsError> {
    let Some(agent) = pipeline
        .stages
        .iter()
        .find(|s| s.kind == ckrv_wit::types::StageKind::Agent)
    else {
        return Ok(());
    };
    if agent.phase.is_restartable() {
        return Err(SettingsError {
            flag: "--pipeline",
            problem: format!(
                "the agent stage reports phase `{}`; with --dispatcher kubernetes it must come after `cloning` (e.g. `agent`), because the job pod's network narrows when the phase moves past cloning",
                agent.phase
            ),
        });
    }
    match pipeline
        .stages
        .iter()
        .find(|s| s.kind != agent.kind && s.phase == agent.phase && !s.allowed_hosts.is_empty())
    {
        Some(step) => Err(SettingsError {
            flag: "--pipeline",
            problem: format!(
                "the stage `{}` has allowed_hosts and reports the agent stage's phase `{}`; with --dispatcher kubernetes give it a phase of its own, because the job pod's network opens public HTTPS only in the phases of such steps, never while the agent runs",
                step.name, agent.phase
            ),
        }),
        None => Ok(()),
    }
}

/// Checks that the operator's egress policy can be held in a job pod. A NetworkPolicy names
/// addresses, not hosts, and the agent shares the pod's one network namespace with the
/// orchestrator, so a policy past the gateway (`registries`, a list) is held only by the API's
/// egress proxy (`with_proxy`); and that proxy cannot read HTTPS, which a read-only policy
/// needs. Without the proxy only `none` and `model` can be held.
pub fn check_egress(
    workers: &crate::dispatch::worker_setup::WorkerSetup,
    with_proxy: bool,
) -> Result<(), SettingsError> {
    let problem = match workers.operator_egress() {
        Some(policy) if policy.is_read_only() => format!(
            "the operator's egress policy `{policy}` (this flag or the pipeline's agent stage) cannot be held with --dispatcher kubernetes: the API's egress proxy cannot read a job pod's HTTPS (no agent image trusts an authority of the proxy's), so a read-only policy would refuse all of it; drop `;read-only` here, or run such jobs on the local dispatcher, whose sandbox trusts its proxy's authority"
        ),
        Some(policy) if !with_proxy && !policy.entries().is_empty() => format!(
            "the operator's egress policy `{policy}` (this flag or the pipeline's agent stage) cannot be held with --dispatcher kubernetes without --egress-proxy-listen: a job pod's NetworkPolicy cannot name hosts, and the agent shares the pod's network with the orchestrator, so it would reach every public address; run the API's egress proxy (--egress-proxy-listen 0.0.0.0:3128), or use `model` (the default) or `none` here"
        ),
        _ => return Ok(()),
    };
    Err(SettingsError {
        flag: "--egress-allow",
        problem,
    })
}

/// Asks the cluster, once at start, whether this API may see the namespace's Jobs and Pods, so
/// a missing Role is an error naming it rather than jobs failing later.
pub async fn check_access(client: &kube::Client, namespace: &str) -> Result<(), DispatchError> {
    let one = ListParams::default().limit(1);
    Api::<Job>::namespaced(client.clone(), namespace)
        .list(&one)
        .await
        .map_err(kube_error(&format!(
            "listing Jobs in namespace {namespace}"
        )))?;
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&one)
        .await
        .map_err(kube_error(&format!(
            "listing Pods in namespace {namespace}"
        )))?;
    Ok(())
}

/// A Kubernetes error, with what was being done and what the cluster said.
fn kube_error(action: &str) -> impl Fn(kube::Error) -> DispatchError + '_ {
    move |error| DispatchError::Kubernetes {
        action: action.to_string(),
        problem: match error {
            kube::Error::Api(status) => {
                format!("{} ({} {})", status.message, status.code, status.reason)
            }
            other => other.to_string(),
        },
    }
}
