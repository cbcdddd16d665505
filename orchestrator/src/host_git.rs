//! Git on the host, as steps ask for it. It trusts nothing the job controls:
//!
//! - the repository URL passes the policy again, and the host is resolved here and every
//!   address checked, then git is pinned to the checked address (curl's resolve list for HTTP,
//!   the address itself with `HostKeyAlias` for SSH), so a name cannot resolve elsewhere later;
//! - no system or global config, no hooks, no fsmonitor, no credential helpers, no redirects,
//!   only the allowed transports, no submodules;
//! - the base is fetched into a bare repository outside the workspace, and the diff is taken
//!   with that repository and a private index against the workspace's files, so nothing the
//!   agent wrote under `.git` (config, hooks, attributes drivers) is read;
//! - git never walks the workspace for the diff: the host lists it (see `stage`) and hands git
//!   files and links by name, so a `.git` the agent planted at any depth (a file whose
//!   `gitdir:` names a repository on the host, or a repository of its own) is never opened
//!   and never becomes a submodule commit; it is left out, and the job's log says so. The
//!   base's own submodule commits stay as the base has them.

mod publish;
mod stage;
mod start;

pub use publish::{ForgeApi, ForgeKind};

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use ckrv_wit::repo_url::{self, RepoUrl, RepoUrlError, Transport};
use ckrv_wit::types::{CredentialType, GitCredential, GitProvider};

/// Why host-side git refused or failed. Steps see it as text (the WIT `git` interface speaks
/// strings); everything on the host keeps the kind.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error(transparent)]
    Url(#[from] RepoUrlError),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("cannot resolve the repository host {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the job's credential is an access token, which works over https:// only; use a deploy key for ssh"
    )]
    TokenNeedsHttps,
    #[error(
        "the job's credential is a deploy key, which works over ssh:// only; use an access token for https"
    )]
    KeyNeedsSsh,
    /// A file or process of the host's own, and what it was for.
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` is not a revision")]
    NotARevision(String),
    #[error("`{0}` names no commit of the repository")]
    NoSuchCommit(String),
    /// Git refused: its own last line of error output (never a remote's page), or its exit.
    #[error("{0}")]
    Git(String),
    #[error("git output is not valid UTF-8")]
    NotUtf8,
    #[error("{0} became a git repository while the diff was taken; the change is refused")]
    BecameRepository(String),
    /// Publishing the result: refused by the host, or by the repository in its own words.
    #[error("{0}")]
    Publish(String),
    /// A follow-up's start could not be made.
    #[error("{0}")]
    Start(String),
}

/// Why the repository's host may not be connected to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the repository host {host} resolves to {ip}, {kind}; only public hosts can be cloned")]
    Internal {
        host: String,
        ip: IpAddr,
        kind: String,
    },
    #[error("the repository host {0} has no address")]
    None(String),
    #[error("not an scp-like URL")]
    NotScpLike,
    #[error("{0}")]
    Unparsable(String),
    #[error("cannot point {url} at {ip}")]
    CannotRewrite { url: String, ip: IpAddr },
}

/// An `Io` error's constructor, for `map_err`.
fn io(doing: &'static str) -> impl Fn(std::io::Error) -> GitError + Copy {
    move |source| GitError::Io { doing, source }
}

/// One job's host-side git.
#[derive(Debug, Clone)]
pub struct HostGit {
    workspace: PathBuf,
    /// Host-only: `base.git`, the private index, an empty `HOME`, SSH's known hosts.
    private: PathBuf,
    allow_local: bool,
    /// The job's credential, for the first clone of the job's own repository only.
    credential: Arc<Mutex<Option<RepoCredential>>>,
    /// Where the job publishes its result, once (see `publish`).
    publish: Arc<Mutex<Option<publish::PublishTarget>>>,
    /// The API of the forge it publishes to, when the host knows it.
    forge: Option<ForgeApi>,
}

/// A git credential bound to the one repository URL it may be sent to.
struct RepoCredential {
    url: String,
    credential: GitCredential,
}

impl std::fmt::Debug for RepoCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCredential")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The user name git sends with a personal access token, by host: what each documents.
fn token_user(provider: GitProvider) -> &'static str {
    match provider {
        GitProvider::Github => "x-access-token",
        GitProvider::Gitlab => "oauth2",
        GitProvider::Bitbucket => "x-token-auth",
        GitProvider::Generic => "git",
    }
}

impl RepoCredential {
    /// The environment that hands the credential to git: a token through `GIT_ASKPASS` (a
    /// script that reads it from its own environment, so it is never in a file or an argument).
    fn add_env<'a>(
        &'a self,
        repo: &RepoUrl,
        askpass: &'a str,
        env: &mut Vec<(&'a str, &'a str)>,
    ) -> Result<(), GitError> {
        match (self.credential.credential_type, repo.transport) {
            (CredentialType::Pat, Transport::Https | Transport::Http) => {
                env.extend([
                    ("GIT_ASKPASS", askpass),
                    (
                        "CKRV_GIT_USERNAME",
                        self.credential
                            .username
                            .as_deref()
                            .unwrap_or(token_user(self.credential.provider)),
                    ),
                    ("CKRV_GIT_PASSWORD", self.credential.value.as_str()),
                ]);
                Ok(())
            }
            (CredentialType::Pat, _) => Err(GitError::TokenNeedsHttps),
            // The key goes in through the SSH command (see `key_file`).
            (CredentialType::DeployKey, Transport::Ssh) => Ok(()),
            (CredentialType::DeployKey, _) => Err(GitError::KeyNeedsSsh),
        }
    }

    /// For a deploy key: the key in a file of its own (0600) in a new 0700 directory under
    /// `private`, removed when the returned directory is dropped, right after the clone.
    fn key_file(&self, private: &Path) -> Result<Option<(tempfile::TempDir, PathBuf)>, GitError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if self.credential.credential_type != CredentialType::DeployKey {
            return Ok(None);
        }
        let error = io("preparing the deploy key");
        let dir = tempfile::Builder::new()
            .prefix("ssh-key-")
            .tempdir_in(private)
            .map_err(error)?;
        let path = dir.path().join("key");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(error)?;
        let key = self.credential.value.trim_end();
        std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes()).map_err(error)?;
        Ok(Some((dir, path)))
    }
}

/// Answers git's user name and password prompts from the environment git was given.
const ASKPASS: &str = r#"#!/bin/sh
case "$1" in
  Username*) printf '%s\n' "$CKRV_GIT_USERNAME" ;;
  *) printf '%s\n' "$CKRV_GIT_PASSWORD" ;;
esac
"#;

impl HostGit {
    /// `private` must be outside the workspace and never shown to the agent.
    pub fn new(workspace: &Path, private: &Path, allow_local: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(private.join("home"))?;
        Ok(Self {
            workspace: workspace.to_path_buf(),
            private: private.to_path_buf(),
            allow_local,
            credential: Arc::default(),
            publish: Arc::default(),
            forge: None,
        })
    }

    /// Gives the first clone of `url`, and nothing else, `credential`.
    pub fn with_credential(self, url: &str, credential: GitCredential) -> Self {
        *self
            .credential
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(RepoCredential {
            url: url.to_string(),
            credential,
        });
        self
    }

    /// The credential, taken (so it is used once) when `url` is the repository it is for.
    fn credential_for(&self, url: &str) -> Option<RepoCredential> {
        let mut slot = self
            .credential
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|c| c.url == url) {
            slot.take()
        } else {
            None
        }
    }

    /// The askpass program (no secret in it), written once to the private directory.
    fn askpass(&self) -> Result<String, GitError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.private.join("askpass");
        if !path.exists() {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&path)
                .map_err(io("preparing git's credential prompt"))?;
            std::io::Write::write_all(&mut file, ASKPASS.as_bytes())
                .map_err(io("preparing git's credential prompt"))?;
        }
        Ok(path.display().to_string())
    }

    /// The directory the agent and the steps work in.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    fn base_repo(&self) -> PathBuf {
        self.private.join("base.git")
    }

    /// Clones `url` at `branch`: into the private base repository (the only network access),
    /// then from there into the workspace.
    pub async fn clone_repo(&self, url: &str, branch: &str) -> Result<(), GitError> {
        let secret = self.credential_for(url);
        let remote = self.remote(url, secret.as_ref()).await?;
        let mut args: Vec<String> = remote.config.clone();
        args.extend(
            [
                "clone",
                "--bare",
                "--single-branch",
                "--no-tags",
                "--branch",
                branch,
                "--",
            ]
            .map(String::from),
        );
        args.push(remote.url.clone());
        args.push(self.base_repo().display().to_string());
        let cloned = self
            .git(&self.private, &args, &self.network(), &remote.env())
            .await;
        // The key file and its directory go now, whatever the clone did.
        drop(remote);
        drop(secret);
        cloned?;
        let base = self.base_repo().display().to_string();
        let local = [
            "clone",
            "--no-hardlinks",
            "--branch",
            branch,
            "--",
            &base,
            ".",
        ];
        self.git(&self.workspace, &local, &["file"], &[]).await?;
        // The agent sees the repository's real address, not the host's private copy.
        self.git(
            &self.workspace,
            &["remote", "set-url", "origin", url],
            &[],
            &[],
        )
        .await?;
        self.index_base(branch).await
    }

    /// The transports git may use to reach a job's repository.
    fn network(&self) -> Vec<&'static str> {
        let mut network = vec!["https", "ssh"];
        if self.allow_local {
            network.extend(["http", "file"]);
        }
        network
    }

    /// How git reaches `url`: checked by the policy, pinned to the checked address, with
    /// `secret` handed over through askpass or a key file that lives as long as the answer.
    async fn remote(&self, url: &str, secret: Option<&RepoCredential>) -> Result<Remote, GitError> {
        let repo = repo_url::check(url, self.allow_local)?;
        let pin = self.pin(url, &repo).await?;
        let askpass = match secret {
            Some(_) => self.askpass()?,
            None => String::new(),
        };
        let key = match secret {
            Some(credential) => credential.key_file(&self.private)?,
            None => None,
        };
        let ssh_command = match (&pin.ssh_command, &key) {
            (Some(ssh), Some((_, path))) => Some(format!(
                "{ssh} -i '{}' -o IdentitiesOnly=yes -o IdentityAgent=none",
                path.display()
            )),
            (ssh, _) => ssh.clone(),
        };
        let mut env: Vec<(String, String)> = Vec::new();
        if let Some(ssh) = ssh_command {
            env.push(("GIT_SSH_COMMAND".into(), ssh));
        }
        if let Some(credential) = secret {
            let mut borrowed = Vec::new();
            credential.add_env(&repo, &askpass, &mut borrowed)?;
            env.extend(
                borrowed
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
        }
        Ok(Remote {
            config: pin.config,
            url: pin.url.unwrap_or_else(|| url.to_string()),
            env,
            _key: key.map(|(dir, _)| dir),
        })
    }

    /// Fills the private index with the base and the workspace's file stats, so each diff later
    /// hashes only the files that changed (clone time, before the agent: every file is read
    /// once here).
    async fn index_base(&self, base: &str) -> Result<(), GitError> {
        let args = self.with_base(&["reset", "-q", "--mixed", base]);
        self.git(&self.workspace, &args, &[], &[]).await.map(drop)
    }

    /// `rest` run with the private base repository and index, on the workspace's files.
    fn with_base(&self, rest: &[&str]) -> Vec<String> {
        let mut args = vec![
            format!("--git-dir={}", self.base_repo().display()),
            format!("--work-tree={}", self.workspace.display()),
        ];
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    }

    /// For the step harness: the workspace's own repository (the author's, trusted) becomes
    /// the base the diff compares with.
    pub async fn adopt_workspace_repository(&self, base: &str) -> Result<(), GitError> {
        let repo = self.base_repo().display().to_string();
        let workspace = self.workspace.display().to_string();
        let args = [
            "clone",
            "--bare",
            "--no-hardlinks",
            "-q",
            "--",
            &workspace,
            &repo,
        ];
        self.git(&self.private, &args, &["file"], &[]).await?;
        self.index_base(base).await
    }

    /// Points `branch` of the private base repository at `commit`; its full reference name.
    async fn set_branch(&self, branch: &str, commit: &str) -> Result<String, GitError> {
        let git_dir = format!("--git-dir={}", self.base_repo().display());
        let reference = format!("refs/heads/{branch}");
        self.git(
            &self.workspace,
            &[git_dir.as_str(), "update-ref", &reference, commit],
            &[],
            &[],
        )
        .await?;
        Ok(reference)
    }

    /// Leaves `patterns` (gitignore syntax) out of the diff: what an agent writes for itself.
    pub fn exclude(&self, patterns: &[String]) -> Result<(), GitError> {
        if patterns.is_empty() {
            return Ok(());
        }
        let info = self.base_repo().join("info");
        std::fs::create_dir_all(&info).map_err(io("excluding agent files"))?;
        let mut text = std::fs::read_to_string(info.join("exclude")).unwrap_or_default();
        for pattern in patterns {
            text.push_str(pattern);
            text.push('\n');
        }
        std::fs::write(info.join("exclude"), text).map_err(io("excluding agent files"))
    }

    /// Creates and checks out `name` in the workspace (before the agent runs).
    pub async fn create_branch(&self, name: &str) -> Result<(), GitError> {
        self.git(&self.workspace, &["checkout", "-b", name], &[], &[])
            .await
            .map(drop)
    }

    /// The full id of the commit `rev` names in the private base repository. A `rev` that
    /// could be read as an option is refused.
    pub async fn resolve(&self, rev: &str) -> Result<String, GitError> {
        if rev.starts_with('-') {
            return Err(GitError::NotARevision(rev.to_string()));
        }
        let git_dir = format!("--git-dir={}", self.base_repo().display());
        let commit = format!("{rev}^{{commit}}");
        let out = self
            .git(
                &self.workspace,
                &[
                    git_dir.as_str(),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &commit,
                ],
                &[],
                &[],
            )
            .await
            .map_err(|_| GitError::NoSuchCommit(rev.to_string()))?;
        Ok(out.trim().to_string())
    }

    /// The binary-safe diff of the workspace's files against `base`, taken with the private
    /// base repository and a private index, and what it left out for the log.
    pub async fn diff(&self, base: &str) -> Result<WorkspaceDiff, GitError> {
        // The private index starts at the base (see `index_base`); staging the workspace makes
        // it the workspace, and the diff is index against base.
        let notices = self.stage_workspace().await?;
        let patch = self
            .git(
                &self.workspace,
                &self.with_base(&[
                    "diff",
                    "--cached",
                    "--binary",
                    "--no-ext-diff",
                    "--no-textconv",
                    base,
                    "--",
                ]),
                &[],
                &[],
            )
            .await?;
        Ok(WorkspaceDiff { patch, notices })
    }

    /// Makes the private index hold the workspace's files, as `git add -A` would but without
    /// letting git walk the workspace (see `stage`): tracked files that are gone are removed,
    /// and every file and link present, tracked or not ignored, is staged by name. The base's
    /// submodule commits are kept as they are. Returns what was left out, for the log.
    async fn stage_workspace(&self) -> Result<Vec<String>, GitError> {
        let tracked = self.tracked().await?;
        let mut present: Vec<stage::RelPath> = Vec::new();
        let mut notices: Vec<String> = Vec::new();
        let mut level: Vec<stage::RelPath> = vec![Vec::new()];
        while !level.is_empty() {
            let workspace = self.workspace.clone();
            let found = tokio::task::spawn_blocking(move || stage::list(&workspace, &level))
                .await
                .map_err(|e| io("listing the workspace failed")(e.into()))?
                .map_err(io("listing the workspace failed"))?;
            notices.extend(found.git_entries.iter().map(|path| left_out(path)));
            let mut next = Vec::new();
            // Untracked paths, and whether each is a directory, for the ignore rules to judge.
            let mut untracked: Vec<(stage::RelPath, bool)> = Vec::new();
            for file in found.files {
                if tracked.gitlinks.contains(&file) {
                    notices.extend(submodule_left(&self.workspace, &file));
                    continue;
                }
                if tracked.files.contains(&file) {
                    present.push(file);
                } else {
                    untracked.push((file, false));
                }
            }
            for dir in found.dirs {
                if tracked.gitlinks.contains(&dir) {
                    notices.extend(submodule_left(&self.workspace, &dir));
                    continue;
                }
                if tracked.dirs.contains(&dir) {
                    next.push(dir);
                } else {
                    untracked.push((dir, true));
                }
            }
            let paths: Vec<stage::RelPath> = untracked.iter().map(|(p, _)| p.clone()).collect();
            let ignored = self.ignored(&paths).await?;
            for (path, is_dir) in untracked {
                match (ignored.contains(&path), is_dir) {
                    (true, _) => {}
                    (false, true) => next.push(path),
                    (false, false) => present.push(path),
                }
            }
            level = next;
        }
        let kept: HashSet<&stage::RelPath> = present.iter().collect();
        let gone: Vec<stage::RelPath> = tracked
            .files
            .iter()
            .filter(|path| !kept.contains(path))
            .cloned()
            .collect();
        // Removals first, so a file replacing a directory (or the reverse) is staged cleanly.
        for (paths, args) in [
            (
                &gone,
                ["update-index", "--force-remove", "-z", "--stdin"].as_slice(),
            ),
            (
                &present,
                [
                    "update-index",
                    "--add",
                    "--remove",
                    "--replace",
                    "-z",
                    "--stdin",
                ]
                .as_slice(),
            ),
        ] {
            if !paths.is_empty() {
                let input = stage::nul_separated(paths);
                self.git_bytes(&self.workspace, &self.with_base(args), Some(input), &[0])
                    .await?;
            }
        }
        // git was given files and links only; a submodule commit it staged anyway means a path
        // became a repository while this ran (something of the agent's still at work).
        let after = self.tracked().await?;
        if let Some(path) = after.gitlinks.difference(&tracked.gitlinks).next() {
            return Err(GitError::BecameRepository(
                String::from_utf8_lossy(path).into_owned(),
            ));
        }
        Ok(notices)
    }

    /// What the private index holds.
    async fn tracked(&self) -> Result<stage::Tracked, GitError> {
        let args = self.with_base(&["ls-files", "-s", "-z"]);
        let listing = self.git_bytes(&self.workspace, &args, None, &[0]).await?;
        Ok(stage::Tracked::parse(&listing))
    }

    /// Which of `paths` (untracked) the workspace's `.gitignore` files and the agent's excludes
    /// leave out. check-ignore takes pathspecs and refuses `:(literal)`, so each path goes as
    /// `./PATH`, which no magic reads (a name like `:(exclude)x` is a name); it answers with the
    /// ignored ones as given.
    async fn ignored(&self, paths: &[stage::RelPath]) -> Result<HashSet<stage::RelPath>, GitError> {
        if paths.is_empty() {
            return Ok(HashSet::new());
        }
        let args = self.with_base(&["check-ignore", "-z", "--stdin"]);
        let dotted: Vec<stage::RelPath> = paths.iter().map(|p| [b"./", &p[..]].concat()).collect();
        let input = stage::nul_separated(&dotted);
        // check-ignore exits 1 when nothing is ignored.
        let out = self
            .git_bytes(&self.workspace, &args, Some(input), &[0, 1])
            .await?;
        Ok(out
            .split(|b| *b == 0)
            .filter_map(|p| p.strip_prefix(b"./"))
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Resolves the repository's host and checks every address, unless local repositories are
    /// allowed; returns how to make git connect to the checked address only.
    async fn pin(&self, url: &str, repo: &RepoUrl) -> Result<Pin, GitError> {
        let Some(host) = &repo.host else {
            return Ok(Pin::default());
        };
        let addresses: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), repo.port))
            .await
            .map_err(|source| GitError::Resolve {
                host: host.clone(),
                source,
            })?
            .map(|a| a.ip())
            .collect();
        let ip = checked_address(host, &addresses, self.allow_local)?;
        Ok(match repo.transport {
            Transport::Https | Transport::Http => Pin {
                config: vec![
                    "-c".into(),
                    format!("http.curloptResolve={host}:{}:{}", repo.port, bracketed(ip)),
                ],
                ..Pin::default()
            },
            // SSH connects to the address itself; the host key is still checked under the name.
            Transport::Ssh => Pin {
                ssh_command: Some(format!(
                    "ssh -o BatchMode=yes -o ProxyCommand=none -o ProxyJump=none \
                     -o HostKeyAlias={host} -o StrictHostKeyChecking=accept-new \
                     -o UserKnownHostsFile={}",
                    self.private.join("known_hosts").display()
                )),
                url: Some(with_address(url, repo, ip)?),
                config: Vec::new(),
            },
            Transport::Local => Pin::default(),
        })
    }

    /// Runs hardened git in `dir`, allowing only `protocols` (none: no transport at all); the
    /// error is the last line git wrote (its own message, never a remote's page).
    async fn git<S: AsRef<str>>(
        &self,
        dir: &Path,
        args: &[S],
        protocols: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, GitError> {
        let out = self.run_git(dir, args, protocols, env, None, &[0]).await?;
        String::from_utf8(out).map_err(|_| GitError::NotUtf8)
    }

    /// Hardened git in `dir`: no config but ours, no prompt, only `protocols`, its output
    /// piped, and standard input piped when `input` is given.
    fn command<S: AsRef<str>>(
        &self,
        dir: &Path,
        args: &[S],
        protocols: &[&str],
        env: &[(&str, &str)],
        input: bool,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("git");
        command
            .args(HARDENING)
            .args(args.iter().map(AsRef::as_ref))
            .current_dir(dir)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", self.private.join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", protocols.join(":"))
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_INDEX_FILE", self.private.join("index"))
            .env("LC_ALL", "C")
            .stdin(if input {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command.envs(env.iter().copied());
        // The private index is only for the diff against the private base; the workspace's
        // own commands keep the workspace's index.
        if !args.iter().any(|a| a.as_ref().starts_with("--git-dir=")) {
            command.env_remove("GIT_INDEX_FILE");
        }
        command
    }

    /// Git in `dir` as [`Self::git`] runs it, with how it ended and all it wrote, whatever
    /// its exit: for a push, whose refusal is in its output.
    async fn git_output<S: AsRef<str>>(
        &self,
        dir: &Path,
        args: &[S],
        protocols: &[&str],
        env: &[(&str, &str)],
    ) -> Result<std::process::Output, GitError> {
        self.command(dir, args, protocols, env, false)
            .output()
            .await
            .map_err(io("could not run git"))
    }

    /// Local git (no transport) in `dir`, fed `input`, exiting with one of `success`; its
    /// output as bytes (paths need not be UTF-8).
    async fn git_bytes<S: AsRef<str>>(
        &self,
        dir: &Path,
        args: &[S],
        input: Option<Vec<u8>>,
        success: &[i32],
    ) -> Result<Vec<u8>, GitError> {
        self.run_git(dir, args, &[], &[], input, success).await
    }

    /// [`Self::git`]'s whole form: `input` goes to git's standard input while its output is
    /// read, and any exit code in `success` counts as success.
    async fn run_git<S: AsRef<str>>(
        &self,
        dir: &Path,
        args: &[S],
        protocols: &[&str],
        env: &[(&str, &str)],
        input: Option<Vec<u8>>,
        success: &[i32],
    ) -> Result<Vec<u8>, GitError> {
        use tokio::io::AsyncWriteExt as _;
        let mut command = self.command(dir, args, protocols, env, input.is_some());
        let mut child = command.spawn().map_err(io("could not run git"))?;
        let stdin = child.stdin.take();
        // Fed while its output is read, so neither pipe can fill up and stall the other.
        let feed = async move {
            match (stdin, input) {
                // Dropped at the end: git reads the end of its input.
                (Some(mut stdin), Some(input)) => stdin.write_all(&input).await,
                _ => Ok(()),
            }
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(io("could not run git"))?;
        if !output
            .status
            .code()
            .is_some_and(|code| success.contains(&code))
        {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(GitError::Git(if last.is_empty() {
                format!("git exited with {}", output.status)
            } else {
                last.trim().chars().take(500).collect()
            }));
        }
        fed.map_err(io("could not write to git"))?;
        Ok(output.stdout)
    }
}

/// A diff of the workspace, and what it left out for the job's log to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDiff {
    pub patch: String,
    /// One line per `.git` passed over, for the user.
    pub notices: Vec<String>,
}

/// The log's line for a submodule's place, if the agent put something there.
fn submodule_left(workspace: &Path, path: &[u8]) -> Option<String> {
    if !stage::holds_anything(workspace, path) {
        return None;
    }
    let path = String::from_utf8_lossy(path);
    Some(format!(
        "left {path} as the base has it: it is a submodule of the repository, so nothing the \
         agent put there is read or part of the change"
    ))
}

/// The log's line for a `.git` entry the diff passed over.
fn left_out(path: &[u8]) -> String {
    let path = String::from_utf8_lossy(path);
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    format!(
        "left {path} out of the change: the host never reads a .git the agent wrote, nor takes a \
         submodule from one; the other files in {dir}/ are in the change as plain files"
    )
}

/// Config every host git command runs with, overriding whatever a repository says.
const HARDENING: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.sshCommand=",
    "-c",
    "core.askPass=",
    "-c",
    "credential.helper=",
    "-c",
    "http.followRedirects=false",
    "-c",
    "submodule.recurse=false",
    "-c",
    "diff.external=",
];

/// A job's repository as git reaches it (see [`HostGit::remote`]). The key file, if any, is
/// removed when this is dropped.
struct Remote {
    /// `-c` options pinning the address.
    config: Vec<String>,
    /// The URL to give git: the repository's, or rewritten to the checked address.
    url: String,
    env: Vec<(String, String)>,
    _key: Option<tempfile::TempDir>,
}

impl Remote {
    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// How to make git reach only the checked address.
#[derive(Debug, Default)]
struct Pin {
    /// `-c` options for git.
    config: Vec<String>,
    /// A rewritten URL, when the address replaces the host.
    url: Option<String>,
    ssh_command: Option<String>,
}

/// The address to connect to: the first the host resolved to, when none of them is a loopback,
/// private, link-local or otherwise internal address (a name that resolves to any of those is
/// refused, not just skipped) or local repositories are allowed.
pub fn checked_address(
    host: &str,
    addresses: &[IpAddr],
    allow_local: bool,
) -> Result<IpAddr, AddressError> {
    let internal = addresses
        .iter()
        .find_map(|ip| repo_url::address_kind(*ip).map(|kind| (ip, kind)));
    if let (false, Some((ip, kind))) = (allow_local, internal) {
        return Err(AddressError::Internal {
            host: host.to_string(),
            ip: *ip,
            kind: kind.to_string(),
        });
    }
    addresses
        .first()
        .copied()
        .ok_or_else(|| AddressError::None(host.to_string()))
}

/// `url` with its host replaced by `ip`, in the same syntax.
fn with_address(url: &str, repo: &RepoUrl, ip: IpAddr) -> Result<String, AddressError> {
    if repo.scp_like {
        let (user, rest) = url.split_once('@').ok_or(AddressError::NotScpLike)?;
        let (_, path) = rest.split_once(':').ok_or(AddressError::NotScpLike)?;
        return Ok(format!("{user}@{}:{path}", bracketed(ip)));
    }
    let mut parsed = url::Url::parse(url).map_err(|e| AddressError::Unparsable(e.to_string()))?;
    parsed
        .set_ip_host(ip)
        .map_err(|()| AddressError::CannotRewrite {
            url: url.to_string(),
            ip,
        })?;
    Ok(parsed.to_string())
}

fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `checked_address` judges addresses already resolved; nothing here resolves or
    /// connects, so the metadata and public addresses are data, never reached.
    #[test]
    fn a_name_resolving_to_any_internal_address_is_refused() {
        let public: IpAddr = "93.184.216.34"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let metadata: IpAddr = "169.254.169.254".parse().unwrap_or(public);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap_or(public);
        assert_eq!(
            checked_address("git.example.com", &[public], false),
            Ok(public)
        );
        let err = checked_address("rebind.example.com", &[public, metadata], false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("169.254.169.254") && err.contains("link-local"),
            "{err}"
        );
        assert!(checked_address("rebind.example.com", &[loopback], false).is_err());
        assert_eq!(
            checked_address("dev.example.com", &[loopback], true),
            Ok(loopback)
        );
        assert!(checked_address("none.example.com", &[], false).is_err());
    }

    #[test]
    fn ssh_urls_are_pointed_at_the_checked_address() {
        let ip: IpAddr = "93.184.216.34"
            .parse()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let scp = repo_url::check("git@github.com:org/repo.git", false);
        let scp = scp.as_ref().map_err(ToString::to_string);
        assert_eq!(
            scp.and_then(
                |r| with_address("git@github.com:org/repo.git", r, ip).map_err(|e| e.to_string())
            ),
            Ok("git@93.184.216.34:org/repo.git".to_string())
        );
        let url = "ssh://git@github.com:2222/org/repo.git";
        let ssh = repo_url::check(url, false).map_err(|e| e.to_string());
        assert_eq!(
            ssh.and_then(|r| with_address(url, &r, ip).map_err(|e| e.to_string())),
            Ok("ssh://git@93.184.216.34:2222/org/repo.git".to_string())
        );
        let v6: IpAddr = "2606:2800:220:1::1".parse().unwrap_or(ip);
        let scp = repo_url::check("git@github.com:org/repo.git", false).map_err(|e| e.to_string());
        assert_eq!(
            scp.and_then(
                |r| with_address("git@github.com:org/repo.git", &r, v6).map_err(|e| e.to_string())
            ),
            Ok("git@[2606:2800:220:1::1]:org/repo.git".to_string())
        );
    }
}
