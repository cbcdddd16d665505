//! What the operator hands every worker, read and checked once at start: the pipeline
//! (`--pipeline FILE`), which agents may run (`--agents`), and the agents' secrets
//! (`--agent-secrets FILE|DIR`). Secrets are the platform's: a job never brings its own, and no
//! worker ever holds one. The model gateway puts them into its agent's model requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ckrv_agents::{Entry, Policy, agent_names, agents, find_agent, parse_spec, resolve};
use ckrv_pipeline::{Pipeline, PipelineError};
use zeroize::Zeroizing;

/// The shortest secret accepted: shorter values could not be told apart from ordinary text
/// when they are scrubbed from logs.
const MIN_SECRET_LEN: usize = 8;

/// The pipeline, the agents that may run, their secrets, and where agents may connect.
pub struct WorkerSetup {
    pub pipeline: Pipeline,
    enabled: Vec<String>,
    secrets: BTreeMap<String, Zeroizing<String>>,
    /// The operator's egress policy (`--egress-allow`, or the pipeline's agent stage), in
    /// place of each agent's own.
    egress: Option<Policy>,
    /// The most a repository's setup may reach (`--setup-egress-allow`); the job's own
    /// policy when unset.
    setup_egress: Option<Policy>,
    /// Entries the operator runs inside its network (`--egress-internal`), reachable on
    /// private and loopback addresses.
    internal: Vec<Entry>,
}

impl std::fmt::Debug for WorkerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSetup")
            .field("stages", &self.pipeline.stages.len())
            .field("enabled", &self.enabled)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("egress", &self.egress)
            .field("setup_egress", &self.setup_egress)
            .field("internal", &self.internal)
            .finish()
    }
}

impl Default for WorkerSetup {
    /// The built-in pipeline, every agent, no secrets.
    fn default() -> Self {
        Self {
            pipeline: Pipeline::builtin(),
            enabled: agents().iter().map(|a| a.name.clone()).collect(),
            secrets: BTreeMap::new(),
            egress: None,
            setup_egress: None,
            internal: Vec::new(),
        }
    }
}

/// Why the server cannot start with these settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("--agents: unknown agent `{name}`; known agents: {known}")]
    UnknownAgent { name: String, known: String },
    #[error("--agents names no agent; name at least one of: {0}")]
    NoAgents(String),
    #[error("agent secrets {path}: {problem}")]
    Secrets { path: PathBuf, problem: String },
    #[error(
        "--egress-allow `{flag}` and the pipeline's agent stage (egress = \"{stage}\") both set the agents' egress policy; keep one"
    )]
    TwoEgressPolicies { flag: String, stage: String },
}

impl WorkerSetup {
    /// The setup from the operator's flags; `None` keeps each default.
    pub fn load(
        pipeline: Option<&Path>,
        enabled: Option<&[String]>,
        secrets: Option<&Path>,
    ) -> Result<Self, SetupError> {
        let mut setup = Self::default();
        if let Some(path) = pipeline {
            setup.pipeline = Pipeline::load(path)?;
            setup.egress = setup.pipeline.agent_egress.clone();
        }
        if let Some(names) = enabled {
            let names: Vec<String> = names
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
            if names.is_empty() {
                return Err(SetupError::NoAgents(agent_names()));
            }
            if let Some(name) = names.iter().find(|n| find_agent(n).is_none()) {
                return Err(SetupError::UnknownAgent {
                    name: name.clone(),
                    known: agent_names(),
                });
            }
            setup.enabled = names;
        }
        if let Some(path) = secrets {
            setup.secrets = read_secrets(path)?;
        }
        Ok(setup)
    }

    /// Enabled agents that declare secrets but have none of them: their jobs will be refused.
    pub fn agents_missing_secrets(&self) -> Vec<&str> {
        self.enabled
            .iter()
            .filter_map(|name| find_agent(name))
            .filter(|a| {
                !a.secrets.is_empty() && !a.secrets.iter().any(|s| self.secrets.contains_key(s))
            })
            .map(|a| a.name.as_str())
            .collect()
    }

    /// With the operator's egress policy (`--egress-allow`): every job's agent may connect to
    /// what it allows, and a spec may ask for less. The pipeline's agent stage may set it
    /// instead, not as well.
    pub fn with_egress(mut self, egress: Option<Policy>) -> Result<Self, SetupError> {
        match (egress, &self.egress) {
            (Some(flag), Some(stage)) => Err(SetupError::TwoEgressPolicies {
                flag: flag.to_string(),
                stage: stage.to_string(),
            }),
            (Some(flag), None) => {
                self.egress = Some(flag);
                Ok(self)
            }
            (None, _) => Ok(self),
        }
    }

    /// With the most a repository's setup may reach (`--setup-egress-allow`; the job's own
    /// policy when `None`), and the entries the operator runs inside its network
    /// (`--egress-internal`), which may then resolve to private and loopback addresses.
    pub fn with_setup_egress(mut self, setup: Option<Policy>, internal: Vec<Entry>) -> Self {
        self.setup_egress = setup;
        self.internal = internal;
        self
    }

    /// The most a repository's setup may reach, when the operator says (else the job's own
    /// policy applies).
    pub fn setup_egress(&self) -> Option<&Policy> {
        self.setup_egress.as_ref()
    }

    /// The entries the operator runs inside its network (`--egress-internal`).
    pub fn internal(&self) -> &[Entry] {
        &self.internal
    }

    /// The operator's egress policy, if any (`--egress-allow`, or the pipeline's agent stage).
    pub fn operator_egress(&self) -> Option<&Policy> {
        self.egress.as_ref()
    }

    /// The egress policy of the spec's job: its own request within the operator's policy, or
    /// else that policy (the agent's own when the operator set none). `none` for a spec that
    /// does not parse or asks past the policy (it was refused when submitted; the operator's
    /// policy may have changed since).
    pub fn egress_for(&self, spec: &str) -> Policy {
        parse_spec(spec)
            .ok()
            .and_then(|spec| {
                let agent = find_agent(&spec.front.agent)?;
                Policy::for_job(
                    &agent.egress,
                    self.egress.as_ref(),
                    spec.front.egress.as_ref(),
                )
                .ok()
            })
            .unwrap_or(Policy::None)
    }

    /// Checks at dispatch that the spec can run here: its front matter names an enabled agent
    /// with valid options, the agent's secrets are configured, and any egress it asks for is
    /// within the operator's policy.
    pub fn check_spec(&self, spec: &str) -> Result<(), String> {
        let spec = parse_spec(spec).map_err(|e| e.to_string())?;
        if !self.enabled.contains(&spec.front.agent) {
            let problem = match find_agent(&spec.front.agent) {
                Some(_) => "is not enabled on this server",
                None => "is unknown",
            };
            return Err(format!(
                "agent `{}` {problem}; enabled agents: {}",
                spec.front.agent,
                self.enabled.join(", ")
            ));
        }
        let invocation = resolve(&spec).map_err(|e| e.to_string())?;
        let agent = invocation.agent;
        if !agent.secrets.is_empty() && !agent.secrets.iter().any(|s| self.secrets.contains_key(s))
        {
            return Err(format!(
                "agent `{}` needs one of {} and this server has none configured; its operator sets them with `ckrv-api serve --agent-secrets`",
                agent.name,
                agent.secrets.join(", ")
            ));
        }
        Policy::for_job(
            &agent.egress,
            self.egress.as_ref(),
            spec.front.egress.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The key variables of the spec's agent whose keys are configured: those its job's
    /// agent may call the model gateway for.
    pub fn keys_for(&self, spec: &str) -> Vec<String> {
        let Some(agent) = parse_spec(spec)
            .ok()
            .and_then(|s| find_agent(&s.front.agent))
        else {
            return Vec::new();
        };
        agent
            .secrets
            .iter()
            .filter(|name| self.secrets.contains_key(*name))
            .cloned()
            .collect()
    }

    /// The operator's secret `name`: only the model gateway reads one, to put it into a
    /// request on its way out.
    pub fn key(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(|value| value.as_str())
    }
}

/// Reads `NAME=value` lines from a file, or one secret per file (named by the file) from a
/// directory, as Kubernetes mounts a Secret. Each must be readable by this user alone.
fn read_secrets(path: &Path) -> Result<BTreeMap<String, Zeroizing<String>>, SetupError> {
    let error = |path: &Path, problem: String| SetupError::Secrets {
        path: path.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| error(path, e.to_string()))?;
    private(path, &meta).map_err(|p| error(path, p))?;
    let mut secrets = BTreeMap::new();
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| error(path, e.to_string()))?;
        for entry in entries {
            let file = entry.map_err(|e| error(path, e.to_string()))?.path();
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Kubernetes' own bookkeeping (`..data` and the timestamped directory).
            if name.starts_with('.') {
                continue;
            }
            let meta = std::fs::metadata(&file).map_err(|e| error(&file, e.to_string()))?;
            if !meta.is_file() {
                continue;
            }
            private(&file, &meta).map_err(|p| error(&file, p))?;
            let value = Zeroizing::new(
                std::fs::read_to_string(&file).map_err(|e| error(&file, e.to_string()))?,
            );
            let value = value.strip_suffix('\n').unwrap_or(&value);
            add_secret(&mut secrets, &name, value).map_err(|p| error(&file, p))?;
        }
    } else {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| error(path, e.to_string()))?);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| error(path, format!("line {}: expected NAME=value", n + 1)))?;
            add_secret(&mut secrets, name.trim(), value.trim())
                .map_err(|p| error(path, format!("line {}: {p}", n + 1)))?;
        }
    }
    Ok(secrets)
}

/// Refuses a file or directory others may read, as ssh does with private keys.
fn private(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    if let Some(mode) = crate::private_file::exposure(path, meta) {
        return Err(format!(
            "other users can read it (mode {mode:o}); run `chmod {} {}`",
            if meta.is_dir() { "700" } else { "600" },
            path.display()
        ));
    }
    Ok(())
}

/// Adds one secret, checking its name against the agents' declarations. The value never
/// appears in an error.
fn add_secret(
    secrets: &mut BTreeMap<String, Zeroizing<String>>,
    name: &str,
    value: &str,
) -> Result<(), String> {
    let declared: Vec<&str> = {
        let mut all: Vec<&str> = agents()
            .iter()
            .flat_map(|a| a.secrets.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    if !declared.contains(&name) {
        return Err(format!(
            "`{name}` is a secret no agent takes; agents take: {}",
            declared.join(", ")
        ));
    }
    if value.len() < MIN_SECRET_LEN {
        return Err(format!(
            "`{name}` is shorter than {MIN_SECRET_LEN} characters; is it the real key?"
        ));
    }
    if secrets
        .insert(name.to_string(), Zeroizing::new(value.to_string()))
        .is_some()
    {
        return Err(format!("`{name}` is given twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const KEY: &str = "sk-ant-test-0123456789abcdef";

    fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn spec(agent: &str) -> String {
        format!("---\nagent: {agent}\n---\nAdd a greeting.\n")
    }

    #[test]
    fn secrets_reach_only_the_agents_that_declare_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = private_file(
            dir.path(),
            "secrets.env",
            &format!(
                "# the team's keys\nANTHROPIC_API_KEY={KEY}\n\nOPENAI_API_KEY=sk-openai-0123456789\n"
            ),
        );
        let setup = WorkerSetup::load(None, None, Some(&file)).unwrap();
        // A claude-code job may use the Anthropic key (by name: only the gateway reads it).
        assert_eq!(setup.keys_for(&spec("claude-code")), ["ANTHROPIC_API_KEY"]);
        assert_eq!(setup.key("ANTHROPIC_API_KEY"), Some(KEY));
        assert!(
            setup
                .keys_for("---\nagent: script\nrun: env\n---\n")
                .is_empty()
        );
        assert!(setup.check_spec(&spec("claude-code")).is_ok());
        // Gemini's keys are not configured: its jobs are refused at dispatch, saying why.
        let err = setup.check_spec(&spec("gemini-cli")).unwrap_err();
        assert!(err.starts_with("agent `gemini-cli` needs one of "), "{err}");
        assert!(err.ends_with("`ckrv-api serve --agent-secrets`"), "{err}");
        assert!(setup.agents_missing_secrets().contains(&"gemini-cli"));
        assert!(!format!("{setup:?}").contains(KEY));
    }

    #[test]
    fn a_jobs_egress_is_its_specs_within_the_operators_policy() {
        let setup = WorkerSetup::default();
        assert_eq!(setup.egress_for(&spec("claude-code")), Policy::Model);
        assert_eq!(
            setup.egress_for("---\nagent: script\nrun: env\n---\n"),
            Policy::None
        );
        let setup = setup
            .with_egress(Some("registries".parse().unwrap()))
            .unwrap();
        assert_eq!(setup.egress_for(&spec("claude-code")), Policy::Registries);
        let npm = "---\nagent: claude-code\negress: registry.npmjs.org\n---\nGo.\n";
        assert_eq!(setup.egress_for(npm).to_string(), "registry.npmjs.org");
        assert!(setup.check_spec(npm).unwrap_err().contains("needs one of"));
        // Past the operator's policy: refused when submitted, naming what, and none if it
        // ever reaches a worker.
        let wide = "---\nagent: script\nrun: env\negress: paste.example.net\n---\n";
        assert_eq!(
            setup.check_spec(wide).unwrap_err(),
            "the spec's egress `paste.example.net` is not allowed by the operator's policy \
             `registries`: a spec may narrow the operator's egress policy, never widen it"
        );
        assert_eq!(setup.egress_for(wide), Policy::None);
        // A spec may make its job read-only; under an operator's read-only it must stay so.
        let reads = "---\nagent: script\nrun: env\negress: \"pypi.org;read-only\"\n---\n";
        assert_eq!(setup.egress_for(reads).to_string(), "pypi.org;read-only");
        let setup = WorkerSetup::default()
            .with_egress(Some("registries;read-only".parse().unwrap()))
            .unwrap();
        assert_eq!(
            setup.egress_for(&spec("claude-code")).to_string(),
            "registries;read-only"
        );
        assert_eq!(setup.egress_for(reads).to_string(), "pypi.org;read-only");
        let writes = "---\nagent: script\nrun: env\negress: pypi.org\n---\n";
        assert!(
            setup
                .check_spec(writes)
                .unwrap_err()
                .starts_with("the spec's egress `pypi.org` is not allowed by the operator's policy `registries;read-only`"),
        );
    }

    #[test]
    fn the_pipelines_agent_stage_sets_the_operators_policy_or_the_flag_does_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = dir.path().join("pipeline.toml");
        std::fs::write(
            &pipeline,
            ckrv_pipeline::DEFAULT_PIPELINE.replace(
                "agent = true\n",
                "agent = true\negress = \"registry.npmjs.org\"\n",
            ),
        )
        .unwrap();
        let setup = WorkerSetup::load(Some(&pipeline), None, None).unwrap();
        assert_eq!(
            setup.egress_for(&spec("claude-code")).to_string(),
            "registry.npmjs.org"
        );
        let wide = "---\nagent: script\nrun: env\negress: registries\n---\n";
        assert!(
            setup
                .check_spec(wide)
                .unwrap_err()
                .contains("is not allowed by the operator's policy `registry.npmjs.org`")
        );
        let err = setup
            .with_egress(Some("model".parse().unwrap()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--egress-allow `model` and the pipeline's agent stage (egress = \"registry.npmjs.org\") both set the agents' egress policy; keep one"
        );
    }

    #[test]
    fn a_directory_holds_one_secret_per_file_as_kubernetes_mounts_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        private_file(dir.path(), "ANTHROPIC_API_KEY", &format!("{KEY}\n"));
        std::fs::create_dir(dir.path().join("..2026_11_24")).unwrap();
        let setup = WorkerSetup::load(None, None, Some(dir.path())).unwrap();
        assert_eq!(setup.keys_for(&spec("claude-code")), ["ANTHROPIC_API_KEY"]);
        assert_eq!(setup.key("ANTHROPIC_API_KEY"), Some(KEY));
    }

    #[test]
    fn bad_secrets_are_refused_without_showing_them() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "ANTHROPIC_API_KEY=short",
                "`ANTHROPIC_API_KEY` is shorter than 8 characters",
            ),
            (
                "MY_TOKEN=0123456789abcdef",
                "`MY_TOKEN` is a secret no agent takes; agents take: ",
            ),
            ("just-a-value", "line 1: expected NAME=value"),
            (
                &format!("ANTHROPIC_API_KEY={KEY}\nANTHROPIC_API_KEY={KEY}"),
                "`ANTHROPIC_API_KEY` is given twice",
            ),
        ];
        for (n, (text, expected)) in cases.iter().enumerate() {
            let file = private_file(dir.path(), &format!("s{n}"), text);
            let err = WorkerSetup::load(None, None, Some(&file))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(
                !err.contains("0123456789abcdef") && !err.contains(KEY),
                "{err}"
            );
        }
        let open = private_file(dir.path(), "open.env", &format!("ANTHROPIC_API_KEY={KEY}"));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = WorkerSetup::load(None, None, Some(&open))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other users can read it (mode 644); run `chmod 600 "),
            "{err}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = WorkerSetup::load(None, None, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("(mode 755); run `chmod 700 "), "{err}");
    }

    #[test]
    fn only_enabled_agents_run_and_the_spec_is_checked_at_dispatch() {
        let enabled = ["claude-code".to_string(), "script".to_string()];
        let setup = WorkerSetup::load(None, Some(&enabled), None).unwrap();
        assert_eq!(
            setup.check_spec(&spec("codex")).unwrap_err(),
            "agent `codex` is not enabled on this server; enabled agents: claude-code, script"
        );
        let err = setup
            .check_spec("---\nagent: script\nrun: ls\ncolour: red\n---\n")
            .unwrap_err();
        assert_eq!(
            err,
            "unknown front-matter key `colour` for agent `script`; it accepts: agent, egress, max_cost_usd, max_tokens, run"
        );
        assert_eq!(
            setup.check_spec(&spec("clawd")).unwrap_err(),
            "agent `clawd` is unknown; enabled agents: claude-code, script"
        );
        assert!(setup.check_spec("no front matter").is_err());
        assert!(
            setup
                .check_spec("---\nagent: script\nrun: ls\n---\n")
                .is_ok()
        );

        let unknown = ["clawd".to_string()];
        let err = WorkerSetup::load(None, Some(&unknown), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--agents: unknown agent `clawd`; known agents: script, "),
            "{err}"
        );
        let err = WorkerSetup::load(None, Some(&[" ".to_string()]), None).unwrap_err();
        assert!(matches!(err, SetupError::NoAgents(_)));
    }
}
