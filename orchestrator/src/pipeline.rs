//! The job pipeline as data: which stages run, in which order, reporting which phase. Platform
//! teams can add their own step components without rebuilding the worker.

use ckrv_wit::types::JobPhase;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default pipeline, `orchestrator/pipeline.toml`.
pub const DEFAULT_PIPELINE: &str = include_str!("../pipeline.toml");

/// The built-in step components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinStep {
    Clone,
    Diff,
    Upload,
}

impl BuiltinStep {
    pub const ALL: [Self; 3] = [Self::Clone, Self::Diff, Self::Upload];

    pub fn name(self) -> &'static str {
        match self {
            Self::Clone => "clone",
            Self::Diff => "diff",
            Self::Upload => "upload",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What a stage runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageKind {
    Builtin(BuiltinStep),
    /// A component file.
    Component(PathBuf),
    Agent,
}

/// One stage of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Names the stage in the job log and in error messages.
    pub name: String,
    pub kind: StageKind,
    pub phase: JobPhase,
    pub params: Vec<(String, String)>,
}

/// The stages of a job, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
}

/// Why a pipeline definition is unusable.
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
    phase: JobPhase,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
}

impl Pipeline {
    /// The built-in default pipeline.
    pub fn default_pipeline() -> Result<Self, PipelineError> {
        Self::parse(DEFAULT_PIPELINE, "<built-in>", Path::new("."))
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

    /// Parses and checks a pipeline definition.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Self, PipelineError> {
        let invalid = |message: String| PipelineError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.stage.is_empty() {
            return Err(invalid("it has no [[stage]] entries".into()));
        }
        let mut stages = Vec::with_capacity(file.stage.len());
        for (i, def) in file.stage.into_iter().enumerate() {
            let n = i + 1;
            let kind = match (def.step, def.component, def.agent) {
                (Some(step), None, false) => {
                    StageKind::Builtin(BuiltinStep::from_name(&step).ok_or_else(|| {
                        invalid(format!(
                            "stage {n}: unknown step `{step}`; built-in steps: clone, diff, upload"
                        ))
                    })?)
                }
                (None, Some(path), false) => StageKind::Component(base_dir.join(path)),
                (None, None, true) => StageKind::Agent,
                _ => {
                    return Err(invalid(format!(
                        "stage {n}: set exactly one of `step`, `component` or `agent = true`"
                    )));
                }
            };
            let name = match (&def.name, &kind) {
                (Some(name), _) => name.clone(),
                (None, StageKind::Builtin(step)) => step.name().to_string(),
                (None, StageKind::Agent) => "agent".to_string(),
                (None, StageKind::Component(path)) => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("stage-{n}")),
            };
            let mut params = Vec::with_capacity(def.params.len());
            for (key, value) in def.params {
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(invalid(format!(
                            "stage {n}: param `{key}` must be a string, number or boolean"
                        )));
                    }
                };
                params.push((key, value));
            }
            stages.push(Stage {
                name,
                kind,
                phase: def.phase,
                params,
            });
        }
        if stages.iter().filter(|s| s.kind == StageKind::Agent).count() > 1 {
            return Err(invalid("more than one `agent = true` stage".into()));
        }
        Ok(Self { stages })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_default_pipeline_is_clone_agent_diff_upload() {
        let p = Pipeline::default_pipeline().unwrap();
        let names: Vec<_> = p.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["clone", "agent", "diff", "upload"]);
        assert_eq!(p.stages[1].phase, JobPhase::Agent);
        assert_eq!(
            p.stages[2].params,
            [("max_diff_bytes".to_string(), "10485760".to_string())]
        );
    }

    #[test]
    fn custom_components_resolve_against_the_file() {
        let text = "[[stage]]\ncomponent = \"lint.wasm\"\nphase = \"diffing\"\n";
        let p = Pipeline::parse(text, "t", Path::new("/etc/ckrv")).unwrap();
        assert_eq!(p.stages[0].name, "lint");
        assert_eq!(
            p.stages[0].kind,
            StageKind::Component(PathBuf::from("/etc/ckrv/lint.wasm"))
        );
    }
}
