//! Where the administration commands find the server's data: the directory, the database and
//! the key file, as `serve` names them.

use std::path::PathBuf;

use anyhow::Context as _;
use ckrv_api::store::{Database, Store};
use clap::Args;

#[derive(Args)]
pub(crate) struct DataDir {
    /// Directory for the secrets key, artifacts, worker logs and the SQLite database
    #[arg(long, env = "CKRV_API_DATA_DIR", default_value = "ckrv-data")]
    pub(crate) data_dir: PathBuf,
    /// The database: postgres://user:password@host/db to share one among replicas, or
    /// sqlite:PATH [default: ckrv.db in the data directory]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// The key file that seals stored git credentials (`<id> <64 hex digits>` lines, the last
    /// active; readable by its owner only) [default: secrets.key in the data directory,
    /// created on first start]
    #[arg(long, env = "CKRV_API_SECRETS_KEY_FILE", value_name = "PATH")]
    pub(crate) secrets_key_file: Option<PathBuf>,
}

impl DataDir {
    /// The key file in use.
    pub(crate) fn key_file(&self) -> PathBuf {
        self.secrets_key_file.clone().unwrap_or_else(|| {
            self.data_dir
                .join(ckrv_api::credentials::secrets::DEFAULT_KEY_FILE)
        })
    }
}

impl DataDir {
    pub(crate) fn database(&self) -> anyhow::Result<Database> {
        let Some(url) = &self.database_url else {
            return Ok(Database::Sqlite(
                self.data_dir.join(ckrv_api::data_dir::DATABASE),
            ));
        };
        let database = Database::from_url(url)?;
        let from_argv = std::env::var("DATABASE_URL").ok().as_ref() != Some(url);
        if from_argv && database.has_password() {
            tracing::warn!(
                "the database password in --database-url is visible to every process list; \
                 put it in PGPASSWORD, ~/.pgpass or DATABASE_URL instead"
            );
        }
        Ok(database)
    }
}

#[derive(Args)]
pub(crate) struct LinkBase {
    /// Base URL for the link printed [default: the one `serve` last recorded]
    #[arg(long, env = "CKRV_API_PUBLIC_URL", value_name = "URL")]
    pub(crate) public_url: Option<String>,
}

pub(crate) async fn open(data: &DataDir) -> anyhow::Result<Store> {
    let database = data.database()?;
    let sqlite = matches!(database, Database::Sqlite(_));
    ckrv_api::data_dir::prepare(&data.data_dir, sqlite)
        .with_context(|| format!("preparing data directory {}", data.data_dir.display()))?;
    Ok(Store::open(&database).await?)
}
