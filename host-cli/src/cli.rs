//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ckrv",
    version,
    about = "Chakravarti: spec-driven coding agents, in the cloud",
    after_help = "Start with `ckrv cloud login`, then `ckrv run --cloud --spec FILE`."
)]
pub struct Cli {
    /// The provider plugin cloud commands go through (`ckrv plugin list` shows them)
    /// [default: `provider` in config.toml, else chakravarti]
    #[arg(long, global = true, env = "CKRV_PROVIDER", value_name = "NAME")]
    pub provider: Option<String>,
    /// The API to talk to [default: from config.toml, else the provider's own, for
    /// chakravarti http://127.0.0.1:8080]
    #[arg(long, global = true, env = "CKRV_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Keep the session in a file (mode 0600) instead of the OS keyring
    #[arg(long, global = true, env = "CKRV_INSECURE_STORAGE")]
    pub insecure_storage: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a spec: on this machine (the result lands in your worktree), or with --cloud on a
    /// cloud worker (returns at once with the job's id)
    Run(RunArgs),
    /// Show a job's status, phase and result, or an attempt group's ranked attempts
    Status(JobArgs),
    /// Print a job's log, or stream it with --follow
    Logs(LogsArgs),
    /// Download a finished job's diff and apply it to this worktree
    Pull(PullArgs),
    /// Print a finished job's diff, checked against its digest, without applying it; for an
    /// attempt group, its best attempt's or --attempt K's
    Diff(DiffArgs),
    /// List your jobs, newest first
    List(ListArgs),
    /// Cancel a job and stop its worker, or every running attempt of a group
    Cancel(JobArgs),
    /// Wait for a job to end. Exit status: 0 succeeded, 1 an error, 2 failed, 3 timed out,
    /// 4 cancelled
    Wait(WaitArgs),
    /// Sign in and out of the cloud and see your account
    #[command(subcommand)]
    Cloud(CloudCommand),
    /// Install, list and remove provider plugins
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Your snapshots of repository setups (.ckrv/environment.toml): list them, drop one so
    /// the next job of its repository runs setup afresh
    #[command(subcommand)]
    Env(EnvCommand),
    /// Print a shell completion script: `ckrv completions bash > /etc/bash_completion.d/ckrv`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs with this status
    #[arg(long, value_parser = ["pending", "running", "succeeded", "failed", "timeout"])]
    pub status: Option<String>,
    /// At most this many jobs
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The job id, or its first characters (at least 4)
    pub id: String,
    /// Give up after this long (e.g. 30m), with exit status 5
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Print the final job as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Install a provider plugin from a file, or from an https URL with its --sha256
    Install(PluginInstallArgs),
    /// List the plugins: name, version, WIT version, source, digest, allowed origins
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove an installed plugin
    Remove {
        /// The plugin's name
        name: String,
    },
    /// The conformance kit: drive a provider through login, dispatch, status, list, logs,
    /// pull and cancel against a live backend with your session, and report each contract
    /// point (exit 1 if any fails)
    Check(PluginCheckArgs),
}

#[derive(Debug, Args)]
pub struct PluginCheckArgs {
    /// The plugin to check
    pub name: String,
    /// The repository the check's job runs on [default: this worktree's `origin`]
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The branch the job starts from
    #[arg(long, value_name = "BRANCH", default_value = "main")]
    pub base_branch: String,
    /// A spec to dispatch instead of the built-in one (which uses the `script` agent)
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PluginInstallArgs {
    /// A .wasm component file, or an https:// URL of one
    pub source: String,
    /// Install under this name instead of the plugin's own
    #[arg(long)]
    pub name: Option<String>,
    /// The file's SHA-256 (hex): required for a URL, checked for a file when given
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Approve the origins the plugin asks to call without a prompt
    #[arg(long, short)]
    pub yes: bool,
    /// Replace an installed plugin of the same name
    #[arg(long)]
    pub force: bool,
    /// Print the manifest as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Dispatch to the provider's cloud workers instead of running here
    #[arg(long)]
    pub cloud: bool,
    /// The spec file; its front matter chooses the agent
    #[arg(long, value_name = "FILE", required_unless_present = "message")]
    pub spec: Option<PathBuf>,
    /// Cloud runs: follow up this finished job: start from its change, on its repository,
    /// base and credential; with --message (its spec and your feedback) or --spec
    #[arg(long = "continue", value_name = "ID", requires = "cloud")]
    pub continue_from: Option<String>,
    /// With --continue: what to do next; the job's prompt is the earlier spec with this
    /// after it
    #[arg(
        long,
        short = 'm',
        value_name = "TEXT",
        requires = "continue_from",
        conflicts_with = "spec"
    )]
    pub message: Option<String>,
    /// The repository's clone URL [default: this worktree's `origin`]
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The branch to start from [default: the current branch]
    #[arg(long, value_name = "BRANCH")]
    pub base_branch: Option<String>,
    /// A stored git credential for a private repository
    #[arg(long, value_name = "NAME")]
    pub credential: Option<String>,
    /// Cloud runs: run the repository's setup (.ckrv/environment.toml) afresh, restoring no
    /// snapshot; the new one is saved
    #[arg(long, requires = "cloud")]
    pub no_snapshot: bool,
    /// Cloud runs: push the result to branch `ckrv/<id>` with the job's credential
    /// (`branch`), and open a pull request for it (`pr`, `draft-pr`); `none` overrides the
    /// spec's `publish:` and the server's default
    #[arg(long, requires = "cloud", value_name = "MODE",
          value_parser = ckrv_wit::types::PublishMode::parse)]
    pub publish: Option<ckrv_wit::types::PublishMode>,
    /// Cloud runs: run the spec this many times per agent, side by side, as an attempt group
    /// ranked by evidence (docs/attempts.md); `ckrv pull GROUP` applies the best
    #[arg(long, value_name = "N", requires = "cloud", conflicts_with = "continue_from",
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub attempts: Option<u32>,
    /// Cloud runs: run the spec with each of these agents (comma-separated), `--attempts`
    /// times each, as one attempt group
    #[arg(
        long,
        value_name = "AGENTS",
        requires = "cloud",
        conflicts_with = "continue_from",
        value_delimiter = ','
    )]
    pub agents: Option<Vec<String>>,
    /// With --attempts or --agents: cancel the other attempts once one passes the project's
    /// check (`verify`, docs/verification.md)
    #[arg(long)]
    pub stop_at_first_verified: bool,
    /// Local runs: a pipeline file as `ckrv-api serve --pipeline` takes [default: the
    /// built-in clone, agent, diff]
    #[arg(long, value_name = "FILE", conflicts_with = "cloud")]
    pub pipeline: Option<PathBuf>,
    /// Local runs: run the agent without its sandbox, with your rights (where bubblewrap is
    /// missing, e.g. macOS)
    #[arg(long, conflicts_with = "cloud")]
    pub insecure_no_sandbox: bool,
    /// Local runs: apply without asking even when the change adds links, executables,
    /// dotfiles or CI configuration
    #[arg(long, short, conflicts_with = "cloud")]
    pub yes: bool,
    /// Print the job as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job id, or an attempt group's, or its first characters (at least 4)
    pub id: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The job id, or an attempt group's, or its first characters (at least 4)
    pub id: String,
    /// With a group: this attempt (as `ckrv status GROUP` numbers them) instead of the best
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The job id, or its first characters (at least 4); or an attempt group's, to pull its
    /// best attempt
    pub id: String,
    /// With a group: pull this attempt (as `ckrv status GROUP` numbers them) instead of the
    /// best
    #[arg(long, value_name = "N")]
    pub attempt: Option<u32>,
    /// Apply with conflict markers where the change and your edits overlap
    #[arg(long = "3way", conflicts_with_all = ["branch", "check"])]
    pub three_way: bool,
    /// Create this branch at the job's base commit, apply there and check it out (the safe
    /// path for a worktree with edits)
    #[arg(long, value_name = "NAME", conflicts_with = "check")]
    pub branch: Option<String>,
    /// Only report whether the change applies; change nothing
    #[arg(long)]
    pub check: bool,
    /// Apply without asking even when the change adds links, executables, dotfiles or CI
    /// configuration (without a terminal, `pull` refuses such a change unless given this)
    #[arg(long, short)]
    pub yes: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job id, or its first characters (at least 4)
    pub id: String,
    /// Keep streaming until the job ends
    #[arg(long, short)]
    pub follow: bool,
    /// Only the last N entries (then follow on, with --follow)
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Only entries written at or after this: a time (2026-11-24T10:00:00Z) or an age (10m)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Print one JSON log entry per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Sign in with a device code you approve in the browser (opened for you at a desktop,
    /// `$BROWSER` where set; never over SSH)
    Login {
        /// Read a personal access token (from `ckrv-api users token`) from standard input
        /// instead, for CI; it is never taken from the command line
        #[arg(long, conflicts_with = "no_browser")]
        with_token: bool,
        /// Only print the activation URL and code; do not open a browser
        #[arg(long)]
        no_browser: bool,
    },
    /// Sign out: forget the stored session here and end it at the service. A personal access
    /// token (`login --with-token`) is only forgotten here, since other machines may use it,
    /// unless --revoke
    Logout {
        /// Also revoke a personal access token at the service, for every machine that uses it
        #[arg(long)]
        revoke: bool,
    },
    /// Show the signed-in account and its quota
    Whoami {
        /// Print the account as JSON
        #[arg(long)]
        json: bool,
    },
    /// Git credentials for private repositories, stored encrypted by the service
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Webhooks: your job events POSTed to a URL of yours, signed as Standard Webhooks specifies
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Add a webhook; prints its signing secret, once
    Add(WebhookAddArgs),
    /// List your webhooks: id, URL, events, whether operator-wide (never a secret)
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a webhook: no more events are sent to it
    #[command(visible_alias = "remove")]
    Rm {
        /// The webhook's id (`wh_…`), as `ckrv cloud webhooks list` shows it
        id: String,
    },
    /// Give a webhook a new signing secret; the previous one still signs for a day
    Rotate {
        /// The webhook's id (`wh_…`)
        id: String,
        /// Print JSON (with the new secret)
        #[arg(long)]
        json: bool,
    },
    /// List deliveries to your webhooks, newest first: event, job, status, attempts
    Deliveries(WebhookDeliveriesArgs),
    /// Send a delivery again (after the events of its job before it are through)
    Redeliver {
        /// The delivery's id (`msg_…`), as `ckrv cloud webhooks deliveries` shows it
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct WebhookAddArgs {
    /// Where events are POSTed: an https:// URL on a public host
    pub url: String,
    /// The events it gets, comma-separated, or `*` for all
    #[arg(long, value_delimiter = ',', default_value = "*", value_parser = webhook_events())]
    pub events: Vec<String>,
    /// Print JSON (with the secret)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WebhookDeliveriesArgs {
    /// Only deliveries to this webhook (`wh_…`)
    #[arg(long, value_name = "ID")]
    pub webhook: Option<String>,
    /// Only deliveries of this job's events: its id, or its first characters (at least 4)
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// At most this many deliveries
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Store a credential. The secret is read from a hidden prompt, or from standard input
    /// when it is not a terminal, or from --from-file; never from the command line
    Add(CredentialAddArgs),
    /// List your credentials: name, provider, type, created, last used (never the secret)
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a credential
    Remove {
        /// The credential's name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List your account's snapshots, most recently used first: key, repository, size, when
    /// saved and last used, and the job that saved it
    #[command(visible_alias = "ls")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Drop snapshots: the next job of each one's repository runs setup and saves a new one
    #[command(visible_alias = "remove")]
    Rm {
        /// Keys, or unique prefixes of at least 8 hex digits, as `ckrv env list` shows them
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        keys: Vec<String>,
        /// Drop every snapshot of your account
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct CredentialAddArgs {
    /// Its name, as `ckrv run --credential NAME` gives it (lowercase letters, digits, '-')
    #[arg(long)]
    pub name: String,
    /// Where the repository is hosted (the contract's `provider` field). `--provider HOST`
    /// means the same when no provider plugin of that name is installed, as in
    /// `ckrv cloud credentials add --name github-work --provider github`
    #[arg(id = "git_host", long = "host", value_name = "HOST", value_parser = forges())]
    pub provider: Option<String>,
    /// A personal access token (https://) or a deploy key's private key (ssh://)
    #[arg(long = "type", default_value = "pat", value_parser = ["pat", "deploy-key"])]
    pub credential_type: String,
    /// The user name to send with an access token, where the host wants a particular one
    /// [default: the host's own: x-access-token (GitHub), oauth2 (GitLab), x-token-auth
    /// (Bitbucket), git]
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the secret from this file (a deploy key's private key file, say)
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// Replace a credential of the same name
    #[arg(long)]
    pub force: bool,
}

/// The events a webhook can ask for, as the contract names them; a bad one is refused, naming
/// the valid ones, before anything is sent.
fn webhook_events() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(ckrv_wit::protocol::webhook_events::NAMES)
}

/// The git hosts a credential can be for: the contract's `GitProvider`.
fn forges() -> clap::builder::PossibleValuesParser {
    use ckrv_wit::types::GitProvider;
    clap::builder::PossibleValuesParser::new(GitProvider::ALL.map(GitProvider::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
