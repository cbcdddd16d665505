//! `ckrv-api`: the Chakravarti control plane. It issues sessions through the device flow,
//! accepts jobs, hands each to a worker through a [`dispatch::Dispatcher`], and stores what the
//! worker reports (phases, logs, the diff) for the CLI to read.
//!
//! The embedded default needs nothing installed: a SQLite file, an artifact directory and local
//! `ckrv-orchestrator` processes, all under one data directory.

pub mod clock;
pub mod config;
pub mod console;
pub mod credentials;
pub mod data_dir;
pub mod dispatch;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod jobs;
pub mod metrics;
pub mod ops;
pub mod private_file;
pub mod route;
pub mod router;
pub mod state;
pub mod store;
pub mod webhooks;

pub use config::{Config, DispatcherConfig, KubernetesConfig};

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

/// How long requests in flight may take to finish once the server is asked to stop.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A bound, ready-to-serve API.
pub struct Server {
    listener: tokio::net::TcpListener,
    url: String,
    state: state::AppState,
    /// On PostgreSQL: where to listen for other replicas, and this one's changes to announce.
    relay: Option<(url::Url, tokio::sync::mpsc::UnboundedReceiver<String>)>,
    /// How long finished jobs' results are kept.
    retention: std::time::Duration,
    log_archive: jobs::log_archive::ArchiveSettings,
    /// The egress proxy for job pods (Kubernetes), serving while the server lives.
    egress_proxy: Option<ckrv_agents::egress::SharedEgressProxy>,
    /// Sends webhook deliveries from the outbox while the server lives.
    webhook_sender: webhooks::sender::Sender,
}

impl Server {
    /// Opens the data directory (creating and migrating it if needed) and binds the listener.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let sqlite = matches!(config.database, store::Database::Sqlite(_));
        data_dir::prepare(&config.data_dir, sqlite)
            .with_context(|| format!("preparing data directory {}", config.data_dir.display()))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let url = format!("http://{}", reachable(addr));
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| url.clone())
            .trim_end_matches('/')
            .to_string();
        let store = store::Store::open(&config.database).await?;
        tracing::info!(database = %config.database.describe(), "database ready");
        store.set_setting("public_url", &public_url).await?;
        let (key_file, secrets, created) = match &config.secrets_key_file {
            // The operator's own file: it must be there, and private.
            Some(path) => (
                path.clone(),
                credentials::secrets::SecretKeys::load(path)?,
                false,
            ),
            None => {
                let path = config.data_dir.join(credentials::secrets::DEFAULT_KEY_FILE);
                let (keys, created) = credentials::secrets::SecretKeys::load_or_create(&path)?;
                (path, keys, created)
            }
        };
        if created {
            tracing::warn!(
                path = %key_file.display(),
                "created a new key for secrets at rest; back it up: stored git credentials cannot be read without it"
            );
        }
        let location = config.artifacts.clone().unwrap_or_else(|| {
            jobs::artifacts::ArtifactLocation::Directory(config.data_dir.join("artifacts"))
        });
        let artifacts = jobs::artifacts::ArtifactStore::open(&location)?;
        match artifacts.check().await {
            Ok(()) => tracing::info!(artifacts = %location.describe(), "artifact store ready"),
            // Started anyway: /readyz says not ready until the store answers.
            Err(error) => tracing::error!(
                artifacts = %location.describe(), %error,
                "the artifact store does not answer; /readyz reports not ready until it does"
            ),
        }
        let (events, relay) = match &config.database {
            store::Database::Postgres(url) => {
                let (events, outbox) = jobs::events::JobEvents::with_outbox(config.follow_recheck);
                (events, Some((url.clone(), outbox)))
            }
            store::Database::Sqlite(_) => {
                (jobs::events::JobEvents::new(config.follow_recheck), None)
            }
        };
        let metrics = Arc::new(metrics::Metrics::default());
        let (exits_tx, exits) = tokio::sync::mpsc::unbounded_channel();
        let mut pod_egress = None;
        let dispatcher: Arc<dyn dispatch::Dispatcher> = match &config.dispatcher {
            DispatcherConfig::Local { orchestrator } => {
                let workers = dispatch::LocalWorkers {
                    orchestrator: orchestrator.clone(),
                    api_url: url.clone(),
                    log_dir: config.data_dir.join("workers"),
                    work_root: config.work_dir.clone(),
                    allow_local_repos: config.allow_local_repos,
                    insecure_no_sandbox: config.insecure_no_sandbox,
                    agent_bin: config.agent_bin.clone(),
                    agent_tmp_mb: config.agent_tmp_mb,
                    compile_cache: config.data_dir.join("compiled-steps"),
                };
                workers.check()?;
                Arc::new(dispatch::LocalProcess::new(workers, exits_tx))
            }
            DispatcherConfig::External => Arc::new(dispatch::External),
            DispatcherConfig::Kubernetes(kubernetes) => {
                let mut settings = kubernetes.settings.clone();
                settings.api_port = addr.port();
                settings.job_timeout = config.engine.job_timeout;
                settings.allow_local_repos = config.allow_local_repos;
                settings.check()?;
                dispatch::kubernetes::check_pipeline(&config.workers.pipeline)?;
                if let Some(listen) = kubernetes.egress_proxy_listen {
                    let listener = tokio::net::TcpListener::bind(listen)
                        .await
                        .with_context(|| format!("binding the egress proxy's {listen}"))?;
                    settings.egress_proxy_port = Some(listener.local_addr()?.port());
                    let gateway = ckrv_agents::Entry::origin_of(&settings.worker_api_url)
                        .context("--worker-api-url as the egress proxy's gateway")?;
                    pod_egress = Some((listener, gateway));
                }
                dispatch::kubernetes::check_egress(&config.workers, pod_egress.is_some())?;
                Arc::new(dispatch::KubernetesDispatcher::new(
                    kubernetes.client.clone(),
                    settings,
                    store.clone(),
                    Arc::clone(&config.workers),
                    exits_tx,
                    Arc::clone(&metrics),
                ))
            }
            DispatcherConfig::Custom(dispatcher) => Arc::clone(dispatcher),
        };
        let egress_proxy = match pod_egress {
            Some((listener, gateway)) => {
                let admission = gateway::egress::PodEgress {
                    store: store.clone(),
                    workers: Arc::clone(&config.workers),
                    gateway,
                };
                let proxy = ckrv_agents::egress::SharedEgressProxy::start(listener, admission)?;
                tracing::info!(address = %proxy.local_addr(), "egress proxy for job pods");
                Some(proxy)
            }
            None => None,
        };
        let sso = match &config.sso {
            Some(sso) => Some(Arc::new(identity::sso::Sso::new(sso.clone(), &public_url)?)),
            None => None,
        };
        let engine = jobs::engine::JobEngine::new(
            store.clone(),
            events.clone(),
            dispatcher,
            config.engine,
            exits,
        );
        let cookie_key = axum_extra::extract::cookie::Key::from(
            secrets.derive("ckrv web session cookies").as_slice(),
        );
        let secrets = Arc::new(credentials::secrets::KeyRing::new(key_file, secrets));
        let webhook_sender = webhooks::sender::Sender {
            store: store.clone(),
            secrets: Arc::clone(&secrets),
            client: webhooks::target::client(config.allow_local_repos)
                .context("building the webhooks' HTTP client")?,
            events: events.clone(),
            metrics: Arc::clone(&metrics),
        };
        let state = state::AppState {
            identity: identity::IdentityState {
                store: store.clone(),
                limits: Arc::new(identity::limits::Limits::default()),
                cookie_key,
                public_url,
                sso,
            },
            gateway: gateway::GatewayState {
                store: store.clone(),
                workers: Arc::clone(&config.workers),
                engine: engine.clone(),
                prices: Arc::clone(&config.model_prices),
                upstreams: Arc::new(config.model_upstreams.clone()),
                client: gateway::client().context("building the model gateway's HTTP client")?,
                metrics: Arc::clone(&metrics),
                budgets: Arc::clone(&config.model_budgets),
            },
            jobs: jobs::JobsState {
                store: store.clone(),
                artifacts: artifacts.clone(),
                engine,
                events: events.clone(),
                workers: Arc::clone(&config.workers),
                model_budgets: Arc::clone(&config.model_budgets),
                secrets: Arc::clone(&secrets),
                metrics: Arc::clone(&metrics),
                allow_local_repos: config.allow_local_repos,
                default_publish: config.default_publish,
                billing_url: config.billing_url.clone(),
            },
            credentials: credentials::CredentialsState {
                store: store.clone(),
                secrets: Arc::clone(&secrets),
            },
            webhooks: webhooks::WebhooksState {
                store: store.clone(),
                secrets: Arc::clone(&secrets),
                allow_internal: config.allow_local_repos,
                events: events.clone(),
            },
            ops: ops::OpsState {
                store,
                artifacts,
                events,
                metrics,
            },
        };
        Ok(Self {
            listener,
            url,
            state,
            relay,
            retention: config.retention,
            log_archive: config.log_archive,
            egress_proxy,
            webhook_sender,
        })
    }

    /// The URL this server answers on (loopback when bound to every interface).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Where the egress proxy for job pods listens, when it runs.
    pub fn egress_proxy_addr(&self) -> Option<SocketAddr> {
        self.egress_proxy.as_ref().map(|proxy| proxy.local_addr())
    }

    /// Serves until the future is dropped.
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// With no administrator yet, a one-time link at which the first one signs up.
    pub async fn first_admin_link(&self) -> anyhow::Result<Option<String>> {
        let identity = &self.state.identity;
        if identity.store.has_admin().await? {
            return Ok(None);
        }
        Ok(Some(
            identity::accounts::setup_link(&identity.store, None, &identity.public_url).await?,
        ))
    }

    /// Serves until `shutdown` resolves, then ends log streams and finishes the requests in
    /// flight, for at most [`SHUTDOWN_GRACE`]. Jobs need nothing: their state is in the
    /// database, and a worker that stops with this process loses its lease and its job is
    /// re-queued or failed "worker lost" by the next start.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Dropped with this future (a JoinSet aborts its tasks), so a server that is dropped
        // rather than shut down leaves no reaper behind to act on a database it no longer owns.
        let mut background = tokio::task::JoinSet::new();
        let job_state = &self.state.jobs;
        background.spawn(purge_expired(
            job_state.store.clone(),
            self.state.identity.limits.clone(),
        ));
        background.spawn(jobs::engine::run_reaper(job_state.engine.clone()));
        if let Some(dispatcher_work) = job_state.engine.dispatcher_background() {
            background.spawn(dispatcher_work);
        }
        background.spawn(jobs::log_archive::run(
            job_state.store.clone(),
            job_state.artifacts.clone(),
            self.log_archive,
        ));
        background.spawn(jobs::retention::run(
            job_state.store.clone(),
            job_state.artifacts.clone(),
            self.retention,
        ));
        background.spawn(self.webhook_sender.run());
        if let Some((url, outbox)) = self.relay {
            background.spawn(jobs::events::postgres::relay(
                url,
                job_state.store.clone(),
                job_state.events.clone(),
                outbox,
            ));
        }
        let events = job_state.events.clone();
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signal = {
            let stopping = Arc::clone(&stopping);
            async move {
                shutdown.await;
                tracing::info!("stopping: no new connections; ending log streams");
                events.stop();
                stopping.notify_one();
            }
        };
        let app = router::router(self.state);
        // Log streams and the model gateway's answers are small writes that must go out as
        // they come: no Nagle delay waiting for the client's (delayed) ACK.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
        });
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal);
        let outcome = tokio::select! {
            served = served => served,
            () = async {
                stopping.notified().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!(
                    grace = ?SHUTDOWN_GRACE,
                    "requests still in flight after the grace period; stopping anyway"
                );
                Ok(())
            }
        };
        background.abort_all();
        Ok(outcome?)
    }
}

/// Deletes expired device codes, web sessions and setup links every minute, so a flood of
/// device authorizations cannot grow the database without bound.
async fn purge_expired(store: store::Store, limits: Arc<identity::limits::Limits>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        let now = clock::millis(clock::now());
        if let Err(error) = store.purge_device_codes(now).await {
            tracing::warn!(%error, "purging expired device codes");
        }
        if let Err(error) = store.purge_web(now).await {
            tracing::warn!(%error, "purging expired web sessions");
        }
        let day_ago = now - jobs::routes::jobs::IDEMPOTENCY_WINDOW_MS;
        if let Err(error) = store.purge_idempotency_keys(day_ago).await {
            tracing::warn!(%error, "purging old idempotency keys");
        }
        limits.forget_idle();
    }
}

/// Workers started on this machine reach an any-address listener through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}
