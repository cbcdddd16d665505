//! The spec's YAML front matter: which agent runs it and with what.

use crate::definition::{AgentDefinition, agents, find_agent};
use serde::Deserialize;

/// The fields of a spec's front matter that the worker uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SpecFrontMatter {
    pub agent: String,
    #[serde(default)]
    pub run: Option<String>,
}

/// Why a spec cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("the spec has no front matter: it must start with a `---` line, then YAML, then `---`")]
    NoFrontMatter,
    #[error("the spec's front matter is not closed by a `---` line")]
    Unterminated,
    #[error("invalid spec front matter: {0}")]
    Yaml(String),
    #[error("unknown agent `{name}`; known agents: {known}")]
    UnknownAgent { name: String, known: String },
    #[error("agent `{0}` needs a `run` field in the spec's front matter")]
    MissingRun(String),
}

/// Parses the YAML between the leading `---` lines.
pub fn parse_front_matter(spec: &str) -> Result<SpecFrontMatter, SpecError> {
    let spec = spec.strip_prefix('\u{feff}').unwrap_or(spec);
    let mut lines = spec.split_inclusive('\n');
    match lines.next() {
        Some(first) if first.trim_end() == "---" => {}
        _ => return Err(SpecError::NoFrontMatter),
    }
    let mut yaml = String::new();
    for line in lines {
        if line.trim_end() == "---" {
            return serde_yaml_ng::from_str(&yaml).map_err(|e| SpecError::Yaml(e.to_string()));
        }
        yaml.push_str(line);
    }
    Err(SpecError::Unterminated)
}

/// Checks the front matter against the known agents and returns the agent and its command line.
pub fn resolve(
    front: &SpecFrontMatter,
) -> Result<(&'static AgentDefinition, Vec<String>), SpecError> {
    let agent = find_agent(&front.agent).ok_or_else(|| SpecError::UnknownAgent {
        name: front.agent.clone(),
        known: agents()
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let mut command = agent.command.clone();
    if agent.needs_run {
        match front.run.as_deref() {
            Some(run) if !run.trim().is_empty() => command.push(run.to_string()),
            _ => return Err(SpecError::MissingRun(agent.name.clone())),
        }
    }
    Ok((agent, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_and_run() {
        let spec = "---\nagent: script\nrun: |\n  echo hi\n  touch x\n---\n# Title\n";
        let front = parse_front_matter(spec).expect("front matter");
        assert_eq!(front.agent, "script");
        assert_eq!(front.run.as_deref(), Some("echo hi\ntouch x\n"));
        let (agent, command) = resolve(&front).expect("resolves");
        assert_eq!(agent.name, "script");
        assert_eq!(command, ["sh", "-c", "echo hi\ntouch x\n"]);
    }

    #[test]
    fn rejects_bad_specs() {
        assert_eq!(
            parse_front_matter("# no front matter\n"),
            Err(SpecError::NoFrontMatter)
        );
        assert_eq!(
            parse_front_matter("---\nagent: script\n"),
            Err(SpecError::Unterminated)
        );
        assert!(matches!(
            parse_front_matter("---\nagent: [unclosed\n---\n"),
            Err(SpecError::Yaml(_))
        ));
        assert!(matches!(
            parse_front_matter("---\nrun: x\n---\n"),
            Err(SpecError::Yaml(_))
        ));
    }

    #[test]
    fn unknown_agent_names_the_known_ones() {
        let front = parse_front_matter("---\nagent: nope\n---\n").expect("parses");
        let err = resolve(&front).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown agent `nope`; known agents: script"
        );
    }

    #[test]
    fn script_agent_needs_run() {
        let front = parse_front_matter("---\nagent: script\n---\n").expect("parses");
        assert_eq!(
            resolve(&front).expect_err("no run"),
            SpecError::MissingRun("script".into())
        );
    }
}
