//! The repository's setup (`.ckrv/environment.toml`, docs/environments.md): after the clone and
//! before the agent, in phase `setup`, where the agent runs (its sandbox, or its container of
//! a job pod), with the environment's egress within the operator's ceiling and a time limit.
//! Its output goes to the job's log under `setup`; a failed setup fails the job with its exit
//! status and last lines.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ckrv_agents::egress::PolicyError;
use ckrv_agents::environment::{CachePath, ENVIRONMENT_FILE, Environment, EnvironmentError};
use ckrv_agents::{AgentDefinition, Policy, RunRequest, SandboxUnavailable, home_in};
use ckrv_wit::types::{JobPhase, PhaseUpdate, SetupSummary};

use crate::api_client::ApiClient;
use crate::logs::JobLog;
use crate::options::JobOptions;
use crate::place::AgentPlace;
use crate::snapshot;
use crate::stages::source::StageSource;
use crate::warm::WarmSnapshots;
use ckrv_agents::pod::PodRun;

/// The log source of setup's output and of what is said about it.
pub const SOURCE: &str = "setup";
/// How long setup may run when the API names no limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Why setup failed the job.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    /// The operator's or the job's egress policy does not parse (the words are the stages').
    #[error("the agent's egress: {0}")]
    Policy(#[source] PolicyError),
    #[error("the API did not come back")]
    ApiGone,
    #[error(transparent)]
    Sandbox(#[from] SandboxUnavailable),
    #[error(
        "{ENVIRONMENT_FILE}: egress `{requested}` is not within `{allowed}`, the most setup may reach here ({whose}); ask for less, or ask the operator"
    )]
    Egress {
        requested: String,
        allowed: String,
        whose: &'static str,
    },
    #[error("starting setup failed: {0}")]
    Start(#[source] std::io::Error),
    #[error("setup exited with status {code}; its last lines:\n{last}")]
    Exit { code: i32, last: String },
    #[error("setup was killed by a signal; its last lines:\n{last}")]
    Killed { last: String },
    #[error(transparent)]
    SnapshotFile(#[from] snapshot::SnapshotError),
    #[error("{0}")]
    Snapshot(String),
    #[error(
        "setup did not finish within its limit of {} s (the operator's --setup-timeout); make it shorter, or ask for a longer limit",
        .0.as_secs()
    )]
    Timeout(Duration),
}

/// Where setup may connect: within `ceiling` (the operator's `--setup-egress-allow`) when
/// set, else within the job's own policy; `internal` entries may reach internal addresses.
pub(crate) struct SetupEgress<'a> {
    pub job: &'a str,
    pub ceiling: Option<&'a str>,
    pub internal: &'a [ckrv_agents::Entry],
}

/// The most a snapshot may unpack to: a bound on a hostile archive, far above a real setup's.
pub const MAX_RESTORE_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// What setup left for the agent: the environment (whose variables the agent gets too) and,
/// when setup or a snapshot ran, what happened, for the job's status.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub environment: Option<Environment>,
    pub summary: Option<SetupSummary>,
}

impl Prepared {
    fn without_setup(environment: Environment) -> Self {
        Prepared {
            environment: Some(environment),
            summary: None,
        }
    }
}

/// A restored snapshot.
struct Restored {
    archive_bytes: u64,
    entries: u64,
    /// It was this worker's unpacked copy, moved into place.
    warm: bool,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One job's setup: where it runs and for how long at most.
pub(crate) struct Setup<'a> {
    pub job_id: &'a str,
    pub repo_url: &'a str,
    /// Restore no snapshot: the job asked for a fresh setup (`--no-snapshot`).
    pub fresh: bool,
    pub workspace: &'a Path,
    pub scratch: &'a Path,
    /// The agent container's home as this container mounts it, in a job pod.
    pub agent_home: Option<&'a Path>,
    /// The worker's unpacked copies of snapshots, when it keeps them (`--snapshot-cache`).
    pub warm: Option<&'a Arc<WarmSnapshots>>,
    pub timeout: Duration,
}

impl Setup<'_> {
    /// Reads the workspace's environment and runs its setup, if it has one; returns the
    /// environment, whose variables the agent gets too.
    pub(crate) async fn run(
        &self,
        source: &StageSource<'_>,
        options: &JobOptions,
        log: &JobLog,
        agent: &AgentDefinition,
        egress: &SetupEgress<'_>,
    ) -> Result<Prepared, SetupError> {
        let Some(environment) = Environment::load(self.workspace)? else {
            return Ok(Prepared::default());
        };
        let Some(script) = &environment.setup else {
            return Ok(Prepared::without_setup(environment));
        };
        let (ceiling, whose) = match egress.ceiling {
            Some(ceiling) => (ceiling, "the operator's --setup-egress-allow"),
            None => (
                egress.job,
                "the job's own policy: the operator's --egress-allow",
            ),
        };
        let allowed: Policy = ceiling.parse().map_err(SetupError::Policy)?;
        let requested = environment.egress.clone().unwrap_or_default();
        let policy = allowed.narrow(&requested).map_err(|_| SetupError::Egress {
            requested: requested.to_string(),
            allowed: allowed.to_string(),
            whose,
        })?;
        log.phase(PhaseUpdate {
            phase: JobPhase::Setup,
            agent: Some(agent.name.clone()),
            setup: None,
            // A job pod's setup reaches the network through the API's egress proxy, which
            // needs to know.
            setup_egress: Some(policy.to_string()),
            verification: None,
        });
        let snapshots = match (source.api(), environment.cache.is_empty()) {
            (Some(api), false) => Some((api, self.key(&environment, agent)?)),
            _ => None,
        };
        let pod = match &options.agent {
            AgentPlace::Pod(pod) => Some(pod),
            _ => None,
        };
        if pod.is_some_and(|pod| pod.home.is_none()) && !environment.home_cache().is_empty() {
            log.warn(
                SOURCE,
                "cache paths under ~/ are not kept: this job pod's orchestrator has no --agent-home",
            );
        }
        if let (true, Some((_, key))) = (self.fresh, &snapshots) {
            log.info(
                SOURCE,
                format!(
                    "A fresh setup was asked for (--no-snapshot): snapshot {} not restored",
                    short(key)
                ),
            );
        }
        if let (false, Some((api, key))) = (self.fresh, &snapshots) {
            let started = Instant::now();
            match self.restore(api, key, &environment).await {
                Ok(Some(restored)) => {
                    let how = if restored.warm {
                        format!(
                            "from this worker's unpacked copy ({}, {} paths moved)",
                            megabytes(restored.archive_bytes),
                            restored.entries
                        )
                    } else {
                        format!(
                            "({}, {} entries)",
                            megabytes(restored.archive_bytes),
                            restored.entries
                        )
                    };
                    log.info(
                        SOURCE,
                        format!(
                            "Snapshot {} restored {how} in {:.1} s; setup not run",
                            short(key),
                            started.elapsed().as_secs_f64()
                        ),
                    );
                    let summary = SetupSummary {
                        snapshot_hit: true,
                        snapshot_key: Some(key.clone()),
                        snapshot_bytes: Some(restored.archive_bytes),
                        duration_ms: millis(started.elapsed()),
                        saved: false,
                    };
                    return Ok(Prepared {
                        environment: Some(environment),
                        summary: Some(summary),
                    });
                }
                Ok(None) => log.info(
                    SOURCE,
                    format!("No snapshot {} yet: setup runs", short(key)),
                ),
                Err(why) => log.warn(
                    SOURCE,
                    format!("Snapshot {} not used ({why}): setup runs", short(key)),
                ),
            }
        }
        // In a job pod setup runs in the agent's container, whose network the API narrows to
        // setup's (and its proxy applies setup's policy) once it has the phase.
        if pod.is_some() && !log.delivered().await {
            return Err(SetupError::ApiGone);
        }
        let mut request = RunRequest::new(
            vec!["sh".into(), "-c".into(), script.clone()],
            self.workspace.to_path_buf(),
            self.scratch.to_path_buf(),
            self.job_id,
        );
        request.env = environment.env.clone().into_iter().collect();
        request.home_cache = environment.home_cache();
        request.egress = source
            .egress(agent, &policy.to_string(), egress.internal)
            .map_err(SetupError::Policy)?;
        log.info(
            SOURCE,
            format!("Running the repository's setup ({ENVIRONMENT_FILE}, egress `{policy}`)"),
        );
        let started = Instant::now();
        let run = options.run_where_the_agent_runs(log, SOURCE, PodRun::Setup, &request);
        let (status, last) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| SetupError::Timeout(self.timeout))??;
        let status = status.map_err(SetupError::Start)?;
        let last = last.join("\n");
        match status.code {
            Some(0) => {
                let took = started.elapsed();
                log.info(
                    SOURCE,
                    format!("Setup finished in {:.1} s", took.as_secs_f64()),
                );
                let mut summary = SetupSummary {
                    snapshot_hit: false,
                    snapshot_key: None,
                    snapshot_bytes: None,
                    duration_ms: millis(took),
                    saved: false,
                };
                if let Some((api, key)) = &snapshots {
                    summary.snapshot_key = Some(key.clone());
                    match self.save(api, key, &environment).await {
                        Ok(bytes) => {
                            log.info(
                                SOURCE,
                                format!("Snapshot {} saved ({})", short(key), megabytes(bytes)),
                            );
                            summary.snapshot_bytes = Some(bytes);
                            summary.saved = true;
                        }
                        Err(why) => {
                            log.warn(SOURCE, format!("Snapshot {} not saved: {why}", short(key)))
                        }
                    }
                }
                Ok(Prepared {
                    environment: Some(environment),
                    summary: Some(summary),
                })
            }
            Some(code) => Err(SetupError::Exit { code, last }),
            None => Err(SetupError::Killed { last }),
        }
    }

    /// The snapshot key of this job's setup.
    fn key(
        &self,
        environment: &Environment,
        agent: &AgentDefinition,
    ) -> Result<String, SetupError> {
        Ok(snapshot::key(&snapshot::KeyInputs {
            repo_url: self.repo_url,
            environment,
            workspace: self.workspace,
            agent,
            image: Some(&agent.image),
        })?)
    }

    /// Restores the account's snapshot under `key` into the workspace: what to say when it
    /// did, `None` when there is none. On failure what it unpacked is removed again.
    async fn restore(
        &self,
        api: &ApiClient,
        key: &str,
        environment: &Environment,
    ) -> Result<Option<Restored>, SetupError> {
        if let Some(warm) = self.warm
            && let Some(restored) = self.restore_warm(api, key, environment, warm).await?
        {
            return Ok(Some(restored));
        }
        let file = self.scratch.join("snapshot.tar.zst");
        let fetched = api.fetch_snapshot(key, &file).await;
        let digest = match fetched {
            Ok(Some(digest)) => digest,
            Ok(None) => return Ok(None),
            Err(error) => {
                let _ = std::fs::remove_file(&file);
                return Err(SetupError::Snapshot(error.to_string()));
            }
        };
        let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let (workspace, home) = (self.workspace.to_path_buf(), self.make_home()?);
        let unpacked = {
            let (file, digest) = (file.clone(), digest.clone());
            tokio::task::spawn_blocking(move || {
                snapshot::restore(&file, &digest, &workspace, Some(&home), MAX_RESTORE_BYTES)
            })
            .await
            .map_err(|e| SetupError::Snapshot(e.to_string()))?
        };
        match unpacked {
            Ok(restored) => {
                self.warm_later(&file, digest);
                Ok(Some(Restored {
                    archive_bytes: bytes,
                    entries: restored.entries,
                    warm: false,
                }))
            }
            Err(error) => {
                let _ = std::fs::remove_file(&file);
                let home = self.home();
                for pattern in &environment.cache {
                    let _ = match pattern {
                        CachePath::Workspace(path) => remove_any(&self.workspace.join(path)),
                        CachePath::Home(path) => remove_any(&home.join(path)),
                    };
                }
                Err(error.into())
            }
        }
    }

    /// Moves this worker's unpacked copy of the account's snapshot under `key` into place, if
    /// it has one, and makes the next job's copy in the background; `None` when it has none
    /// (or the copy could not be placed: then the archive is restored as usual).
    async fn restore_warm(
        &self,
        api: &ApiClient,
        key: &str,
        environment: &Environment,
        warm: &Arc<WarmSnapshots>,
    ) -> Result<Option<Restored>, SetupError> {
        // The digest the API names for this account's snapshot: only a copy of exactly those
        // bytes is used.
        let Ok(Some((digest, bytes))) = api.snapshot_digest(key).await else {
            return Ok(None);
        };
        let taken = self.scratch.join("warm-snapshot");
        if !warm.take(&digest, &taken).unwrap_or(false) {
            return Ok(None);
        }
        let placed = crate::warm::place(
            &taken,
            &environment.cache,
            self.workspace,
            &self.make_home()?,
        );
        // What is left of the copy (directories, or all of it when it was not placed) goes
        // away off the job's path.
        let leftover = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(taken));
        let entries = match placed {
            Ok(moved) => moved,
            Err(error) => {
                tracing::warn!(%error, "this worker's copy of the snapshot was not placed");
                let _ = leftover.await;
                return Ok(None);
            }
        };
        let (filling, api, key) = (Arc::clone(warm), api.clone(), key.to_string());
        warm.making(tokio::spawn(async move {
            let _ = leftover.await;
            let Ok(file) = filling.archive_file() else {
                return;
            };
            match api.fetch_snapshot(&key, &file).await {
                Ok(Some(digest)) => fill(filling, file, digest).await,
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "no archive for this worker's next copy"),
            }
        }));
        Ok(Some(Restored {
            archive_bytes: bytes,
            entries,
            warm: true,
        }))
    }

    /// Makes the next job's unpacked copy of the archive at `file` (moved out of the job's
    /// reach first) in the background, when this worker keeps copies; else removes the file.
    fn warm_later(&self, file: &Path, digest: String) {
        let moved = self.warm.and_then(|warm| {
            let kept = warm.archive_file().ok()?;
            std::fs::rename(file, &kept).ok()?;
            Some((warm, kept))
        });
        match moved {
            Some((warm, kept)) => {
                warm.making(tokio::spawn(fill(Arc::clone(warm), kept, digest)));
            }
            None => {
                let _ = std::fs::remove_file(file);
            }
        }
    }

    /// The agent's home, where its `~/` cache paths are kept: in a job pod the agent
    /// container's (`--agent-home`), else a directory on the worker's disk.
    fn home(&self) -> std::path::PathBuf {
        self.agent_home
            .map_or_else(|| home_in(self.scratch), Path::to_path_buf)
    }

    /// [`Self::home`], made.
    fn make_home(&self) -> Result<std::path::PathBuf, SetupError> {
        let home = self.home();
        std::fs::create_dir_all(&home)
            .map_err(|e| SetupError::Snapshot(format!("making the agent's home: {e}")))?;
        Ok(home)
    }

    /// Packs the `cache` paths (the workspace's and the agent's home's) and saves them under
    /// `key`: the archive's size. The worker makes its own copy of it in the background.
    async fn save(
        &self,
        api: &ApiClient,
        key: &str,
        environment: &Environment,
    ) -> Result<u64, SetupError> {
        let file = self.scratch.join("snapshot.tar.zst");
        let packed = {
            let (workspace, home, cache, file) = (
                self.workspace.to_path_buf(),
                self.make_home()?,
                environment.cache.clone(),
                file.clone(),
            );
            tokio::task::spawn_blocking(move || {
                snapshot::pack(&workspace, Some(&home), &cache, &file)
            })
            .await
            .map_err(|e| SetupError::Snapshot(e.to_string()))??
        };
        let saved = api.save_snapshot(key, &file, &packed.sha256).await;
        if let Err(error) = saved {
            let _ = std::fs::remove_file(&file);
            return Err(SetupError::Snapshot(error.to_string()));
        }
        self.warm_later(&file, packed.sha256);
        Ok(packed.bytes)
    }
}

/// Makes `warm`'s copy of the archive at `file`, off the runtime's threads; the file goes.
async fn fill(warm: Arc<WarmSnapshots>, file: tempfile::TempPath, digest: String) {
    let filled =
        tokio::task::spawn_blocking(move || warm.fill(&file, &digest, MAX_RESTORE_BYTES)).await;
    if let Ok(Err(error)) = filled {
        tracing::warn!(%error, "this worker's copy of the snapshot was not made");
    }
}

/// A key as people read it: its first eight digits.
fn short(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// Removes a file, link or directory tree, not following links.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

/// The environment's workspace `cache` paths as gitignore patterns, anchored at the root and
/// taken literally: what setup made for the agent is no part of the job's change.
pub(crate) fn cache_patterns(environment: &Environment) -> Vec<String> {
    environment
        .cache
        .iter()
        .filter_map(|path| match path {
            CachePath::Workspace(path) => Some(path.to_string_lossy()),
            CachePath::Home(_) => None,
        })
        .map(|path| {
            let mut pattern = String::from("/");
            for c in path.chars() {
                if matches!(c, '\\' | '*' | '?' | '[' | ' ' | '!' | '#') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cache_paths_are_excluded_from_the_diff_literally_and_from_the_root() {
        let environment = Environment::parse_bytes(
            b"cache = [\"node_modules/\", \"build/*.o\", \"a b\", \"~/.npm\"]",
        )
        .unwrap();
        assert_eq!(
            cache_patterns(&environment),
            ["/node_modules", "/build/\\*.o", "/a\\ b"]
        );
    }
}
