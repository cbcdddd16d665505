//! The job pipeline as data: which stages run, in which order, reporting which phase, under
//! which limits. Platform teams add their own step components without rebuilding anything:
//! the API reads the file at start (`ckrv-api serve --pipeline FILE`), refuses it with the
//! file, the stage and the problem named, and hands the stages (components by digest) to every
//! worker.

use ckrv_agents::Policy;
use ckrv_wit::origin::Origin;
use ckrv_wit::types::{JobPhase, PipelineStage, StageKind, StageParam};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The default pipeline, `orchestrator/pipeline.toml`.
pub const DEFAULT_PIPELINE: &str = include_str!("../../../orchestrator/pipeline.toml");

/// The built-in step that clones the job's repository.
pub const CLONE: &str = "clone";
/// The built-in step that computes the agent's change as a patch.
pub const DIFF: &str = "diff";
/// The built-in step that sends the patch and its summary to the API.
pub const UPLOAD: &str = "upload";
/// The built-in step that pushes the job's branch and opens its pull request, when the job
/// publishes (docs/publish.md).
pub const PUBLISH: &str = "publish";
/// The steps built into every worker.
pub const BUILTIN_STEPS: [&str; 4] = [CLONE, DIFF, UPLOAD, PUBLISH];

/// The longest `timeout_s` a stage may set: a day.
pub const MAX_TIMEOUT_S: u32 = 24 * 60 * 60;
/// The most memory a stage may ask for, in MiB.
pub const MAX_MEMORY_MB: u32 = 16 * 1024;

/// The first eight bytes of a WebAssembly component (a core module has version 1, layer 0).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// A checked pipeline and the component files it names, by digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub stages: Vec<PipelineStage>,
    /// The agent stage's egress policy (`egress = "..."`): the operator's, in place of each
    /// agent's own, as `ckrv-api serve --egress-allow` sets it.
    pub agent_egress: Option<Policy>,
    /// SHA-256 (lower-case hex) → the component's bytes.
    pub components: BTreeMap<String, Arc<[u8]>>,
}

/// Why a pipeline file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("reading pipeline {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pipeline {origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    stage: Vec<StageDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageDef {
    name: Option<String>,
    step: Option<String>,
    component: Option<PathBuf>,
    #[serde(default)]
    agent: bool,
    #[serde(default)]
    verify: bool,
    phase: String,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    timeout_s: Option<i64>,
    memory_mb: Option<i64>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    egress: Option<String>,
}

impl Pipeline {
    /// The built-in default pipeline.
    pub fn builtin() -> Self {
        // The default is part of this crate and checked by its tests; it names no files.
        Self::parse(DEFAULT_PIPELINE, "<built-in>", Path::new(".")).unwrap_or_else(|_| Self {
            stages: Vec::new(),
            agent_egress: None,
            components: BTreeMap::new(),
        })
    }

    /// Loads a pipeline file; `component` paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), dir)
    }

    /// Parses and checks a pipeline definition, reading the components it names.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Self, PipelineError> {
        let invalid = |message: String| PipelineError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.stage.is_empty() {
            return Err(invalid("it has no [[stage]] entries".into()));
        }
        let mut pipeline = Self {
            stages: Vec::with_capacity(file.stage.len()),
            agent_egress: None,
            components: BTreeMap::new(),
        };
        for (i, def) in file.stage.into_iter().enumerate() {
            let stage = pipeline.stage(def, i + 1, base_dir).map_err(&invalid)?;
            if pipeline.stages.iter().any(|s| s.name == stage.name) {
                return Err(invalid(format!(
                    "stage {} ({}): another stage has this name; set `name` to tell them apart",
                    i + 1,
                    stage.name
                )));
            }
            pipeline.stages.push(stage);
        }
        let agents = pipeline
            .stages
            .iter()
            .filter(|s| s.kind == StageKind::Agent)
            .count();
        if agents != 1 {
            return Err(invalid(format!(
                "it has {agents} `agent = true` stages; a pipeline runs the agent exactly once"
            )));
        }
        let at = |kind| pipeline.stages.iter().position(|s| s.kind == kind);
        let verifies = pipeline
            .stages
            .iter()
            .filter(|s| s.kind == StageKind::Verify)
            .count();
        if verifies > 1 {
            return Err(invalid(format!(
                "it has {verifies} `verify = true` stages; a pipeline verifies a change at most once"
            )));
        }
        if let (Some(verify), Some(agent)) = (at(StageKind::Verify), at(StageKind::Agent))
            && verify < agent
        {
            return Err(invalid(
                "the `verify = true` stage comes before the agent's; it checks the agent's change, so put it after (after `diff`, so that what it writes is no part of the change)"
                    .to_string(),
            ));
        }
        Ok(pipeline)
    }

    /// Checks one stage (`n` counts from 1), reading its component.
    fn stage(&mut self, def: StageDef, n: usize, base_dir: &Path) -> Result<PipelineStage, String> {
        let (kind, source, default_name) = match (&def.step, &def.component, def.agent, def.verify)
        {
            (Some(step), None, false, false) => {
                if !BUILTIN_STEPS.contains(&step.as_str()) {
                    return Err(format!(
                        "stage {n}: unknown step `{step}`; built-in steps: {}",
                        BUILTIN_STEPS.join(", ")
                    ));
                }
                (StageKind::Builtin, Some(step.clone()), step.clone())
            }
            (None, Some(path), false, false) => {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("stage-{n}"));
                (StageKind::Component, None, name)
            }
            (None, None, true, false) => (StageKind::Agent, None, "agent".to_string()),
            (None, None, false, true) => (StageKind::Verify, None, "verify".to_string()),
            _ => {
                return Err(format!(
                    "stage {n}: set exactly one of `step`, `component`, `agent = true` or `verify = true`"
                ));
            }
        };
        let name = def.name.clone().unwrap_or(default_name);
        let at = format!("stage {n} ({name})");
        if let Some(egress) = &def.egress {
            if kind != StageKind::Agent {
                return Err(format!(
                    "{at}: `egress` is the agent stage's policy; a step reaches only its `allowed_hosts`"
                ));
            }
            let policy = egress.parse().map_err(|e| format!("{at}: egress: {e}"))?;
            self.agent_egress = Some(policy);
        }
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(format!("{at}: `name` must be 1 to 64 printable characters"));
        }
        let phase: JobPhase = def.phase.parse().map_err(|_| {
            format!(
                "{at}: unknown phase `{}`; phases: {}",
                def.phase,
                JobPhase::ALL
                    .into_iter()
                    .filter(|p| !matches!(p, JobPhase::Queued | JobPhase::Finished))
                    .map(JobPhase::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let sandboxed = match kind {
            StageKind::Agent => Some("the agent stage"),
            StageKind::Verify => Some("the verify stage"),
            StageKind::Builtin | StageKind::Component => None,
        };
        if let Some(which) = sandboxed
            && (def.timeout_s.is_some()
                || def.memory_mb.is_some()
                || !def.allowed_hosts.is_empty()
                || !def.params.is_empty())
        {
            return Err(format!(
                "{at}: {which} takes no `params`, `timeout_s`, `memory_mb` or `allowed_hosts`; it runs in the agent's sandbox, bounded by the job's timeout (and the verification's, `ckrv-api serve --verify-timeout`)"
            ));
        }
        let source = match (&def.component, source) {
            (Some(path), _) => Some(self.read_component(&base_dir.join(path), &at)?),
            (None, source) => source,
        };
        let timeout_s = bounded(def.timeout_s, "timeout_s", MAX_TIMEOUT_S, &at)?;
        let memory_mb = bounded(def.memory_mb, "memory_mb", MAX_MEMORY_MB, &at)?;
        let mut allowed_hosts = Vec::with_capacity(def.allowed_hosts.len());
        for host in def.allowed_hosts {
            Origin::parse(&host).map_err(|e| format!("{at}: allowed_hosts: {e}"))?;
            allowed_hosts.push(host);
        }
        let mut params = Vec::with_capacity(def.params.len());
        for (key, value) in def.params {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "{at}: param `{key}` must be a string, number or boolean"
                    ));
                }
            };
            params.push(StageParam { name: key, value });
        }
        Ok(PipelineStage {
            name,
            kind,
            source,
            phase,
            params,
            timeout_s,
            memory_mb,
            allowed_hosts,
        })
    }

    /// Reads a component file, checks it is a component, and returns its digest.
    fn read_component(&mut self, path: &Path, at: &str) -> Result<String, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("{at}: reading component {}: {e}", path.display()))?;
        match bytes.get(..8) {
            Some(header) if header == COMPONENT_HEADER => {}
            Some(header) if header == MODULE_HEADER => {
                return Err(format!(
                    "{at}: {} is a core WebAssembly module, not a component; build it for wasm32-wasip2 (see docs/steps.md)",
                    path.display()
                ));
            }
            _ => {
                return Err(format!(
                    "{at}: {} is not a WebAssembly component",
                    path.display()
                ));
            }
        }
        let digest = hex::encode(Sha256::digest(&bytes));
        self.components.insert(digest.clone(), bytes.into());
        Ok(digest)
    }

    /// The bytes of the component with this digest, if the pipeline names it.
    pub fn component(&self, digest: &str) -> Option<&Arc<[u8]>> {
        self.components.get(digest)
    }
}

/// `value` checked to lie in 1..=max.
fn bounded(value: Option<i64>, key: &str, max: u32, at: &str) -> Result<Option<u32>, String> {
    value
        .map(|v| {
            u32::try_from(v)
                .ok()
                .filter(|v| (1..=max).contains(v))
                .ok_or_else(|| format!("{at}: `{key}` is {v}; it must be between 1 and {max}"))
        })
        .transpose()
}

/// A stage's parameter, if set.
pub fn param<'a>(stage: &'a PipelineStage, name: &str) -> Option<&'a str> {
    stage
        .params
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn error(text: &str, dir: &Path) -> String {
        Pipeline::parse(text, "p.toml", dir)
            .unwrap_err()
            .to_string()
    }

    const AGENT: &str = "[[stage]]\nagent = true\nphase = \"agent\"\n";

    #[test]
    fn the_agent_stage_may_set_the_operators_egress_policy() {
        assert_eq!(Pipeline::builtin().agent_egress, None);
        let text = format!("{AGENT}egress = \"registries\"\n");
        let pipeline = Pipeline::parse(&text, "p.toml", Path::new(".")).unwrap();
        assert_eq!(pipeline.agent_egress, Some(Policy::Registries));
    }

    #[test]
    fn the_default_pipeline_is_clone_agent_diff_verify_upload_publish() {
        let p = Pipeline::builtin();
        let names: Vec<_> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["clone", "agent", "diff", "verify", "upload", "publish"]
        );
        assert_eq!(p.stages[3].kind, StageKind::Verify);
        assert_eq!(p.stages[3].phase, JobPhase::Verifying);
        assert_eq!(p.stages[5].phase, JobPhase::Publishing);
        assert_eq!(
            p.stages[5].allowed_hosts,
            ["https://api.github.com", "https://gitlab.com"]
        );
        assert_eq!(p.stages[1].kind, StageKind::Agent);
        assert_eq!(p.stages[2].source.as_deref(), Some("diff"));
        assert_eq!(param(&p.stages[2], "max_diff_bytes"), Some("10485760"));
        assert!(p.components.is_empty());
    }

    #[test]
    fn components_are_read_relative_to_the_file_and_named_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = COMPONENT_HEADER.to_vec();
        bytes.extend_from_slice(b"rest");
        std::fs::write(dir.path().join("lint.wasm"), &bytes).unwrap();
        let text = format!(
            "{AGENT}[[stage]]\ncomponent = \"lint.wasm\"\nphase = \"diffing\"\ntimeout_s = 5\nmemory_mb = 64\nallowed_hosts = [\"http://127.0.0.1:9000\"]\nparams = {{ level = 3, strict = true }}\n"
        );
        let p = Pipeline::parse(&text, "p.toml", dir.path()).unwrap();
        let lint = &p.stages[1];
        assert_eq!(lint.name, "lint");
        assert_eq!(lint.kind, StageKind::Component);
        let digest = lint.source.clone().unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(&p.component(&digest).unwrap()[..], &bytes[..]);
        assert_eq!((lint.timeout_s, lint.memory_mb), (Some(5), Some(64)));
        assert_eq!(lint.allowed_hosts, ["http://127.0.0.1:9000"]);
        assert_eq!(param(lint, "strict"), Some("true"));
    }

    #[test]
    fn a_pipeline_verifies_at_most_once_and_after_the_agent() {
        const VERIFY: &str = "[[stage]]\nverify = true\nphase = \"verifying\"\n";
        let dir = Path::new(".");
        let after = Pipeline::parse(&format!("{AGENT}{VERIFY}"), "p.toml", dir).unwrap();
        assert_eq!(after.stages[1].kind, StageKind::Verify);
        assert_eq!(after.stages[1].name, "verify");
        assert!(error(&format!("{VERIFY}{AGENT}"), dir).contains("comes before the agent's"));
        let twice = format!(
            "{AGENT}{VERIFY}[[stage]]\nname = \"again\"\nverify = true\nphase = \"verifying\"\n"
        );
        assert!(error(&twice, dir).contains("it has 2 `verify = true` stages"));
    }

    #[test]
    fn errors_name_the_file_the_stage_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("module.wasm"), MODULE_HEADER).unwrap();
        std::fs::write(dir.path().join("text.wasm"), "hello").unwrap();
        let cases = [
            (
                "[[stage]]\nstep = \"lint\"\nphase = \"diffing\"\n",
                "stage 1: unknown step `lint`; built-in steps: clone, diff, upload",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nagent = true\nphase = \"diffing\"\n",
                "stage 1: set exactly one of",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"linting\"\n",
                "stage 1 (diff): unknown phase `linting`",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\ntimeout_s = 0\n",
                "stage 1 (diff): `timeout_s` is 0; it must be between 1 and 86400",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\nmemory_mb = 99999999\n",
                "stage 1 (diff): `memory_mb` is 99999999",
            ),
            (
                "[[stage]]\nstep = \"upload\"\nphase = \"uploading\"\nallowed_hosts = [\"https://h/path\"]\n",
                "stage 1 (upload): allowed_hosts: `https://h/path` has a path",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\nparams = { x = [1] }\n",
                "stage 1 (diff): param `x` must be",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\negress = \"registries\"\n",
                "stage 1 (diff): `egress` is the agent stage's policy; a step reaches only its `allowed_hosts`",
            ),
            (
                "[[stage]]\nagent = true\nphase = \"agent\"\negress = \"pypi.org,https://x\"\n",
                "stage 1 (agent): egress: bad egress entry `https://x`",
            ),
            (
                "[[stage]]\ncomponent = \"missing.wasm\"\nphase = \"diffing\"\n",
                "stage 1 (missing): reading component",
            ),
            (
                "[[stage]]\ncomponent = \"module.wasm\"\nphase = \"diffing\"\n",
                "is a core WebAssembly module, not a component",
            ),
            (
                "[[stage]]\nname = \"t\"\ncomponent = \"text.wasm\"\nphase = \"diffing\"\n",
                "stage 1 (t): ",
            ),
            (
                "[[stage]]\nagent = true\nphase = \"agent\"\ntimeout_s = 5\n",
                "stage 1 (agent): the agent stage takes no",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\ntimeout = 5\n",
                "unknown field `timeout`",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\n[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\n",
                "stage 2 (diff): another stage has this name",
            ),
            (
                "[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\n",
                "it has 0 `agent = true` stages",
            ),
            ("", "it has no [[stage]] entries"),
            (
                "[[stage]]\nverify = true\nphase = \"verifying\"\nparams = { x = 1 }\n",
                "stage 1 (verify): the verify stage takes no",
            ),
            (
                "[[stage]]\nverify = true\nagent = true\nphase = \"verifying\"\n",
                "stage 1: set exactly one of `step`, `component`, `agent = true` or `verify = true`",
            ),
        ];
        for (text, expected) in cases {
            let err = error(text, dir.path());
            assert!(err.starts_with("invalid pipeline p.toml: "), "{err}");
            assert!(
                err.contains(expected),
                "{text}\n→ {err}\nexpected {expected}"
            );
        }
    }

    #[test]
    fn a_missing_pipeline_file_names_the_path() {
        let err = Pipeline::load(Path::new("/nonexistent/pipeline.toml")).unwrap_err();
        assert!(matches!(err, PipelineError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/pipeline.toml"));
    }
}
