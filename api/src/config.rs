//! How the service is configured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::dispatch::Dispatcher;
use crate::jobs::engine::EngineSettings;
use crate::store::Database;

/// Runtime configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Holds the secrets key, the artifact directory, worker logs and (by default) the
    /// SQLite database.
    pub data_dir: PathBuf,
    /// Where the rows live: SQLite in the data directory unless a PostgreSQL URL was given.
    pub database: Database,
    /// Where diffs and archived logs go: `<data dir>/artifacts` unless set.
    pub artifacts: Option<crate::jobs::artifacts::ArtifactLocation>,
    pub dispatcher: DispatcherConfig,
    /// The base URL people and CLIs use (for the activation link); defaults to the bound URL.
    pub public_url: Option<String>,
    /// Where people upgrade their subscription; named in quota errors when set.
    pub billing_url: Option<String>,
    /// Let jobs clone local paths, `file://`, `http://` and loopback or private hosts: for
    /// development on one machine only.
    pub allow_local_repos: bool,
    /// Where a job's result goes when neither the request nor the spec says (`--publish`).
    pub default_publish: ckrv_wit::types::PublishMode,
    /// Run agents without their sandbox (the orchestrator says so in every job's log).
    pub insecure_no_sandbox: bool,
    /// Agent programs installed outside /usr, for local workers.
    pub agent_bin: Option<PathBuf>,
    /// The size of a local worker's agent `/tmp` and `/dev/shm`, in MiB; the worker's own
    /// default (1 GiB) when `None`.
    pub agent_tmp_mb: Option<u64>,
    /// How long a finished job's diff and log are kept.
    pub retention: std::time::Duration,
    /// When finished jobs' logs move to the artifact store.
    pub log_archive: crate::jobs::log_archive::ArchiveSettings,
    /// How often a log follower re-reads when nothing woke it.
    pub follow_recheck: std::time::Duration,
    /// Where local workers make their jobs' workspaces; the system's temporary directory when
    /// `None`.
    pub work_dir: Option<PathBuf>,
    /// Single sign-on through an OpenID Connect provider.
    pub sso: Option<crate::identity::sso::SsoConfig>,
    /// Worker leases and job deadlines.
    pub engine: EngineSettings,
    /// The pipeline, agents and agent secrets handed to workers.
    pub workers: Arc<crate::dispatch::worker_setup::WorkerSetup>,
    /// The key file for secrets at rest; `secrets.key` in the data directory, made on first
    /// start, when `None`.
    pub secrets_key_file: Option<PathBuf>,
    /// What model tokens cost: the built-in table, or the operator's entries over it.
    pub model_prices: Arc<crate::gateway::PriceTable>,
    /// The model gateway's upstreams by route name, in place of the agents' own (tests run
    /// against stand-ins on loopback).
    pub model_upstreams: std::collections::BTreeMap<String, String>,
    /// The most a job, and an account's jobs in a month, may spend on models, by tier.
    pub model_budgets: Arc<crate::identity::quota::ModelBudgets>,
}

/// How long results are kept unless the operator says otherwise: 30 days.
pub const DEFAULT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 60 * 60);

impl Config {
    /// The embedded default's settings on `listen` and `data_dir`, workers started by
    /// `dispatcher`; everything else off.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, dispatcher: DispatcherConfig) -> Self {
        Self {
            listen,
            database: Database::Sqlite(data_dir.join(crate::data_dir::DATABASE)),
            data_dir,
            artifacts: None,
            dispatcher,
            public_url: None,
            billing_url: None,
            allow_local_repos: false,
            default_publish: ckrv_wit::types::PublishMode::None,
            insecure_no_sandbox: false,
            agent_bin: None,
            agent_tmp_mb: None,
            work_dir: None,
            follow_recheck: crate::jobs::events::DEFAULT_RECHECK,
            retention: DEFAULT_RETENTION,
            log_archive: crate::jobs::log_archive::ArchiveSettings::default(),
            sso: None,
            engine: EngineSettings::default(),
            workers: Arc::default(),
            secrets_key_file: None,
            model_prices: Arc::default(),
            model_upstreams: std::collections::BTreeMap::new(),
            model_budgets: Arc::default(),
        }
    }
}

/// Who runs the jobs.
#[derive(Clone)]
pub enum DispatcherConfig {
    /// Start `ckrv-orchestrator` as a child process per job.
    Local { orchestrator: PathBuf },
    /// Start nothing: jobs wait for a worker started elsewhere.
    External,
    /// A Kubernetes Job per job, through this client, made as the settings say.
    Kubernetes(Box<KubernetesConfig>),
    /// A dispatcher supplied by the embedding program.
    Custom(Arc<dyn Dispatcher>),
}

/// The cluster jobs run on and how their pods are made. The server fills in what it knows
/// itself: the port its pods listen on, the job timeout and the local-repository flag.
#[derive(Clone)]
pub struct KubernetesConfig {
    pub client: kube::Client,
    pub settings: crate::dispatch::KubernetesSettings,
    /// Where the egress proxy for job pods listens (`--egress-proxy-listen`): without it, an
    /// agent in a pod reaches the gateway alone.
    pub egress_proxy_listen: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for DispatcherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { orchestrator } => f
                .debug_struct("Local")
                .field("orchestrator", orchestrator)
                .finish(),
            Self::External => f.write_str("External"),
            Self::Kubernetes(k) => f
                .debug_struct("Kubernetes")
                .field("namespace", &k.settings.namespace)
                .finish_non_exhaustive(),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}
