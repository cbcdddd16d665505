//! `ckrv-api serve`'s choice of who runs jobs, and the Kubernetes dispatcher's flags: parsed
//! here, checked by [`KubernetesSettings::check`], connected to the cluster once at start.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ckrv_api::dispatch::kubernetes::settings::{
    DEFAULT_AGENT_CPU, DEFAULT_AGENT_MEMORY, DEFAULT_API_POD_LABEL, DEFAULT_DNS_NAMESPACE,
    DEFAULT_DNS_POD_LABEL, DEFAULT_JOB_TTL, DEFAULT_SCHEDULE_TIMEOUT, DEFAULT_WORKER_CPU,
    DEFAULT_WORKER_MEMORY, DEFAULT_WORKSPACE_SIZE, Scheduling, parse_agent_image, parse_label,
    parse_toleration,
};
use ckrv_api::dispatch::kubernetes::{KubernetesSettings, Resources, check_access};
use ckrv_api::{DispatcherConfig, KubernetesConfig};
use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::Toleration;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DispatcherKind {
    /// A `ckrv-orchestrator` process per job on this machine, agents in bubblewrap
    Local,
    /// None: workers on other machines claim jobs (`ckrv-orchestrator work`)
    External,
    /// A Kubernetes Job per job, the agent in a container of its own
    Kubernetes,
}

#[derive(Args)]
pub struct DispatcherArgs {
    /// Who runs the jobs
    #[arg(long, env = "CKRV_API_DISPATCHER", value_enum, default_value = "local")]
    dispatcher: DispatcherKind,
    /// Start no workers: jobs wait for workers started elsewhere (--dispatcher external)
    #[arg(long, conflicts_with = "orchestrator")]
    external_workers: bool,
    /// The `ckrv-orchestrator` program started for each job (--dispatcher local): a path, or
    /// a name looked for beside ckrv-api and then on PATH [default: ckrv-orchestrator]
    #[arg(long, env = "CKRV_ORCHESTRATOR", value_name = "PROGRAM")]
    orchestrator: Option<PathBuf>,
    #[command(flatten)]
    kubernetes: KubernetesArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Kubernetes (--dispatcher kubernetes)")]
struct KubernetesArgs {
    /// The namespace job pods run in [default: this pod's own, or the kubeconfig's]
    #[arg(long, env = "CKRV_API_NAMESPACE", value_name = "NS")]
    namespace: Option<String>,
    /// The worker image (ckrv-orchestrator, git, ckrv-agent-entrypoint)
    #[arg(long, env = "CKRV_API_WORKER_IMAGE", value_name = "IMAGE")]
    worker_image: Option<String>,
    /// The URL job pods reach this API at, e.g. http://ckrv.ckrv.svc:8080
    #[arg(long, env = "CKRV_API_WORKER_API_URL", value_name = "URL")]
    worker_api_url: Option<String>,
    /// Run an agent from another image than its definition's (repeat, or comma-separate)
    #[arg(long, env = "CKRV_API_AGENT_IMAGES", value_name = "AGENT=IMAGE",
          value_delimiter = ',', value_parser = parse_agent_image)]
    agent_image: Vec<(String, String)>,
    /// The orchestrator container's CPU (request and limit)
    #[arg(long, env = "CKRV_API_WORKER_CPU", default_value = DEFAULT_WORKER_CPU)]
    worker_cpu: String,
    /// The orchestrator container's memory (request and limit)
    #[arg(long, env = "CKRV_API_WORKER_MEMORY", default_value = DEFAULT_WORKER_MEMORY)]
    worker_memory: String,
    /// The agent container's CPU (request and limit)
    #[arg(long, env = "CKRV_API_AGENT_CPU", default_value = DEFAULT_AGENT_CPU)]
    agent_cpu: String,
    /// The agent container's memory (request and limit)
    #[arg(long, env = "CKRV_API_AGENT_MEMORY", default_value = DEFAULT_AGENT_MEMORY)]
    agent_memory: String,
    /// The size limit of each job's workspace
    #[arg(long, env = "CKRV_API_WORKSPACE_SIZE", default_value = DEFAULT_WORKSPACE_SIZE)]
    workspace_size: String,
    /// How long a finished Job (its pod and logs) stays for inspection
    #[arg(long, env = "CKRV_API_JOB_TTL", default_value = DEFAULT_JOB_TTL,
          value_parser = humantime::parse_duration)]
    job_ttl: Duration,
    /// A Secret with registry credentials for the job images (repeat, or comma-separate)
    #[arg(
        long,
        env = "CKRV_API_IMAGE_PULL_SECRETS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    image_pull_secret: Vec<String>,
    /// A label of this API's own pods, which job pods may reach (repeat, or comma-separate)
    #[arg(long, env = "CKRV_API_POD_LABELS", value_name = "KEY=VALUE", value_delimiter = ',',
          value_parser = parse_label, default_value = DEFAULT_API_POD_LABEL)]
    api_pod_label: Vec<(String, String)>,
    /// An extra label on every job's objects (repeat, or comma-separate)
    #[arg(long, env = "CKRV_API_JOB_LABELS", value_name = "KEY=VALUE", value_delimiter = ',',
          value_parser = parse_label)]
    job_label: Vec<(String, String)>,
    /// The service account job pods run as (its token is never mounted) [default: the
    /// namespace's default]
    #[arg(long, env = "CKRV_API_WORKER_SERVICE_ACCOUNT", value_name = "NAME")]
    worker_service_account: Option<String>,
    /// The namespace of the cluster's DNS pods, which job pods may ask
    #[arg(long, env = "CKRV_API_DNS_NAMESPACE", value_name = "NS", default_value = DEFAULT_DNS_NAMESPACE)]
    dns_namespace: String,
    /// A label of the cluster's DNS pods (repeat, or comma-separate)
    #[arg(long, env = "CKRV_API_DNS_POD_LABELS", value_name = "KEY=VALUE", value_delimiter = ',',
          value_parser = parse_label, default_value = DEFAULT_DNS_POD_LABEL)]
    dns_pod_label: Vec<(String, String)>,
    /// A node label job pods must be scheduled on (repeat, or comma-separate)
    #[arg(long, env = "CKRV_API_JOB_NODE_SELECTOR", value_name = "KEY=VALUE", value_delimiter = ',',
          value_parser = parse_label)]
    job_node_selector: Vec<(String, String)>,
    /// A node taint job pods tolerate, as kubectl taint writes it: without a value any value,
    /// without an effect every effect (repeat, or comma-separate)
    #[arg(long, env = "CKRV_API_JOB_TOLERATIONS", value_name = "KEY[=VALUE][:EFFECT]",
          value_delimiter = ',', value_parser = parse_toleration)]
    job_toleration: Vec<Toleration>,
    /// The PriorityClass of job pods [default: the cluster's default]
    #[arg(long, env = "CKRV_API_JOB_PRIORITY_CLASS", value_name = "NAME")]
    job_priority_class: Option<String>,
    /// Run the egress proxy job pods' agents reach the internet through, on this address
    /// (e.g. 0.0.0.0:3128; the Service must expose the same port): each connection is checked
    /// against its job's egress policy, and each refusal goes into the job's log. Without it
    /// an agent in a pod reaches the model gateway alone
    #[arg(long, env = "CKRV_API_EGRESS_PROXY_LISTEN", value_name = "ADDR")]
    egress_proxy_listen: Option<std::net::SocketAddr>,
    /// How long a job pod may wait for a node that can take it before its job fails with the
    /// scheduler's reason (0 waits until the job's timeout)
    #[arg(long, env = "CKRV_API_JOB_SCHEDULE_TIMEOUT", default_value = DEFAULT_SCHEDULE_TIMEOUT,
          value_parser = humantime::parse_duration)]
    job_schedule_timeout: Duration,
}

impl DispatcherArgs {
    /// The dispatcher the flags choose; for Kubernetes, connected and its access checked.
    pub async fn config(self) -> anyhow::Result<DispatcherConfig> {
        let kind = if self.external_workers {
            DispatcherKind::External
        } else {
            self.dispatcher
        };
        if kind != DispatcherKind::Kubernetes {
            let k = &self.kubernetes;
            if let Some(flag) = [
                (k.worker_image.is_some(), "--worker-image"),
                (k.worker_api_url.is_some(), "--worker-api-url"),
                (k.namespace.is_some(), "--namespace"),
                (k.egress_proxy_listen.is_some(), "--egress-proxy-listen"),
            ]
            .into_iter()
            .find_map(|(given, flag)| given.then_some(flag))
            {
                anyhow::bail!("{flag} is for --dispatcher kubernetes");
            }
        }
        Ok(match kind {
            DispatcherKind::Local => DispatcherConfig::Local {
                orchestrator: orchestrator(self.orchestrator.as_deref())?,
            },
            DispatcherKind::External => DispatcherConfig::External,
            DispatcherKind::Kubernetes => self.kubernetes.config().await?,
        })
    }
}

/// The worker program, found once at start: a server that could start no worker must not
/// accept jobs only to fail each one.
fn orchestrator(given: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    use ckrv_wit::programs::{self, LocateError};
    let found = match given {
        Some(path) => programs::resolve(path),
        None => programs::locate(programs::ORCHESTRATOR),
    };
    let path = found.map_err(|error| match error {
        LocateError::NotFound { .. } => anyhow::anyhow!(
            "--orchestrator: {error}; install it beside ckrv-api (`cargo install --path \
             orchestrator`), or name it with --orchestrator PATH (or CKRV_ORCHESTRATOR)"
        ),
        LocateError::NotExecutable { .. } => anyhow::anyhow!(
            "--orchestrator: {error}; name the ckrv-orchestrator program (or leave the flag out \
             to use the one beside ckrv-api)"
        ),
    })?;
    tracing::info!(orchestrator = %path.display(), "jobs run as local worker processes");
    Ok(path)
}

impl KubernetesArgs {
    async fn config(self) -> anyhow::Result<DispatcherConfig> {
        let worker_image = self.worker_image.context(
            "--dispatcher kubernetes needs --worker-image (the ckrv-orchestrator image)",
        )?;
        let worker_api_url = self.worker_api_url.context(
            "--dispatcher kubernetes needs --worker-api-url, the URL job pods reach this API at",
        )?;
        // Everything but the namespace is checked before the cluster is asked anything.
        let mut settings = KubernetesSettings::new(
            self.namespace.as_deref().unwrap_or("default"),
            &worker_image,
            &worker_api_url,
            0,
        );
        settings.agent_images = self.agent_image.into_iter().collect();
        settings.worker_resources = Resources {
            cpu: self.worker_cpu,
            memory: self.worker_memory,
        };
        settings.agent_resources = Resources {
            cpu: self.agent_cpu,
            memory: self.agent_memory,
        };
        settings.workspace_size = self.workspace_size;
        settings.job_ttl = self.job_ttl;
        settings.image_pull_secrets = self.image_pull_secret;
        settings.api_pod_labels = self.api_pod_label.into_iter().collect();
        settings.job_labels = self.job_label.into_iter().collect();
        settings.worker_service_account = self.worker_service_account;
        settings.dns_namespace = self.dns_namespace;
        settings.dns_pod_labels = self.dns_pod_label.into_iter().collect();
        settings.scheduling = Scheduling {
            node_selector: self.job_node_selector.into_iter().collect(),
            tolerations: self.job_toleration,
            priority_class: self.job_priority_class,
            schedule_timeout: self.job_schedule_timeout,
        };
        settings.check()?;
        let client = kube::Client::try_default().await.context(
            "connecting to Kubernetes: in a pod this uses its service account; elsewhere set KUBECONFIG",
        )?;
        let own = client.default_namespace().to_string();
        let namespace = self.namespace.unwrap_or_else(|| own.clone());
        settings.namespace.clone_from(&namespace);
        settings.api_namespace = (own != namespace).then_some(own);
        check_access(&client, &namespace).await.context(
            "the API's service account needs the chart's Role (Jobs, Pods, Secrets, NetworkPolicies)",
        )?;
        tracing::info!(namespace, worker_image, "jobs run as Kubernetes Jobs");
        Ok(DispatcherConfig::Kubernetes(Box::new(KubernetesConfig {
            client,
            settings,
            egress_proxy_listen: self.egress_proxy_listen,
        })))
    }
}
