//! A job's pipeline, stage by stage, in a fresh workspace: the agent in its sandbox, each step
//! as a WASM component with its own network policy and bounds. The job's reporting around it
//! is `job`'s (or `local`'s, for a run without an API).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ckrv_agents::pod::PodRun;
use ckrv_agents::{
    AgentDefinition, Allowlist, Entry, Invocation, RunRequest, SandboxUnavailable, SpecError,
};
use ckrv_wasm_host::{Limits, Origin, OriginError, OriginPolicy};
use ckrv_wit::types::{
    GitCredential, JobStart, PhaseUpdate, PipelineStage, PublishMode, StageKind, WorkerJob,
};

use crate::api_client::ApiClientError;
use crate::host_git::{ForgeApi, GitError, HostGit};
use crate::logs::JobLog;
use crate::options::{JobOptions, work_tempdir};
use crate::place::AgentPlace;
use crate::step_host::{DEFAULT_LIMITS, StepContext, StepEnv, builtin_component};

pub(crate) mod source;

pub(crate) use source::StageSource;

const SOURCE: &str = "orchestrator";

/// Why a job's stages stopped. The job's error message is its text.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("the API named no feature branch for the job")]
    NoFeatureBranch,
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A directory of the job's own, and what it was for.
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the workspace {} cannot be used: {source}", dir.display())]
    Workspace {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the workspace {} is not empty; the job needs a fresh one", .0.display())]
    WorkspaceNotEmpty(PathBuf),
    #[error(transparent)]
    ApiOrigin(OriginError),
    #[error("the API sent no pipeline stages")]
    NoStages,
    #[error("the API did not come back")]
    ApiGone,
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Sandbox(#[from] SandboxUnavailable),
    #[error("starting agent {agent} failed: {source}")]
    AgentStart {
        agent: String,
        #[source]
        source: std::io::Error,
    },
    #[error("agent exited with status {0}")]
    AgentExit(i32),
    #[error("agent was killed by a signal")]
    AgentKilled,
    #[error("stage {stage}: this worker has no built-in step `{step}`")]
    NoBuiltin { stage: String, step: String },
    #[error("stage {stage}: reading its component failed: {source}")]
    Component {
        stage: String,
        #[source]
        source: ApiClientError,
    },
    #[error("the agent's egress: {0}")]
    Egress(#[source] ckrv_agents::egress::PolicyError),
    #[error("stage {0}: its component is not in the pipeline")]
    ComponentMissing(String),
    #[error("stage {0} is the agent or its verification, not a step")]
    NotAStep(String),
    #[error("stage {stage}: allowed_hosts: {source}")]
    AllowedHosts {
        stage: String,
        #[source]
        source: OriginError,
    },
    /// A step failed: in its own words (the WIT boundary speaks strings), with what the host
    /// denied it.
    #[error("{0}")]
    Step(String),
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    /// A follow-up's start could not be read.
    #[error("{0}")]
    Start(String),
}

/// An `Io` error's constructor, for `map_err`.
fn io(doing: &'static str) -> impl Fn(std::io::Error) -> StageError + Copy {
    move |source| StageError::Io { doing, source }
}

/// Runs the pipeline's stages in a fresh workspace; returns the steps' outputs (after `diff`,
/// `diff` holds the patch).
pub(crate) async fn run_stages(
    source: &StageSource<'_>,
    options: &JobOptions,
    log: &JobLog,
    job: WorkerJob,
) -> Result<Vec<(String, String)>, StageError> {
    let WorkerJob {
        job,
        spec_content,
        pipeline,
        model_access,
        egress,
        git_credential,
        setup_timeout_s,
        fresh_setup,
        setup_egress,
        egress_internal,
        publish,
        start,
        verify_timeout_s,
        ..
    } = job;
    let publish = publish.unwrap_or(PublishMode::None);
    let internal = egress_internal
        .unwrap_or_default()
        .iter()
        .map(|entry| entry.parse::<Entry>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(StageError::Egress)?;
    let feature_branch = job
        .feature_branch_name
        .clone()
        .ok_or(StageError::NoFeatureBranch)?;
    let spec = ckrv_agents::parse_spec(&spec_content)?;
    let invocation = ckrv_agents::resolve(&spec)?;
    let spec_verify = spec.front.verify()?;
    log.info(
        SOURCE,
        format!(
            "Job {} for {} ({})",
            job.id, job.git_repo_url, job.git_base_branch
        ),
    );
    let dirs = JobDirs::create(options)?;
    let git = HostGit::new(&dirs.workspace, &dirs.git(), options.allow_local_repos)
        .map_err(io("preparing the job's git failed"))?;
    let git = job_git(
        git,
        &job.git_repo_url,
        publish,
        publish_target(&feature_branch, start.as_ref()),
        git_credential,
    );
    let forge = git.forge();
    let api_origin = source.api_origin().map_err(StageError::ApiOrigin)?;
    if pipeline.is_empty() {
        return Err(StageError::NoStages);
    }
    let mut outputs = job_inputs(
        publish,
        spec_title(&spec.body, &job.id),
        publish_target(&feature_branch, start.as_ref()).0,
        start.as_ref(),
    );
    let mut environment = None;
    let mut setup_summary = None;
    for stage in &pipeline {
        if stage.kind == StageKind::Agent {
            if let Some(start) = &start {
                start_from(source, log, &git, &job.git_base_branch, start).await?;
            }
            let setup = crate::setup::Setup {
                job_id: &job.id,
                repo_url: &job.git_repo_url,
                fresh: fresh_setup.unwrap_or(false),
                workspace: &dirs.workspace,
                scratch: &dirs.scratch,
                agent_home: match &options.agent {
                    AgentPlace::Pod(pod) => pod.home.as_deref(),
                    _ => None,
                },
                warm: options.warm.as_ref(),
                timeout: setup_timeout_s.map_or(crate::setup::DEFAULT_TIMEOUT, |s| {
                    std::time::Duration::from_secs(u64::from(s))
                }),
            };
            let policies = crate::setup::SetupEgress {
                job: &egress,
                ceiling: setup_egress.as_deref(),
                internal: &internal,
            };
            let prepared = setup
                .run(source, options, log, invocation.agent, &policies)
                .await?;
            if let Some(environment) = &prepared.environment {
                git.exclude(&crate::setup::cache_patterns(environment))?;
            }
            environment = prepared.environment;
            setup_summary = prepared.summary;
        }
        if stage.kind == StageKind::Verify {
            // The spec's own check wins over the repository's; without either, nothing runs.
            let Some(verify) = spec_verify
                .as_ref()
                .or(environment.as_ref().and_then(|e| e.verify.as_ref()))
            else {
                continue;
            };
            let verifier = crate::verify::Verifier {
                options,
                log,
                job_id: &job.id,
                workspace: &dirs.workspace,
                scratch: &dirs.scratch,
                timeout: verify_timeout_s.map_or(crate::verify::DEFAULT_TIMEOUT, |s| {
                    std::time::Duration::from_secs(u64::from(s))
                }),
            };
            let phase = |verification| PhaseUpdate {
                phase: stage.phase,
                agent: Some(invocation.agent.name.clone()),
                setup: None,
                setup_egress: None,
                verification,
            };
            log.phase(phase(None));
            let found = verifier.run(verify, environment.as_ref()).await;
            log.phase(phase(Some(found)));
            continue;
        }
        log.phase(PhaseUpdate {
            phase: stage.phase,
            agent: Some(invocation.agent.name.clone()),
            // What the setup did goes with the agent's phase, once.
            setup: setup_summary.take(),
            setup_egress: None,
            verification: None,
        });
        // A step may talk to the API (upload does): it starts once the API has everything
        // before it, after an outage of any length. The agent needs no API and runs on, except
        // in a job pod: there the API narrows the pod's network to the agent's when it takes
        // the agent's phase, and the agent must not start before.
        let waits = stage.kind != StageKind::Agent || matches!(options.agent, AgentPlace::Pod(_));
        if waits && !log.delivered().await {
            return Err(StageError::ApiGone);
        }
        if stage.kind == StageKind::Agent {
            let model_env = source.model_env(invocation.agent, &model_access);
            let allowlist = source
                .egress(invocation.agent, &egress, &internal)
                .map_err(StageError::Egress)?;
            let mut request =
                agent_request(&invocation, &job.id, &dirs, model_env, allowlist, options);
            // An attempt of a group knows which it is, so a wrapper can vary (docs/attempts.md).
            if let Some(attempt) = job.attempt {
                request
                    .env
                    .push(("CKRV_ATTEMPT".to_string(), attempt.to_string()));
            }
            // The repository's plain variables first: the definition's own win.
            if let Some(environment) = &environment {
                let mut env: Vec<(String, String)> = environment.env.clone().into_iter().collect();
                env.retain(|(name, _)| !request.env.iter().any(|(n, _)| n == name));
                env.append(&mut request.env);
                request.env = env;
                // What setup kept under its home, the agent finds under its own.
                request.home_cache = environment.home_cache();
            }
            run_agent(options, log, invocation.agent, &request).await?;
            git.exclude(&invocation.agent.exclude)?;
            continue;
        }
        let ctx = StepContext {
            job_id: job.id.clone(),
            git_repo_url: job.git_repo_url.clone(),
            git_base_branch: job.git_base_branch.clone(),
            feature_branch_name: feature_branch.clone(),
            api_url: source.api_url().to_string(),
            params: stage
                .params
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect(),
            inputs: outputs.clone(),
        };
        let api = api_origin.as_ref().map(|(origin, token)| (origin, *token));
        let credentials = StageCredentials {
            api,
            forge: forge.as_ref(),
        };
        for (key, value) in run_step(source, options, log, stage, &git, credentials, ctx).await? {
            outputs.retain(|(k, _)| *k != key);
            outputs.push((key, value));
        }
    }
    dirs.close();
    Ok(outputs)
}

/// The host's git for the job. The credential goes to the host's clone of the job's own
/// repository, once, and to its push when the job publishes; no step and no agent ever holds
/// it.
fn job_git(
    git: HostGit,
    repo_url: &str,
    publish: PublishMode,
    target: (&str, Option<&str>),
    credential: Option<GitCredential>,
) -> HostGit {
    let git = if publish.publishes() {
        git.with_publish(repo_url, target, credential.clone())
    } else {
        git
    };
    match credential {
        Some(credential) => git.with_credential(repo_url, credential),
        None => git,
    }
}

/// Where a publish pushes, and the commit it replaces there: the job's own new branch, or
/// for a follow-up the branch its chain published.
fn publish_target<'a>(
    feature_branch: &'a str,
    start: Option<&'a JobStart>,
) -> (&'a str, Option<&'a str>) {
    match start.and_then(|s| s.published_branch.as_deref()) {
        Some(branch) => (branch, start.and_then(|s| s.published_commit.as_deref())),
        None => (feature_branch, None),
    }
}

/// What the job says of itself to its steps (the `publish` step reads them): how it
/// publishes, its title, the branch a publish pushes, and a follow-up's chain's pull request,
/// which its push updates rather than opening another.
fn job_inputs(
    publish: PublishMode,
    title: String,
    publish_branch: &str,
    start: Option<&JobStart>,
) -> Vec<(String, String)> {
    let mut inputs = vec![
        ("publish".to_string(), publish.as_str().to_string()),
        ("title".to_string(), title),
        ("publish_branch".to_string(), publish_branch.to_string()),
    ];
    if let Some(url) = start.and_then(|s| s.pull_request_url.clone()) {
        inputs.push(("pull_request_url".to_string(), url));
    }
    inputs
}

/// Puts the earlier job's change in the cloned workspace, on its base commit: a follow-up's
/// start (docs/follow-ups.md).
async fn start_from(
    source: &StageSource<'_>,
    log: &JobLog,
    git: &HostGit,
    base_branch: &str,
    start: &JobStart,
) -> Result<(), StageError> {
    let Some(api) = source.api() else {
        return Err(StageError::Start(
            "a follow-up needs the API its earlier job's change is in".into(),
        ));
    };
    let patch = api
        .fetch_start_diff(&start.diff_sha256)
        .await
        .map_err(|e| StageError::Start(format!("reading job {}'s change: {e}", start.parent_id)))?;
    git.start_from(base_branch, &start.base_commit, &patch)
        .await?;
    log.info(
        SOURCE,
        format!(
            "Starting from job {}'s change ({} bytes) on {}",
            start.parent_id,
            patch.len(),
            start.base_commit.get(..12).unwrap_or(&start.base_commit)
        ),
    );
    Ok(())
}

/// The job's directory: the workspace the agent and steps see, the agent's scratch space, and
/// beside them the host's private git state, which neither ever sees. Removed when dropped.
struct JobDirs {
    dir: tempfile::TempDir,
    workspace: PathBuf,
    scratch: PathBuf,
}

impl JobDirs {
    fn create(options: &JobOptions) -> Result<Self, StageError> {
        let dir = work_tempdir(options.work_dir.as_deref(), "ckrv-job-")
            .map_err(io("creating the job directory failed"))?;
        // Others may pass through (the agent's unprivileged user reaches its workspace) but
        // not list it, and the private git state inside stays 0700.
        let pass_through = || std::os::unix::fs::PermissionsExt::from_mode(0o711);
        std::fs::set_permissions(dir.path(), pass_through())
            .map_err(io("preparing the job directory failed"))?;
        let workspace = match &options.workspace {
            Some(given) => given_workspace(given)?,
            None => {
                let workspace = dir.path().join("workspace");
                std::fs::create_dir(&workspace).map_err(io("creating the workspace failed"))?;
                workspace
            }
        };
        let scratch = dir.path().join("agent");
        std::fs::create_dir(&scratch).map_err(io("creating the workspace failed"))?;
        std::fs::set_permissions(&scratch, pass_through())
            .map_err(io("preparing the job directory failed"))?;
        Ok(Self {
            dir,
            workspace,
            scratch,
        })
    }

    /// The host's private git state.
    fn git(&self) -> PathBuf {
        self.dir.path().join("git")
    }

    fn close(self) {
        if let Err(e) = self.dir.close() {
            tracing::warn!(error = %e, "removing the workspace failed");
        }
    }
}

/// The workspace `--workspace` named: it must be an empty directory, as a fresh volume is.
fn given_workspace(dir: &Path) -> Result<PathBuf, StageError> {
    let mut entries = std::fs::read_dir(dir).map_err(|source| StageError::Workspace {
        dir: dir.to_path_buf(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(StageError::WorkspaceNotEmpty(dir.to_path_buf()));
    }
    Ok(dir.to_path_buf())
}

/// What the agent runs with: the spec's command in the job's workspace, its definition's fixed
/// environment, and its model environment (placeholders, never the operator's keys).
fn agent_request(
    invocation: &Invocation,
    job_id: &str,
    dirs: &JobDirs,
    model_env: Vec<(String, String)>,
    egress: Option<Allowlist>,
    options: &JobOptions,
) -> RunRequest {
    let agent = invocation.agent;
    RunRequest {
        command: invocation.command.clone(),
        workspace: dirs.workspace.clone(),
        scratch: dirs.scratch.clone(),
        job_id: job_id.to_string(),
        egress,
        env: agent
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        secrets: model_env,
        prompt: invocation.prompt.clone(),
        agent_bin: options.agent_bin.clone(),
        home_cache: Vec::new(),
    }
}

/// Runs the agent to its end, its output streamed to the job log under its name.
async fn run_agent(
    options: &JobOptions,
    log: &JobLog,
    agent: &AgentDefinition,
    request: &RunRequest,
) -> Result<(), StageError> {
    log.info(SOURCE, format!("Starting agent: {}", agent.name));
    let (status, _) = options
        .run_where_the_agent_runs(log, &agent.name, PodRun::Agent, request)
        .await?;
    let status = status.map_err(|source| StageError::AgentStart {
        agent: agent.name.clone(),
        source,
    })?;
    match status.code {
        Some(0) => {
            log.info(SOURCE, format!("Agent {} finished", agent.name));
            Ok(())
        }
        Some(code) => Err(StageError::AgentExit(code)),
        None => Err(StageError::AgentKilled),
    }
}

/// Runs one step's component with its policy and bounds; returns its outputs.
async fn run_step(
    source: &StageSource<'_>,
    options: &JobOptions,
    log: &JobLog,
    stage: &PipelineStage,
    git: &HostGit,
    credentials: StageCredentials<'_>,
    ctx: StepContext,
) -> Result<Vec<(String, String)>, StageError> {
    log.info(SOURCE, starting_message(&stage.name));
    let bytes = component_of(source, stage).await?;
    let env = StepEnv {
        name: &stage.name,
        git,
        log,
        policy: stage_policy(stage, credentials)?,
        limits: stage_limits(stage),
    };
    let output = options
        .steps
        .run(&bytes, ctx, env)
        .await
        .into_result(&stage.name)
        .map_err(StageError::Step)?;
    log.info(&stage.name, output.summary);
    Ok(output.outputs)
}

fn starting_message(stage: &str) -> String {
    match stage {
        ckrv_pipeline::CLONE => "Cloning repository...".to_string(),
        ckrv_pipeline::DIFF => "Computing the diff...".to_string(),
        ckrv_pipeline::UPLOAD => "Uploading the result...".to_string(),
        ckrv_pipeline::PUBLISH => "Publishing the result...".to_string(),
        other => format!("Running step {other}..."),
    }
}

/// The stage's component: built in, or the operator's, read from the API (or the local
/// pipeline) by digest.
async fn component_of(
    source_of: &StageSource<'_>,
    stage: &PipelineStage,
) -> Result<Cow<'static, [u8]>, StageError> {
    let source = stage.source.as_deref().unwrap_or_default();
    match stage.kind {
        StageKind::Builtin => {
            builtin_component(source)
                .map(Cow::Borrowed)
                .ok_or_else(|| StageError::NoBuiltin {
                    stage: stage.name.clone(),
                    step: source.to_string(),
                })
        }
        StageKind::Component => match source_of {
            StageSource::Api { client, .. } => client
                .fetch_component(source)
                .await
                .map(Cow::Owned)
                .map_err(|source| StageError::Component {
                    stage: stage.name.clone(),
                    source,
                }),
            StageSource::Local { pipeline, .. } => pipeline
                .component(source)
                .map(|bytes| Cow::Owned(bytes.to_vec()))
                .ok_or_else(|| StageError::ComponentMissing(stage.name.clone())),
        },
        StageKind::Agent | StageKind::Verify => Err(StageError::NotAStep(stage.name.clone())),
    }
}

/// The credentials the host adds to a step's requests: the job's token for the API, and the
/// job's git token for its forge's API.
#[derive(Clone, Copy)]
struct StageCredentials<'a> {
    api: Option<(&'a Origin, &'a str)>,
    forge: Option<&'a ForgeApi>,
}

/// Where the stage's step may connect: the API, if there is one (the host adds the job's
/// token), and the stage's allowed hosts. The job's forge API gets the job's git token only
/// when the stage allows its origin: the operator decides which steps may call the forge.
fn stage_policy(
    stage: &PipelineStage,
    credentials: StageCredentials<'_>,
) -> Result<OriginPolicy, StageError> {
    let mut policy = match credentials.api {
        Some((origin, token)) => OriginPolicy::deny_all().allow_with_bearer(origin.clone(), token),
        None => OriginPolicy::deny_all(),
    };
    let forge = credentials
        .forge
        .and_then(|forge| Some((Origin::of_url(&forge.api_url).ok()?, forge.token.as_str())));
    for host in &stage.allowed_hosts {
        let origin = Origin::parse(host).map_err(|source| StageError::AllowedHosts {
            stage: stage.name.clone(),
            source,
        })?;
        policy = match &forge {
            Some((forge, token)) if *forge == origin => policy.allow_with_bearer(origin, token),
            _ => policy.allow(origin),
        };
    }
    Ok(policy)
}

/// The job's title for a commit or pull request: the spec's first `# ` heading, else the job's.
fn spec_title(body: &str, job_id: &str) -> String {
    body.lines()
        .find_map(|line| line.trim().strip_prefix("# "))
        .map(|title| title.trim().chars().take(200).collect::<String>())
        .filter(|title| !title.is_empty())
        .unwrap_or_else(|| format!("ckrv job {job_id}"))
}

/// The stage's bounds: its own, else the worker's defaults.
fn stage_limits(stage: &PipelineStage) -> Limits {
    Limits {
        memory_bytes: stage
            .memory_mb
            .map_or(DEFAULT_LIMITS.memory_bytes, |mb| mb as usize * 1024 * 1024),
        timeout: stage.timeout_s.map_or(DEFAULT_LIMITS.timeout, |s| {
            std::time::Duration::from_secs(u64::from(s))
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host_git::ForgeKind;

    fn stage(allowed_hosts: &[&str]) -> PipelineStage {
        PipelineStage {
            name: "publish".into(),
            kind: StageKind::Builtin,
            source: Some("publish".into()),
            phase: ckrv_wit::types::JobPhase::Publishing,
            params: Vec::new(),
            timeout_s: None,
            memory_mb: None,
            allowed_hosts: allowed_hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    /// The job's git token reaches the forge's API only from a stage the operator let call
    /// it; no other allowed host gets it.
    #[test]
    fn the_forge_gets_the_jobs_token_only_where_the_stage_allows_it() {
        let forge = ForgeApi {
            kind: ForgeKind::Github,
            api_url: "http://127.0.0.1:9000/api/v3".into(),
            project: "o/r".into(),
            token: "ghp_secret".into(),
        };
        let api = Origin::parse("http://127.0.0.1:8080").unwrap();
        let credentials = StageCredentials {
            api: Some((&api, "worker-token")),
            forge: Some(&forge),
        };
        let allowed = stage_policy(
            &stage(&["http://127.0.0.1:9000", "http://127.0.0.1:9001"]),
            credentials,
        )
        .unwrap();
        assert!(allowed.allows("http://127.0.0.1:9000/api/v3/repos/o/r/pulls"));
        let shown = format!("{allowed:?}");
        assert!(shown.contains("credentials_for: [Origin"), "{shown}");
        // Allowed and given the token; the other allowed host only allowed.
        assert_eq!(shown.matches("port: 9000").count(), 2, "{shown}");
        assert_eq!(shown.matches("port: 9001").count(), 1, "{shown}");
        assert!(!shown.contains("ghp_secret"));
        let denied = stage_policy(&stage(&["http://127.0.0.1:9001"]), credentials).unwrap();
        assert!(!denied.allows("http://127.0.0.1:9000/api/v3/repos/o/r/pulls"));
        assert_eq!(format!("{denied:?}").matches("port: 9000").count(), 0);
    }

    #[test]
    fn the_title_is_the_specs_first_heading() {
        assert_eq!(
            spec_title("intro\n# Add a flag \nmore\n# Other", "j"),
            "Add a flag"
        );
        assert_eq!(spec_title("no heading", "j1"), "ckrv job j1");
    }
}
