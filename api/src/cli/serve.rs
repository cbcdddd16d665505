//! `ckrv-api serve`: the HTTP API, its workers and its background chores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ckrv_api::identity::quota;
use clap::Args;
use zeroize::Zeroizing;

use super::data_dir::DataDir;

#[derive(Args)]
pub(crate) struct ServeArgs {
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
    dispatcher: super::dispatcher::DispatcherArgs,
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
    /// Where a job's result goes when neither `ckrv run --publish` nor the spec's front
    /// matter says: `none` (`ckrv pull` only), `branch` (pushed to `ckrv/<id>`), `pr` or
    /// `draft_pr` (pushed, and a pull request opened); docs/publish.md
    #[arg(long, env = "CKRV_API_PUBLISH", default_value = "none", value_name = "MODE",
          value_parser = ckrv_wit::types::PublishMode::parse)]
    publish: ckrv_wit::types::PublishMode,
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
    /// A repository's setup (its .ckrv/environment.toml) running longer than this fails its
    /// job, naming the limit (e.g. 10m)
    #[arg(long, env = "CKRV_API_SETUP_TIMEOUT", default_value = "10m", value_parser = duration)]
    setup_timeout: Duration,
    /// A job's verification (`verify` in its spec or .ckrv/environment.toml) running longer
    /// than this is stopped and the job marked not verified; the job goes on (e.g. 10m)
    #[arg(long, env = "CKRV_API_VERIFY_TIMEOUT", default_value = "10m", value_parser = duration)]
    verify_timeout: Duration,
    /// The largest snapshot of a repository's setup a worker may save, in MiB
    #[arg(long, env = "CKRV_API_MAX_SNAPSHOT_MB", default_value = "2048", value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024))]
    max_snapshot_mb: u64,
    /// What one account's snapshots may hold together, in MiB; the least recently used are
    /// dropped past it
    #[arg(long, env = "CKRV_API_ACCOUNT_SNAPSHOTS_MB", default_value = "10240", value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    account_snapshots_mb: u64,
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
    /// the worker ends, and keep their unpacked copies of setup snapshots (in
    /// ckrv-snapshot-cache/) [default: the system's temporary directory]
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
    /// Where every job's agent may connect, in place of each agent's own policy: none, model
    /// (the model gateway), registries (it and common package registries) or a comma-separated
    /// list of host, host:port and *.domain entries, any of them followed by `;read-only` (only
    /// GET, HEAD and OPTIONS, HTTPS included); a spec may ask for less
    #[arg(long, env = "CKRV_API_EGRESS_ALLOW", value_name = "POLICY")]
    egress_allow: Option<ckrv_agents::Policy>,
    /// The most a repository's setup (.ckrv/environment.toml `egress`) may reach, a policy as
    /// --egress-allow takes it (e.g. registries, or your mirrors' hosts): setup may then reach
    /// what its agent may not [default: each job's own policy]
    #[arg(long, env = "CKRV_API_SETUP_EGRESS_ALLOW", value_name = "POLICY")]
    setup_egress_allow: Option<ckrv_agents::Policy>,
    /// Hosts you run inside your network, such as a package mirror (host:port, comma-separated):
    /// where a policy allows one, it may resolve to a private or loopback address, which every
    /// other entry is refused (so no job reaches this machine's or the network's services)
    #[arg(
        long,
        env = "CKRV_API_EGRESS_INTERNAL",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    egress_internal: Vec<ckrv_agents::Entry>,
    /// What model tokens cost: a TOML file of `[models.NAME]` tables (`input`, `output`: US
    /// dollars per million tokens) whose entries replace the built-in prices by name
    #[arg(long, env = "CKRV_API_MODEL_PRICES", value_name = "FILE")]
    model_prices: Option<PathBuf>,
    /// The most an account's jobs may spend on models in a calendar month (UTC), in US
    /// dollars: USD for every tier, TIER=USD for one (free, pro, enterprise; repeat it, or
    /// separate with commas). Past it the gateway refuses their requests and the job fails,
    /// saying so
    #[arg(long, env = "CKRV_API_MAX_ACCOUNT_MODEL_COST_USD", value_name = "[TIER=]USD",
          value_delimiter = ',', value_parser = quota::parse_budget)]
    max_account_model_cost_usd: Vec<quota::BudgetEntry>,
    /// The most one job may spend on models, in US dollars: USD for every tier, TIER=USD for
    /// one (repeat it, or separate with commas). A spec's max_cost_usd may ask for less; one
    /// that asks for more is refused when it is submitted
    #[arg(long, env = "CKRV_API_MAX_JOB_MODEL_COST_USD", value_name = "[TIER=]USD",
          value_delimiter = ',', value_parser = quota::parse_budget)]
    max_job_model_cost_usd: Vec<quota::BudgetEntry>,
    /// Send the model gateway's ROUTE (anthropic, openai, gemini, ...) to URL instead of the
    /// vendor's API, e.g. a stand-in for tests (repeat it); http only to loopback
    #[arg(long = "model-upstream", value_name = "ROUTE=URL",
          value_parser = ckrv_api::gateway::parse_upstream)]
    model_upstreams: Vec<(String, String)>,
    #[command(flatten)]
    sso: SsoArgs,
}

/// Single sign-on through the team's OpenID Connect provider.
#[derive(Args)]
pub(crate) struct SsoArgs {
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
pub(crate) fn read_secret_file(path: &std::path::Path) -> anyhow::Result<Zeroizing<String>> {
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

/// A positive duration such as `90s`, `30m` or `2h`.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("give at least one second, e.g. 30s".to_string()),
        Err(e) => Err(format!("{e}; give a duration such as 30s, 30m or 2h")),
    }
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        listen,
        data,
        artifacts,
        artifacts_endpoint,
        dispatcher,
        public_url,
        billing_url,
        allow_local_repos,
        publish,
        insecure_no_sandbox,
        job_timeout,
        worker_lease,
        setup_timeout,
        verify_timeout,
        max_snapshot_mb,
        account_snapshots_mb,
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
        model_prices,
        model_upstreams,
        egress_allow,
        setup_egress_allow,
        egress_internal,
        max_account_model_cost_usd,
        max_job_model_cost_usd,
        sso,
    } = args;
    let model_prices = ckrv_api::gateway::PriceTable::load(model_prices.as_deref())?;
    let workers = ckrv_api::dispatch::worker_setup::WorkerSetup::load(
        pipeline.as_deref(),
        agents.as_deref(),
        agent_secrets.as_deref(),
    )?
    .with_egress(egress_allow)?
    .with_setup_egress(setup_egress_allow, egress_internal);
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
        default_publish: publish,
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
            setup_timeout,
            verify_timeout,
            max_snapshot_bytes: max_snapshot_mb * 1024 * 1024,
            account_snapshot_bytes: account_snapshots_mb * 1024 * 1024,
            admission,
            max_log_lines,
        },
        workers: std::sync::Arc::new(workers),
        secrets_key_file: data.secrets_key_file.clone(),
        model_prices: std::sync::Arc::new(model_prices),
        model_upstreams: model_upstreams.into_iter().collect(),
        model_budgets: std::sync::Arc::new(quota::ModelBudgets {
            job: quota::TierBudget::new(max_job_model_cost_usd),
            account_month: quota::TierBudget::new(max_account_model_cost_usd),
        }),
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
pub(crate) fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static>
{
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
