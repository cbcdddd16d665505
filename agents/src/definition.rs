//! Built-in agent definitions, embedded from `definitions/*.toml`: how each agent is run,
//! how the spec reaches it, what it needs (secrets, egress), and which options a spec may set.

use serde::Deserialize;

use crate::egress::Policy;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// How an agent is run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefinition {
    pub name: String,
    pub description: String,
    /// Program and arguments; `{prompt}` and `{prompt_file}` are replaced (see [`PromptMode`]),
    /// and the arguments of the options the spec set go where `{options}` stands, or at the end.
    pub command: Vec<String>,
    pub prompt: PromptMode,
    /// Where it needs to connect: `model` (the model gateway) for an agent that calls a hosted
    /// model, `none` (the default) for one that needs no network, whose sandbox has none.
    #[serde(default)]
    pub egress: Policy,
    /// Environment variables it may receive from the operator's agent secrets; an agent that
    /// lists any needs at least one of them configured. Each is a model API's key, which the
    /// agent never sees: one of [`AgentDefinition::models`] carries it.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The hosted model APIs it calls, each reached through the platform's model gateway.
    #[serde(default)]
    pub models: Vec<ModelRoute>,
    /// The container image it runs in on Kubernetes (built from `agents/<name>/Containerfile`).
    pub image: String,
    /// Paths the agent writes for itself (caches), left out of the change (gitignore patterns).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Fixed, non-secret environment (turning off update checks and the like).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What a spec's front matter may set, by key.
    #[serde(default)]
    pub options: BTreeMap<String, AgentOption>,
}

/// A hosted model API an agent calls, reached through the platform's model gateway: the agent
/// gets the gateway's address and a placeholder bound to its job, never the key, which the
/// gateway puts in on the way out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRoute {
    /// Names the route in the gateway's path (`/v1/gateway/{name}/…`).
    pub name: String,
    /// The API's origin, such as `https://api.anthropic.com`.
    pub upstream: String,
    /// The operator's secret that holds the key, and the variable the CLI reads its key from
    /// (where it finds the placeholder).
    pub key: String,
    /// Where the CLI sends the key, and so where the gateway finds the placeholder and puts
    /// the key.
    pub key_header: KeyHeader,
    /// Variables that point the CLI at its API, each set to the gateway's route followed by
    /// this path (`/v1` where the CLI expects the version in its base URL).
    #[serde(default)]
    pub base_url: BTreeMap<String, String>,
}

/// The request header a model API takes its key in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum KeyHeader {
    /// Anthropic's.
    #[serde(rename = "x-api-key")]
    XApiKey,
    /// Google's Gemini API.
    #[serde(rename = "x-goog-api-key")]
    XGoogApiKey,
    /// `Authorization: Bearer KEY` (OpenAI and compatible APIs).
    #[serde(rename = "authorization")]
    Bearer,
}

impl KeyHeader {
    /// The header's name, lower-case.
    pub fn name(self) -> &'static str {
        match self {
            Self::XApiKey => "x-api-key",
            Self::XGoogApiKey => "x-goog-api-key",
            Self::Bearer => "authorization",
        }
    }

    /// The key as a value of this header.
    pub fn value(self, key: &str) -> String {
        match self {
            Self::Bearer => format!("Bearer {key}"),
            Self::XApiKey | Self::XGoogApiKey => key.to_string(),
        }
    }

    /// The key in a value of this header, if it holds one.
    pub fn key_in(self, value: &str) -> Option<&str> {
        let key = match self {
            Self::Bearer => value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))?,
            Self::XApiKey | Self::XGoogApiKey => value,
        };
        Some(key.trim()).filter(|k| !k.is_empty())
    }
}

impl AgentDefinition {
    /// The model route named `name`, if the agent declares one.
    pub fn model(&self, name: &str) -> Option<&ModelRoute> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// How the spec's text (its body after the front matter) reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptMode {
    /// On standard input.
    Stdin,
    /// As the `{prompt}` argument.
    Argument,
    /// In a read-only file, named by the `{prompt_file}` argument.
    File,
    /// Not at all (the `script` agent runs its `run` option).
    None,
}

/// An option a spec may set, and the arguments it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOption {
    pub description: String,
    #[serde(rename = "type")]
    pub kind: OptionKind,
    /// Appended to the command, `{value}` replaced by the option's value.
    pub args: Vec<String>,
    #[serde(default)]
    pub required: bool,
    pub min: Option<i64>,
    pub max: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionKind {
    String,
    Integer,
}

const SOURCES: &[&str] = &[
    include_str!("../definitions/script.toml"),
    include_str!("../definitions/claude-code.toml"),
    include_str!("../definitions/codex.toml"),
    include_str!("../definitions/gemini-cli.toml"),
    include_str!("../definitions/aider.toml"),
];

/// Every built-in agent.
pub fn agents() -> &'static [AgentDefinition] {
    static AGENTS: OnceLock<Vec<AgentDefinition>> = OnceLock::new();
    AGENTS.get_or_init(|| {
        SOURCES
            .iter()
            // The files are part of this crate and checked by its tests; a bad one is a bug.
            .filter_map(|s| toml::from_str(s).ok())
            .collect()
    })
}

/// The agent called `name`, if there is one.
pub fn find_agent(name: &str) -> Option<&'static AgentDefinition> {
    agents().iter().find(|a| a.name == name)
}

/// The names of every built-in agent, comma-separated.
pub fn agent_names() -> String {
    agents()
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_definition_parses_and_is_consistent() {
        for source in SOURCES {
            let agent: AgentDefinition = toml::from_str(source).unwrap();
            let placeholders = |p: &str| agent.command.iter().filter(|a| a.contains(p)).count();
            let (prompt, file) = (placeholders("{prompt}"), placeholders("{prompt_file}"));
            match agent.prompt {
                PromptMode::Argument => assert_eq!((prompt, file), (1, 0), "{}", agent.name),
                PromptMode::File => assert_eq!((prompt, file), (0, 1), "{}", agent.name),
                PromptMode::Stdin | PromptMode::None => {
                    assert_eq!((prompt, file), (0, 0), "{}", agent.name)
                }
            }
            // An agent that calls a model needs its key; one that needs none gets no network.
            assert_eq!(
                agent.egress.allows_network(),
                !agent.secrets.is_empty(),
                "{}",
                agent.name
            );
            let expected = if agent.name == "script" {
                Policy::None
            } else {
                Policy::Model
            };
            assert_eq!(agent.egress, expected, "{}", agent.name);
            // Every key is carried by exactly one model route, and every route's key is one
            // of the agent's secrets: no key reaches an agent any other way.
            let mut keys: Vec<&str> = agent.models.iter().map(|m| m.key.as_str()).collect();
            keys.sort_unstable();
            let mut secrets: Vec<&str> = agent.secrets.iter().map(String::as_str).collect();
            secrets.sort_unstable();
            assert_eq!(keys, secrets, "{}", agent.name);
            for model in &agent.models {
                assert!(model.upstream.starts_with("https://"), "{}", model.name);
                assert!(!model.upstream.ends_with('/'), "{}", model.name);
                assert!(!model.base_url.is_empty(), "{}", model.name);
                assert!(
                    model
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'-'),
                    "{}",
                    model.name
                );
            }
            for (key, option) in &agent.options {
                assert!(
                    option.args.iter().any(|a| a.contains("{value}")),
                    "{}.{key}",
                    agent.name
                );
                if option.kind == OptionKind::String {
                    assert!(option.min.is_none() && option.max.is_none());
                }
            }
            assert!(agent.image.contains(&agent.name), "{}", agent.name);
        }
        assert_eq!(agents().len(), SOURCES.len());
        assert_eq!(
            agent_names(),
            "script, claude-code, codex, gemini-cli, aider"
        );
    }

    #[test]
    fn a_definition_without_egress_gets_none_and_a_bad_egress_is_refused() {
        let base = r#"
name = "x"
description = "x"
command = ["x"]
prompt = "none"
image = "x"
"#;
        let agent: AgentDefinition = toml::from_str(base).unwrap();
        assert_eq!(agent.egress, Policy::None);
        let agent: AgentDefinition =
            toml::from_str(&format!("{base}egress = \"registries\"\n")).unwrap();
        assert_eq!(agent.egress, Policy::Registries);
        let err = toml::from_str::<AgentDefinition>(&format!("{base}egress = \"npm,*\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad egress entry `*`"), "{err}");
        let err = toml::from_str::<AgentDefinition>(&format!("{base}network = true\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `network`"), "{err}");
    }
}
