//! Built-in agent definitions, embedded from `definitions/*.toml`.

use serde::Deserialize;
use std::sync::OnceLock;

/// How an agent is run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentDefinition {
    pub name: String,
    pub description: String,
    /// Program and leading arguments; the spec's `run` text is appended when `needs_run`.
    pub command: Vec<String>,
    #[serde(default)]
    pub needs_run: bool,
    /// The agent needs the network (a hosted model's API); without it, its sandbox has none.
    #[serde(default)]
    pub network: bool,
}

const SOURCES: &[&str] = &[include_str!("../definitions/script.toml")];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_parses() {
        assert_eq!(agents().len(), SOURCES.len());
        let script = find_agent("script").expect("script agent");
        assert_eq!(script.command, ["sh", "-c"]);
        assert!(script.needs_run);
    }
}
