//! The repository's setup (`.ckrv/environment.toml`, docs/environments.md): after the clone and
//! before the agent, in phase `setup`, where the agent runs (its sandbox), with the
//! environment's egress within the job's own policy and a time limit. Its output goes to the
//! job's log under `setup`; a failed setup fails the job with its exit status and last lines.

use std::path::Path;
use std::time::{Duration, Instant};

use ckrv_agents::environment::{CachePath, ENVIRONMENT_FILE, Environment, EnvironmentError};
use ckrv_agents::{AgentDefinition, Policy, RunRequest};
use ckrv_wit::types::{JobPhase, PhaseUpdate};

use crate::job::{AgentPlace, JobOptions};
use crate::logs::JobLog;
use crate::stages::{StageError, StageSource, run_where_the_agent_runs};

/// The log source of setup's output and of what is said about it.
pub const SOURCE: &str = "setup";
/// How long setup may run when the API names no limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Why setup failed the job.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    #[error(
        "{ENVIRONMENT_FILE}: egress `{requested}` is not within the job's policy `{allowed}`: setup may reach at most what the job's agent may (the operator's --egress-allow)"
    )]
    Egress { requested: String, allowed: String },
    #[error("starting setup failed: {0}")]
    Start(#[source] std::io::Error),
    #[error("setup exited with status {code}; its last lines:\n{last}")]
    Exit { code: i32, last: String },
    #[error("setup was killed by a signal; its last lines:\n{last}")]
    Killed { last: String },
    #[error(
        "setup did not finish within its limit of {} s (the operator's --setup-timeout); make it shorter, or ask for a longer limit",
        .0.as_secs()
    )]
    Timeout(Duration),
}

/// One job's setup: where it runs and for how long at most.
pub(crate) struct Setup<'a> {
    pub job_id: &'a str,
    pub workspace: &'a Path,
    pub scratch: &'a Path,
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
        job_egress: &str,
    ) -> Result<Option<Environment>, StageError> {
        let Some(environment) = Environment::load(self.workspace).map_err(SetupError::from)? else {
            return Ok(None);
        };
        let Some(script) = &environment.setup else {
            return Ok(Some(environment));
        };
        if matches!(options.agent, AgentPlace::Pod(_)) {
            log.warn(
                SOURCE,
                format!(
                    "{ENVIRONMENT_FILE}: setup does not run in a Kubernetes job pod yet; the agent starts without it"
                ),
            );
            return Ok(Some(environment));
        }
        let allowed: Policy = job_egress.parse().map_err(StageError::Egress)?;
        let requested = environment.egress.clone().unwrap_or_default();
        let policy = allowed.narrow(&requested).map_err(|_| SetupError::Egress {
            requested: requested.to_string(),
            allowed: allowed.to_string(),
        })?;
        let mut request = RunRequest::new(
            vec!["sh".into(), "-c".into(), script.clone()],
            self.workspace.to_path_buf(),
            self.scratch.to_path_buf(),
            self.job_id,
        );
        request.env = environment.env.clone().into_iter().collect();
        request.egress = source.egress(agent, &policy.to_string())?;
        log.phase(PhaseUpdate {
            phase: JobPhase::Setup,
            agent: Some(agent.name.clone()),
        });
        log.info(
            SOURCE,
            format!("Running the repository's setup ({ENVIRONMENT_FILE}, egress `{policy}`)"),
        );
        let started = Instant::now();
        let run = run_where_the_agent_runs(options, log, SOURCE, &request);
        let (status, last) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| SetupError::Timeout(self.timeout))??;
        let status = status.map_err(SetupError::Start)?;
        let last = last.join("\n");
        match status.code {
            Some(0) => {
                log.info(
                    SOURCE,
                    format!("Setup finished in {:.1} s", started.elapsed().as_secs_f64()),
                );
                Ok(Some(environment))
            }
            Some(code) => Err(SetupError::Exit { code, last }.into()),
            None => Err(SetupError::Killed { last }.into()),
        }
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
