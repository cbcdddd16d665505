//! The job's verification (docs/verification.md): the project's own check (`verify` in the
//! spec's front matter or `.ckrv/environment.toml`) run on the agent's change, where the agent
//! ran (its sandbox, or its container of a job pod; with no network and none of the job's
//! model access), in phase
//! `verifying`, within its own time limit. It never fails the job: what it found (its verdict,
//! exit status, duration, last lines and, from a JUnit XML report, test counts) goes to the
//! API with the phase, and the change is kept either way.

use std::path::Path;
use std::time::{Duration, Instant};

use ckrv_agents::RunRequest;
use ckrv_agents::environment::Environment;
use ckrv_agents::pod::PodRun;
use ckrv_agents::verify::Verify;
use ckrv_wit::types::{Verdict, Verification};

use crate::logs::JobLog;
use crate::options::JobOptions;
use crate::place::AgentPlace;

/// The log source of the check's output and of what is said about it.
pub const SOURCE: &str = "verify";
/// How long a check may run when the API names no limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// One job's verification: where it runs, for how long at most, and where it says so.
pub(crate) struct Verifier<'a> {
    pub options: &'a JobOptions,
    pub log: &'a JobLog,
    pub job_id: &'a str,
    pub workspace: &'a Path,
    pub scratch: &'a Path,
    pub timeout: Duration,
}

impl Verifier<'_> {
    /// Runs `verify` in the workspace with the environment's variables and kept home paths;
    /// says what it found, in the job's log too.
    pub(crate) async fn run(
        &self,
        verify: &Verify,
        environment: Option<&Environment>,
    ) -> Verification {
        let found = self.check(verify, environment).await;
        match found.verdict {
            Verdict::Passed => self.log.info(SOURCE, found.line()),
            _ => self.log.warn(SOURCE, found.line()),
        }
        found
    }

    async fn check(&self, verify: &Verify, environment: Option<&Environment>) -> Verification {
        let (options, log) = (self.options, self.log);
        let mut found = Verification {
            command: verify.command.clone(),
            verdict: Verdict::NotRun,
            exit_code: None,
            duration_ms: 0,
            last_lines: Vec::new(),
            tests: None,
            note: None,
        };
        // In a job pod the API's egress proxy refuses everything once it has the phase
        // `verifying`: the check must not start before.
        if matches!(options.agent, AgentPlace::Pod(_)) && !log.delivered().await {
            found.note = Some("the API did not come back to take the phase".into());
            return found;
        }
        let mut request = RunRequest::new(
            vec!["sh".into(), "-c".into(), verify.command.clone()],
            self.workspace.to_path_buf(),
            self.scratch.to_path_buf(),
            self.job_id,
        );
        if let Some(environment) = environment {
            request.env = environment.env.clone().into_iter().collect();
            request.home_cache = environment.home_cache();
        }
        log.info(SOURCE, format!("Verifying the change: {}", verify.command));
        let started = Instant::now();
        let run = options.run_where_the_agent_runs(log, SOURCE, PodRun::Verify, &request);
        let outcome = tokio::time::timeout(self.timeout, run).await;
        found.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Err(_) => {
                found.verdict = Verdict::TimedOut;
                found.note = Some(format!(
                    "it did not finish within its limit of {} s (the operator's --verify-timeout) and was stopped",
                    self.timeout.as_secs()
                ));
            }
            Ok(Err(e)) => found.note = Some(e.to_string()),
            Ok(Ok((Err(e), _))) => found.note = Some(format!("starting it failed: {e}")),
            Ok(Ok((Ok(status), last))) => {
                found.last_lines = last;
                found.exit_code = status.code;
                found.verdict = match status.code {
                    Some(0) => Verdict::Passed,
                    Some(_) => Verdict::Failed,
                    None => {
                        found.note = Some("it was killed by a signal".into());
                        Verdict::Failed
                    }
                };
            }
        }
        if let (Some(report), Verdict::Passed | Verdict::Failed) = (&verify.junit, found.verdict) {
            match crate::junit::read(self.workspace, report) {
                Ok(tests) => {
                    if tests.failed > 0 && found.verdict == Verdict::Passed {
                        found.verdict = Verdict::Failed;
                        found.note = Some(format!(
                            "it exited 0, but its report counts {} failed",
                            tests.failed
                        ));
                    }
                    found.tests = Some(tests);
                }
                Err(why) => {
                    found.note.get_or_insert(why.to_string());
                }
            }
        }
        found
    }
}
