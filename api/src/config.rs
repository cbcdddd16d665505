//! How the service is configured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::dispatch::Dispatcher;

/// Runtime configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Holds the SQLite database, the artifact directory and worker logs.
    pub data_dir: PathBuf,
    pub dispatcher: DispatcherConfig,
    /// The base URL people and CLIs use (for the activation link); defaults to the bound URL.
    pub public_url: Option<String>,
}

/// Who runs the jobs.
#[derive(Clone)]
pub enum DispatcherConfig {
    /// Start `ckrv-orchestrator` as a child process per job.
    Local { orchestrator: PathBuf },
    /// Start nothing: jobs wait for a worker started elsewhere.
    External,
    /// A dispatcher supplied by the embedding program.
    Custom(Arc<dyn Dispatcher>),
}

impl std::fmt::Debug for DispatcherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { orchestrator } => f
                .debug_struct("Local")
                .field("orchestrator", orchestrator)
                .finish(),
            Self::External => f.write_str("External"),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}
