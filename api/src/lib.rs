//! `ckrv-api`: the Chakravarti control plane. It issues sessions through the device flow,
//! accepts jobs, hands each to a worker through a [`dispatch::Dispatcher`], and stores what the
//! worker reports (phases, logs, the diff) for the CLI to read.
//!
//! The embedded default needs nothing installed: a SQLite file, an artifact directory and local
//! `ckrv-orchestrator` processes, all under one data directory.

pub mod artifacts;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod quota;
pub mod routes;
pub mod state;
pub mod store;

pub use config::{Config, DispatcherConfig};

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

/// A bound, ready-to-serve API.
pub struct Server {
    listener: tokio::net::TcpListener,
    url: String,
    state: state::AppState,
}

impl Server {
    /// Opens the data directory (creating and migrating it if needed) and binds the listener.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
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
        let store = store::Store::open(&config.data_dir.join("ckrv.db")).await?;
        let artifacts = artifacts::ArtifactStore::local(&config.data_dir.join("artifacts"))?;
        let events = events::JobEvents::new();
        let dispatcher: Arc<dyn dispatch::Dispatcher> = match &config.dispatcher {
            DispatcherConfig::Local { orchestrator } => Arc::new(dispatch::LocalProcess::new(
                orchestrator.clone(),
                url.clone(),
                config.data_dir.join("workers"),
                store.clone(),
                events.clone(),
            )),
            DispatcherConfig::External => Arc::new(dispatch::External),
            DispatcherConfig::Custom(dispatcher) => Arc::clone(dispatcher),
        };
        let state = state::AppState {
            store,
            artifacts,
            dispatcher,
            events,
            public_url,
        };
        Ok(Self {
            listener,
            url,
            state,
        })
    }

    /// The URL this server answers on (loopback when bound to every interface).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Serves until the future is dropped.
    pub async fn run(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = routes::router(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
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
