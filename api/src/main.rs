//! `ckrv-api`: the control plane's command line: `serve`, and `users` for administrators.

use std::io::{IsTerminal as _, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ckrv_api::identity::accounts::NewUser;
use ckrv_api::identity::admin;
use ckrv_api::store::{Account, Database, Store};
use ckrv_wit::types::SubscriptionTier;
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

mod cli;

#[derive(Parser)]
#[command(name = "ckrv-api", version, about = "The Chakravarti control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (prints `listening on URL` once ready).
    Serve(Box<ServeArgs>),
    /// Manage accounts: add, list, change tier, disable, issue tokens for CI
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage the credentials of external workers (`ckrv-orchestrator work` on other machines)
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Manage the keys that seal stored git credentials: rotate, list, retire
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new active key and re-encrypt every stored credential under it (restart
    /// `serve` afterwards so it seals new credentials with it too)
    Rotate {
        #[command(flatten)]
        data: DataDir,
    },
    /// List the keys, oldest first: id, whether active, how many credentials each seals
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Remove an old key from the file, once no credential is sealed under it
    Retire {
        /// The key's id (see `ckrv-api keys list`)
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Subcommand)]
enum WorkersCommand {
    /// Issue a credential for a worker; it is printed once, alone on stdout
    Add {
        /// What to call the worker (letters, digits, '-', '_', '.')
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// List the workers' credentials: name, when issued, when last used to claim
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Revoke a worker's credential at once, and the tokens of the jobs it is running (the
    /// server re-queues each, or fails it if it got past cloning)
    Remove {
        name: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "CKRV_API_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    data: DataDir,
    /// Where diffs and archived logs go: s3://BUCKET/PREFIX (credentials and region from the
    /// standard AWS_* environment variables) or a directory [default: DATA_DIR/artifacts]
    #[arg(long, env = "CKRV_API_ARTIFACTS", value_name = "LOCATION")]
    artifacts: Option<String>,
    /// An S3-compatible server other than AWS (MinIO, Ceph, R2 …) for s3:// artifacts
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        value_name = "URL",
        requires = "artifacts"
    )]
    artifacts_endpoint: Option<String>,
    #[command(flatten)]
    dispatcher: cli::dispatcher::DispatcherArgs,
    /// Base URL people use to reach this API (for the activation link).
    #[arg(long, env = "CKRV_API_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where people upgrade their subscription; quota errors link to it.
    #[arg(long, env = "CKRV_API_BILLING_URL", value_name = "URL")]
    billing_url: Option<String>,
    /// Let jobs clone local paths, file://, http:// and loopback or private hosts (for
    /// development on one machine; never on a shared server)
    #[arg(long)]
    allow_local_repos: bool,
    /// Run agents without their bubblewrap sandbox, with the worker's rights (every job's
    /// log says so); only where no one else's job runs
    #[arg(long)]
    insecure_no_sandbox: bool,
    /// A job running longer than this ends `timeout`, its processes killed and its
    /// workspace removed (e.g. 30m, 2h)
    #[arg(long, env = "CKRV_API_JOB_TIMEOUT", default_value = "1h", value_parser = duration)]
    job_timeout: Duration,
    /// A worker silent for this long is lost: its job fails, or waits for another worker
    /// if it had not got past cloning
    #[arg(long, env = "CKRV_API_WORKER_LEASE", default_value = "30s", value_parser = duration)]
    worker_lease: Duration,
    /// At most this many jobs run at once; more wait `pending` (phase `queued`) and start in
    /// the order they came as jobs end [default: the number of CPU cores]
    #[arg(long, env = "CKRV_API_MAX_RUNNING", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_running: Option<u32>,
    /// At most this many of one account's jobs run at once [default: --max-running]
    #[arg(long, env = "CKRV_API_MAX_RUNNING_PER_ACCOUNT", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_running_per_account: Option<u32>,
    /// A finished job's diff and log are removed this long after it ended (the job stays
    /// listed, and asking for them says they expired)
    #[arg(long, env = "CKRV_API_RETENTION", default_value = "30d", value_parser = duration)]
    retention: Duration,
    /// A job's log keeps this many lines; later ones are dropped and the log says so
    #[arg(long, env = "CKRV_API_MAX_LOG_LINES", value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_log_lines: u64,
    /// Where local workers make their jobs' workspaces, one directory each, removed when
    /// the worker ends [default: the system's temporary directory]
    #[arg(long, env = "CKRV_API_WORK_DIR", value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The job pipeline every worker runs (TOML; see docs/steps.md): checked at start, its
    /// component files handed to workers by digest [default: clone, agent, diff, upload]
    #[arg(long, env = "CKRV_API_PIPELINE", value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// The only agents jobs may ask for, comma-separated (e.g. claude-code,script); a spec
    /// naming another is refused when it is submitted [default: every built-in agent]
    #[arg(
        long,
        env = "CKRV_API_AGENTS",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    agents: Option<Vec<String>>,
    /// The agents' API keys: a file of NAME=value lines, or a directory with one file per
    /// secret (a mounted Kubernetes Secret); readable by this user only. Each agent gets only
    /// the ones its definition declares
    #[arg(long, env = "CKRV_API_AGENT_SECRETS", value_name = "FILE|DIR")]
    agent_secrets: Option<PathBuf>,
    /// A directory of agent programs installed outside /usr (e.g. /opt/agents/bin), searched
    /// first by local workers' agents, read-only in their sandbox
    #[arg(long, env = "CKRV_API_AGENT_BIN", value_name = "DIR")]
    agent_bin: Option<PathBuf>,
    /// The size of each local worker's agent /tmp (its HOME) and /dev/shm, in MiB: memory of
    /// this machine; a write past it fails with "No space left on device" [default: 1024]
    #[arg(long, env = "CKRV_API_AGENT_TMP_MB", value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=ckrv_agents::MAX_TMP_MIB))]
    agent_tmp_mb: Option<u64>,
    #[command(flatten)]
    sso: SsoArgs,
}

/// Single sign-on through the team's OpenID Connect provider.
#[derive(Args)]
struct SsoArgs {
    /// The provider's issuer URL (its discovery document lives below it)
    #[arg(long, env = "CKRV_API_SSO_ISSUER", value_name = "URL")]
    sso_issuer: Option<String>,
    /// The client id this server is registered with at the provider
    #[arg(long, env = "CKRV_API_SSO_CLIENT_ID", requires = "sso_issuer")]
    sso_client_id: Option<String>,
    /// A file (mode 0600) holding the client secret, for a confidential client
    #[arg(long, env = "CKRV_API_SSO_CLIENT_SECRET_FILE", value_name = "FILE")]
    sso_client_secret_file: Option<PathBuf>,
    /// An email domain whose people get an account on first sign-on (repeat it); others need
    /// an account an administrator added
    #[arg(long = "sso-allow-domain", value_name = "DOMAIN")]
    sso_allow_domains: Vec<String>,
    /// What the sign-in page calls the provider
    #[arg(long, default_value = "single sign-on")]
    sso_name: String,
}

impl SsoArgs {
    fn config(self) -> anyhow::Result<Option<ckrv_api::identity::sso::SsoConfig>> {
        let Some(issuer) = self.sso_issuer else {
            return Ok(None);
        };
        let client_id = self
            .sso_client_id
            .context("--sso-issuer needs --sso-client-id")?;
        let client_secret = match self.sso_client_secret_file {
            Some(path) => Some(read_secret_file(&path)?),
            None => None,
        };
        Ok(Some(ckrv_api::identity::sso::SsoConfig {
            name: self.sso_name,
            issuer,
            client_id,
            client_secret,
            allowed_domains: self.sso_allow_domains,
        }))
    }
}

/// A secret from a file only its owner can read, without its line end.
fn read_secret_file(path: &std::path::Path) -> anyhow::Result<Zeroizing<String>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(mode) = ckrv_api::private_file::exposure(path, &meta) {
        anyhow::bail!(
            "{} can be read by other users (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_string(),
    ))
}

#[derive(Args)]
struct DataDir {
    /// Directory for the secrets key, artifacts, worker logs and the SQLite database
    #[arg(long, env = "CKRV_API_DATA_DIR", default_value = "ckrv-data")]
    data_dir: PathBuf,
    /// The database: postgres://user:password@host/db to share one among replicas, or
    /// sqlite:PATH [default: ckrv.db in the data directory]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The key file that seals stored git credentials (`<id> <64 hex digits>` lines, the last
    /// active; readable by its owner only) [default: secrets.key in the data directory,
    /// created on first start]
    #[arg(long, env = "CKRV_API_SECRETS_KEY_FILE", value_name = "PATH")]
    secrets_key_file: Option<PathBuf>,
}

impl DataDir {
    /// The key file in use.
    fn key_file(&self) -> PathBuf {
        self.secrets_key_file.clone().unwrap_or_else(|| {
            self.data_dir
                .join(ckrv_api::credentials::secrets::DEFAULT_KEY_FILE)
        })
    }
}

impl DataDir {
    fn database(&self) -> anyhow::Result<Database> {
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
struct LinkBase {
    /// Base URL for the link printed [default: the one `serve` last recorded]
    #[arg(long, env = "CKRV_API_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add an account; without --password-stdin it prints a one-time link to set a password
    Add {
        email: String,
        /// How the person is addressed [default: the email's local part]
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "free", value_parser = tier)]
        tier: SubscriptionTier,
        /// May administer the service
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (never pass it as an argument)
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        link: LinkBase,
        #[command(flatten)]
        data: DataDir,
    },
    /// List every account
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Change an account's subscription tier (it sets the monthly quota)
    SetTier {
        email: String,
        #[arg(value_parser = tier)]
        tier: SubscriptionTier,
        #[command(flatten)]
        data: DataDir,
    },
    /// Disable an account: its tokens are revoked and its web sessions end at once (enabling
    /// it again does not bring them back)
    Disable {
        email: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Enable a disabled account again; it signs in anew and gets new tokens
    Enable {
        email: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Print a one-time link at which the account sets a new password
    ResetPassword {
        email: String,
        #[command(flatten)]
        link: LinkBase,
        #[command(flatten)]
        data: DataDir,
    },
    /// Issue a personal access token for CI; prints the token alone on standard output
    Token {
        email: String,
        /// What the token is for
        #[arg(long, default_value = "ci")]
        name: String,
        /// How long it lives, at least a minute: e.g. `90d`, `12h`, or `never`
        #[arg(long, default_value = "90d", value_parser = lifetime)]
        expires: Lifetime,
        #[command(flatten)]
        data: DataDir,
    },
    /// List an account's personal access tokens (never the secrets), each active, expired or
    /// revoked
    Tokens {
        email: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDir,
    },
    /// Revoke a personal access token by its id (`pat_…`)
    RevokeToken {
        email: String,
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Clone, Copy)]
struct Lifetime(Option<Duration>);

/// The shortest lifetime `users token --expires` takes: a token that expires before anyone can
/// use it is a mistake, not a choice.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// `--expires`: a duration of at least [`MIN_TOKEN_LIFETIME`], or `never`.
fn lifetime(text: &str) -> Result<Lifetime, String> {
    if text == "never" {
        return Ok(Lifetime(None));
    }
    match humantime::parse_duration(text) {
        Ok(d) if d >= MIN_TOKEN_LIFETIME => Ok(Lifetime(Some(d))),
        Ok(_) => Err(format!(
            "--expires must be at least {}: give e.g. 90d, 12h or 30m, or `never`",
            humantime::format_duration(MIN_TOKEN_LIFETIME)
        )),
        Err(e) => Err(format!(
            "{e}; give --expires a duration such as 90d or 12h, or `never`"
        )),
    }
}

/// A positive duration such as `90s`, `30m` or `2h`.
fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("give at least one second, e.g. 30s".to_string()),
        Err(e) => Err(format!("{e}; give a duration such as 30s, 30m or 2h")),
    }
}

fn tier(text: &str) -> Result<SubscriptionTier, String> {
    text.parse().map_err(|_| {
        let all: Vec<&str> = SubscriptionTier::ALL.map(SubscriptionTier::as_str).into();
        format!("one of {}", all.join(", "))
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Whatever this process creates (database, artifacts, worker logs) is its user's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::Users(command) => users(command).await,
        Command::Workers(command) => workers(command).await,
        Command::Keys(command) => keys(command).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        listen,
        data,
        artifacts,
        artifacts_endpoint,
        dispatcher,
        public_url,
        billing_url,
        allow_local_repos,
        insecure_no_sandbox,
        job_timeout,
        worker_lease,
        max_running,
        max_running_per_account,
        max_log_lines,
        retention,
        work_dir,
        pipeline,
        agents,
        agent_secrets,
        agent_bin,
        agent_tmp_mb,
        sso,
    } = args;
    let workers = ckrv_api::dispatch::worker_setup::WorkerSetup::load(
        pipeline.as_deref(),
        agents.as_deref(),
        agent_secrets.as_deref(),
    )?;
    for agent in workers.agents_missing_secrets() {
        tracing::warn!(
            agent,
            "agent enabled without any of its secrets: its jobs will be refused (--agent-secrets)"
        );
    }
    let defaults = ckrv_api::jobs::engine::EngineSettings::default();
    let max_running = max_running.unwrap_or(defaults.admission.max_running);
    let admission = ckrv_api::store::Admission {
        max_running,
        max_running_per_account: max_running_per_account.unwrap_or(max_running),
    };
    let sso = sso.config()?;
    let artifacts = artifacts
        .map(|value| ckrv_api::jobs::artifacts::ArtifactLocation::parse(&value, artifacts_endpoint))
        .transpose()?;
    if insecure_no_sandbox {
        tracing::warn!("--insecure-no-sandbox: agents run with the worker's rights");
    }
    if allow_local_repos {
        tracing::warn!("--allow-local-repos: jobs may clone local paths and internal hosts");
    }
    let dispatcher = dispatcher.config().await?;
    let server = ckrv_api::Server::bind(ckrv_api::Config {
        listen,
        database: data.database()?,
        data_dir: data.data_dir,
        artifacts,
        dispatcher,
        public_url,
        billing_url,
        allow_local_repos,
        insecure_no_sandbox,
        agent_bin,
        agent_tmp_mb,
        work_dir,
        follow_recheck: ckrv_api::jobs::events::DEFAULT_RECHECK,
        retention,
        log_archive: ckrv_api::jobs::log_archive::ArchiveSettings::default(),
        sso,
        engine: ckrv_api::jobs::engine::EngineSettings {
            lease: worker_lease,
            job_timeout,
            admission,
            max_log_lines,
        },
        workers: std::sync::Arc::new(workers),
        secrets_key_file: data.secrets_key_file.clone(),
    })
    .await?;
    println!("listening on {}", server.url());
    if let Some(link) = server.first_admin_link().await? {
        println!("no administrator yet: create the first account at {link}");
        println!("(or run `ckrv-api users add EMAIL --admin --password-stdin`)");
    }
    server.run_until(stop_signal()?).await
}

/// Resolves on SIGTERM (how service managers and Kubernetes stop a process) or SIGINT (^C).
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

async fn open(data: &DataDir) -> anyhow::Result<Store> {
    ckrv_api::data_dir::prepare(&data.data_dir)
        .with_context(|| format!("preparing data directory {}", data.data_dir.display()))?;
    Ok(Store::open(&data.database()?).await?)
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate { data } => {
            let rotation =
                ckrv_api::credentials::keys::rotate_keys(&open(&data).await?, &data.key_file())
                    .await?;
            println!(
                "added key {} (now active); re-encrypted {} credential(s) under it",
                rotation.new_key, rotation.resealed
            );
            if !rotation.older.is_empty() {
                println!(
                    "older keys stay readable until retired: {} (`ckrv-api keys retire ID`)",
                    rotation.older.join(", ")
                );
            }
            eprintln!("restart `ckrv-api serve` so it seals new credentials with the new key");
        }
        KeysCommand::List { data } => {
            for (id, active, count) in
                ckrv_api::credentials::keys::key_usage(&open(&data).await?, &data.key_file())
                    .await?
            {
                let state = if active { "active" } else { "old" };
                println!("{id}  {state:<6}  {count} credential(s)");
            }
        }
        KeysCommand::Retire { id, data } => {
            ckrv_api::credentials::keys::retire_key(&open(&data).await?, &data.key_file(), &id)
                .await?;
            println!("retired key {id}");
        }
    }
    Ok(())
}

async fn workers(command: WorkersCommand) -> anyhow::Result<()> {
    match command {
        WorkersCommand::Add { name, data } => {
            let secret = admin::add_worker(&open(&data).await?, &name).await?;
            eprintln!(
                "issued a credential for worker {name}; it is shown only now. Give it to the \
                 worker on its standard input: ckrv-orchestrator work --api-url URL < FILE"
            );
            println!("{secret}");
        }
        WorkersCommand::List { json, data } => {
            let workers = open(&data).await?.worker_credentials().await?;
            let when = |ms: Option<i64>| {
                ms.and_then(|ms| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
                })
                .map_or_else(|| "never".to_owned(), ckrv_api::clock::rfc3339)
            };
            if json {
                let rows: Vec<serde_json::Value> = workers
                    .iter()
                    .map(|w| {
                        serde_json::json!({
                            "name": w.name,
                            "created_at": when(Some(w.created_ms)),
                            "last_claim_at": w.last_claim_ms.map(|ms| when(Some(ms))),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<32} {:<22} LAST CLAIM", "NAME", "ISSUED");
                for w in &workers {
                    println!(
                        "{:<32} {:<22} {}",
                        w.name,
                        when(Some(w.created_ms)),
                        when(w.last_claim_ms)
                    );
                }
            }
        }
        WorkersCommand::Remove { name, data } => {
            let jobs = admin::remove_worker(&open(&data).await?, &name).await?;
            println!("removed worker {name}; its credential no longer claims jobs");
            if !jobs.is_empty() {
                println!(
                    "revoked its hold on {} running job(s): {}; the server queues each again, \
                     or fails it if it got past cloning",
                    jobs.len(),
                    jobs.join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn users(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add {
            email,
            name,
            tier,
            admin,
            password_stdin,
            link,
            data,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let user = NewUser {
                email,
                name,
                tier,
                admin,
                password,
            };
            let store = open(&data).await?;
            let (account, link) = admin::add_user(&store, user, link.public_url.as_deref()).await?;
            println!("added {}", describe(&account));
            if let Some(link) = link {
                println!("the person sets a password at (once, within 7 days): {link}");
            }
        }
        UsersCommand::List { json, data } => {
            let accounts = open(&data).await?.accounts().await?;
            if json {
                let rows: Vec<serde_json::Value> = accounts.iter().map(account_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<32} {:<16} {:<10} {:<6} {:<9} PASSWORD",
                    "EMAIL", "NAME", "TIER", "ADMIN", "STATUS"
                );
                for a in &accounts {
                    println!(
                        "{:<32} {:<16} {:<10} {:<6} {:<9} {}",
                        a.email,
                        a.name,
                        a.tier,
                        if a.is_admin { "yes" } else { "no" },
                        if a.disabled { "disabled" } else { "enabled" },
                        if a.has_password { "set" } else { "not set" },
                    );
                }
            }
        }
        UsersCommand::SetTier { email, tier, data } => {
            let account = admin::set_tier(&open(&data).await?, &email, tier).await?;
            println!("{}", describe(&account));
        }
        UsersCommand::Disable { email, data } => {
            let account = admin::set_disabled(&open(&data).await?, &email, true).await?;
            println!(
                "disabled {}: its tokens are revoked and its sessions ended",
                account.email
            );
        }
        UsersCommand::Enable { email, data } => {
            let account = admin::set_disabled(&open(&data).await?, &email, false).await?;
            println!(
                "enabled {}: it signs in anew (its old tokens stay revoked)",
                account.email
            );
        }
        UsersCommand::ResetPassword { email, link, data } => {
            let link =
                admin::reset_password(&open(&data).await?, &email, link.public_url.as_deref())
                    .await?;
            println!("{email} sets a new password at (once, within 7 days): {link}");
        }
        UsersCommand::Token {
            email,
            name,
            expires,
            data,
        } => {
            let (id, token) =
                admin::issue_token(&open(&data).await?, &email, &name, expires.0).await?;
            eprintln!("issued {id} for {email}; it is shown once:");
            println!("{token}");
        }
        UsersCommand::Tokens { email, json, data } => {
            let tokens = admin::tokens(&open(&data).await?, &email).await?;
            let when = |ms: i64| ckrv_api::clock::rfc3339(ckrv_api::clock::from_millis(ms));
            let now = ckrv_api::clock::millis(ckrv_api::clock::now());
            if json {
                let rows: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({"id": t.id, "name": t.name, "created_at": when(t.created_ms),
                            "expires_at": t.expires_ms.map(when), "revoked": t.revoked,
                            "status": t.status(now).as_str()})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<18} {:<16} {:<21} {:<21} STATUS",
                    "ID", "NAME", "CREATED", "EXPIRES"
                );
                for t in &tokens {
                    println!(
                        "{:<18} {:<16} {:<21} {:<21} {}",
                        t.id,
                        t.name,
                        when(t.created_ms),
                        t.expires_ms.map_or_else(|| "never".to_string(), when),
                        t.status(now).as_str()
                    );
                }
            }
        }
        UsersCommand::RevokeToken { email, id, data } => {
            admin::revoke_token(&open(&data).await?, &email, &id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// The password from standard input, without the line end a pipe or a terminal adds.
fn read_password() -> anyhow::Result<Zeroizing<String>> {
    let mut input = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(Zeroizing::new(password.to_string()))
}

fn describe(account: &Account) -> String {
    format!(
        "{} ({}, {}{})",
        account.email,
        account.name,
        account.tier,
        if account.is_admin { ", admin" } else { "" }
    )
}

fn account_json(account: &Account) -> serde_json::Value {
    serde_json::json!({
        "id": account.id, "email": account.email, "name": account.name,
        "subscription_tier": account.tier, "admin": account.is_admin,
        "disabled": account.disabled, "password_set": account.has_password,
    })
}
