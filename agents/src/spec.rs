//! The spec: its YAML front matter (which agent runs it, with which options) and its body (the
//! prompt), turned into the exact invocation of the agent.

use crate::definition::{AgentDefinition, OptionKind, PromptMode, agent_names, find_agent};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A spec's front matter: the agent, and the options for it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SpecFrontMatter {
    pub agent: String,
    /// The most the job's agent may spend on model APIs, in US dollars, as the model
    /// gateway prices it; the operator's limits cap it.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// The most model tokens (input and output together) the job's agent may use.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Where the agent may connect, narrower than the operator's policy (or its own).
    #[serde(default)]
    pub egress: Option<crate::egress::Policy>,
    /// Where the job's result goes (`none`, `branch`, `pr`, `draft_pr`); the API checks it.
    #[serde(default)]
    pub publish: Option<String>,
    /// The command that checks the agent's change (docs/verification.md); the repository's
    /// `.ckrv/environment.toml` may name one too, and this one wins.
    #[serde(default)]
    pub verify: Option<String>,
    /// Where `verify` writes its JUnit XML report, relative to the repository.
    #[serde(default)]
    pub verify_junit: Option<String>,
    /// Every other key: options of the agent's definition.
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_yaml_ng::Value>,
}

impl SpecFrontMatter {
    /// The verification the spec asks for, checked.
    pub fn verify(&self) -> Result<Option<crate::verify::Verify>, SpecError> {
        crate::verify::Verify::from_written(self.verify.as_deref(), self.verify_junit.as_deref())
            .map_err(|e| SpecError::Verify(e.to_string()))
    }
}

/// A spec split into its front matter and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub front: SpecFrontMatter,
    /// The text after the front matter: what the agent is asked to do.
    pub body: String,
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
    #[error("unknown front-matter key `{key}` for agent `{agent}`; it accepts: {accepted}")]
    UnknownOption {
        key: String,
        agent: String,
        accepted: String,
    },
    #[error("agent `{agent}` needs `{key}` in the spec's front matter ({description})")]
    MissingOption {
        key: String,
        agent: String,
        description: String,
    },
    #[error("front-matter key `{key}`: {problem}")]
    BadOption { key: String, problem: String },
    #[error("the spec has no text after its front matter for agent `{0}` to work on")]
    EmptyPrompt(String),
    #[error("the spec's front matter: {0}")]
    Verify(String),
}

/// Splits the spec at its leading `---` lines and parses the YAML between them.
pub fn parse_spec(spec: &str) -> Result<Spec, SpecError> {
    let spec = spec.strip_prefix('\u{feff}').unwrap_or(spec);
    let mut lines = spec.split_inclusive('\n');
    match lines.next() {
        Some(first) if first.trim_end() == "---" => {}
        _ => return Err(SpecError::NoFrontMatter),
    }
    let mut yaml = String::new();
    let mut consumed = spec.split_inclusive('\n').next().map_or(0, str::len);
    for line in lines {
        consumed += line.len();
        if line.trim_end() == "---" {
            let front =
                serde_yaml_ng::from_str(&yaml).map_err(|e| SpecError::Yaml(e.to_string()))?;
            return Ok(Spec {
                front,
                body: spec[consumed..].trim().to_string(),
            });
        }
        yaml.push_str(line);
    }
    Err(SpecError::Unterminated)
}

/// The spec with its front matter's `agent` replaced by `agent`, for an attempt group that runs
/// one spec with several agents (docs/attempts.md). The body is kept as it is; the front
/// matter is written anew (comments in it are not kept).
pub fn with_agent(spec: &str, agent: &str) -> Result<String, SpecError> {
    let parsed = parse_spec(spec)?;
    let spec = spec.strip_prefix('\u{feff}').unwrap_or(spec);
    let yaml = spec
        .split_inclusive('\n')
        .skip(1)
        .take_while(|line| line.trim_end() != "---")
        .collect::<String>();
    let mut front: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(&yaml).map_err(|e| SpecError::Yaml(e.to_string()))?;
    front.insert("agent".into(), agent.into());
    let yaml = serde_yaml_ng::to_string(&front).map_err(|e| SpecError::Yaml(e.to_string()))?;
    Ok(format!("---\n{yaml}---\n{}\n", parsed.body))
}

/// What a person calls the spec: the body's first Markdown heading, else its first line (at most
/// 120 characters); `None` for a spec without text. A spec without front matter is all body.
pub fn title(spec: &str) -> Option<String> {
    // Lists show a title per job: the front matter is skipped, not parsed.
    let spec = spec.strip_prefix('\u{feff}').unwrap_or(spec);
    let mut lines = spec.split_inclusive('\n');
    let body = match lines.next() {
        Some(first) if first.trim_end() == "---" => {
            let mut at = first.len();
            let mut closed = false;
            for line in lines {
                at += line.len();
                if line.trim_end() == "---" {
                    closed = true;
                    break;
                }
            }
            if closed { &spec[at..] } else { spec }
        }
        _ => spec,
    };
    let mut lines = body.lines().map(str::trim).filter(|line| !line.is_empty());
    let heading = body
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix('#')
                .map(|h| h.trim_start_matches('#').trim())
        })
        .filter(|heading| !heading.is_empty());
    let title = heading.or_else(|| lines.next())?;
    Some(title.chars().take(120).collect())
}

/// Parses only the front matter.
pub fn parse_front_matter(spec: &str) -> Result<SpecFrontMatter, SpecError> {
    parse_spec(spec).map(|s| s.front)
}

/// The prompt, as the agent's definition says it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    None,
    Stdin(String),
    /// The runtime writes it to a read-only file and replaces `{prompt_file}` with its path.
    File(String),
}

/// Exactly how an agent is run for a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub agent: &'static AgentDefinition,
    /// Program and arguments; `{prompt_file}` is left for the runtime when the prompt is a file.
    pub command: Vec<String>,
    pub prompt: Prompt,
}

/// Placeholder the runtime replaces with the prompt file's path.
pub const PROMPT_FILE: &str = "{prompt_file}";
/// Where the options' arguments go in a command (at the end when it has none), for CLIs that
/// take no flags after a positional argument.
const OPTIONS: &str = "{options}";

/// Checks the spec against the agent's definition and builds the invocation.
pub fn resolve(spec: &Spec) -> Result<Invocation, SpecError> {
    let agent = find_agent(&spec.front.agent).ok_or_else(|| SpecError::UnknownAgent {
        name: spec.front.agent.clone(),
        known: agent_names(),
    })?;
    check_budget(&spec.front)?;
    spec.front.verify()?;
    let options = option_args(agent, &spec.front.options)?;
    let mut command: Vec<String> = Vec::with_capacity(agent.command.len() + options.len());
    for arg in &agent.command {
        match arg.as_str() {
            OPTIONS => command.extend(options.iter().cloned()),
            _ if agent.prompt == PromptMode::Argument => {
                command.push(arg.replace("{prompt}", &spec.body))
            }
            _ => command.push(arg.clone()),
        }
    }
    if !agent.command.iter().any(|a| a == OPTIONS) {
        command.extend(options);
    }
    let prompt = match agent.prompt {
        PromptMode::None | PromptMode::Argument => Prompt::None,
        // As a text file ends: with a newline.
        PromptMode::Stdin => Prompt::Stdin(format!("{}\n", spec.body)),
        PromptMode::File => Prompt::File(format!("{}\n", spec.body)),
    };
    if agent.prompt != PromptMode::None && spec.body.is_empty() {
        return Err(SpecError::EmptyPrompt(agent.name.clone()));
    }
    Ok(Invocation {
        agent,
        command,
        prompt,
    })
}

/// A budget is a positive amount: zero would refuse the agent's first request.
fn check_budget(front: &SpecFrontMatter) -> Result<(), SpecError> {
    if let Some(cost) = front.max_cost_usd
        && !(cost.is_finite() && cost > 0.0)
    {
        return Err(SpecError::BadOption {
            key: "max_cost_usd".into(),
            problem: format!("is {cost}; it must be a positive number of US dollars"),
        });
    }
    if front.max_tokens == Some(0) {
        return Err(SpecError::BadOption {
            key: "max_tokens".into(),
            problem: "is 0; it must be a positive number of tokens".into(),
        });
    }
    Ok(())
}

/// The arguments the spec's options add, each checked against the definition.
fn option_args(
    agent: &AgentDefinition,
    given: &BTreeMap<String, serde_yaml_ng::Value>,
) -> Result<Vec<String>, SpecError> {
    if let Some(key) = given.keys().find(|k| !agent.options.contains_key(*k)) {
        let mut accepted: Vec<&str> = agent.options.keys().map(String::as_str).collect();
        accepted.splice(0..0, ["agent", "egress", "max_cost_usd", "max_tokens"]);
        return Err(SpecError::UnknownOption {
            key: key.clone(),
            agent: agent.name.clone(),
            accepted: accepted.join(", "),
        });
    }
    let mut args = Vec::new();
    for (key, option) in &agent.options {
        let Some(value) = given.get(key) else {
            if option.required {
                return Err(SpecError::MissingOption {
                    key: key.clone(),
                    agent: agent.name.clone(),
                    description: option.description.clone(),
                });
            }
            continue;
        };
        let bad = |problem: String| SpecError::BadOption {
            key: key.clone(),
            problem,
        };
        let value = match option.kind {
            OptionKind::String => match value {
                serde_yaml_ng::Value::String(s) if !s.trim().is_empty() => s.clone(),
                _ => return Err(bad("must be non-empty text".into())),
            },
            OptionKind::Integer => {
                let n = value
                    .as_i64()
                    .ok_or_else(|| bad("must be a whole number".into()))?;
                let (min, max) = (
                    option.min.unwrap_or(i64::MIN),
                    option.max.unwrap_or(i64::MAX),
                );
                if !(min..=max).contains(&n) {
                    return Err(bad(format!("is {n}; it must be between {min} and {max}")));
                }
                n.to_string()
            }
        };
        // A value that starts with `-` would be read as another flag of the agent's.
        if option.kind == OptionKind::String
            && option.args.first().is_some_and(|a| a != "{value}")
            && value.starts_with('-')
        {
            return Err(bad("must not start with `-`".into()));
        }
        args.extend(option.args.iter().map(|a| a.replace("{value}", &value)));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_spec_is_titled_by_its_first_heading_else_its_first_line() {
        let spec = "---\nagent: script\n---\n\nIntro\n## Fix the <sum>\n";
        assert_eq!(super::title(spec).as_deref(), Some("Fix the <sum>"));
        assert_eq!(
            super::title("\n  plain words\nmore").as_deref(),
            Some("plain words")
        );
        assert_eq!(super::title("---\nagent: x\n---\n"), None);
        assert_eq!(super::title(&"x".repeat(500)).map(|t| t.len()), Some(120));
    }

    fn invocation(spec: &str) -> Result<Invocation, SpecError> {
        resolve(&parse_spec(spec)?)
    }

    #[test]
    fn parses_agent_run_and_body() {
        let spec = "---\nagent: script\nrun: |\n  echo hi\n  touch x\n---\n# Title\n\nDo it.\n";
        let parsed = parse_spec(spec).unwrap();
        assert_eq!(parsed.front.agent, "script");
        assert_eq!(parsed.body, "# Title\n\nDo it.");
        let inv = resolve(&parsed).unwrap();
        assert_eq!(inv.agent.name, "script");
        assert_eq!(inv.command, ["sh", "-c", "echo hi\ntouch x\n"]);
        assert_eq!(inv.prompt, Prompt::None);
    }

    #[test]
    fn the_front_matter_may_ask_for_a_verification_and_a_bad_one_is_refused() {
        let spec =
            "---\nagent: script\nrun: ls\nverify: cargo test\nverify_junit: target/j.xml\n---\n";
        let verify = parse_spec(spec).unwrap().front.verify().unwrap().unwrap();
        assert_eq!(verify.command, "cargo test");
        assert!(invocation(spec).is_ok());
        let bad = "---\nagent: script\nrun: ls\nverify: t\nverify_junit: ../j.xml\n---\n";
        assert_eq!(
            invocation(bad).unwrap_err().to_string(),
            "the spec's front matter: `verify_junit` `../j.xml` leaves the workspace (`..`)"
        );
    }

    #[test]
    fn another_agent_takes_the_spec_with_its_options_and_body() {
        let spec = "---\nagent: script\nrun: echo hi\nverify: make test\n---\n# Title\n\nDo it.\n";
        let other = with_agent(spec, "aider").unwrap();
        let parsed = parse_spec(&other).unwrap();
        assert_eq!(parsed.front.agent, "aider");
        assert_eq!(parsed.front.verify.as_deref(), Some("make test"));
        assert_eq!(parsed.body, "# Title\n\nDo it.");
        assert!(matches!(
            invocation(&other),
            Err(SpecError::UnknownOption { key, .. }) if key == "run"
        ));
        assert_eq!(
            with_agent("no front matter", "x"),
            Err(SpecError::NoFrontMatter)
        );
    }

    #[test]
    fn rejects_bad_specs() {
        assert_eq!(
            parse_spec("# no front matter\n"),
            Err(SpecError::NoFrontMatter)
        );
        assert_eq!(
            parse_spec("---\nagent: script\n"),
            Err(SpecError::Unterminated)
        );
        assert!(matches!(
            parse_spec("---\nagent: [unclosed\n---\n"),
            Err(SpecError::Yaml(_))
        ));
        assert!(matches!(
            parse_spec("---\nrun: x\n---\n"),
            Err(SpecError::Yaml(_))
        ));
    }

    #[test]
    fn unknown_agents_and_keys_are_named() {
        let err = invocation("---\nagent: nope\n---\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown agent `nope`; known agents: script, claude-code, codex, gemini-cli, aider"
        );
        let err = invocation("---\nagent: claude-code\nmodle: x\n---\nDo it.\n").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "unknown front-matter key `modle` for agent `claude-code`; it accepts: agent, "
            ),
            "{err}"
        );
        let err = invocation("---\nagent: script\nrun: x\nmodel: y\n---\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown front-matter key `model` for agent `script`; it accepts: agent, egress, max_cost_usd, max_tokens, run"
        );
    }

    #[test]
    fn options_are_checked_and_become_arguments() {
        let inv = invocation("---\nagent: claude-code\nmodel: sonnet\nmax_turns: 7\n---\nDo it.\n")
            .unwrap();
        let cmd = inv.command.join(" ");
        assert!(cmd.contains("--model sonnet"), "{cmd}");
        assert!(cmd.contains("--max-turns 7"), "{cmd}");
        for (spec, problem) in [
            (
                "max_turns: 0",
                "front-matter key `max_turns`: is 0; it must be between",
            ),
            (
                "max_turns: many",
                "front-matter key `max_turns`: must be a whole number",
            ),
            (
                "model: 3",
                "front-matter key `model`: must be non-empty text",
            ),
            (
                "model: --dangerous",
                "front-matter key `model`: must not start with `-`",
            ),
        ] {
            let err =
                invocation(&format!("---\nagent: claude-code\n{spec}\n---\nDo it.\n")).unwrap_err();
            assert!(err.to_string().starts_with(problem), "{spec}: {err}");
        }
        assert_eq!(
            invocation("---\nagent: script\n---\n").unwrap_err(),
            SpecError::MissingOption {
                key: "run".into(),
                agent: "script".into(),
                description: crate::find_agent("script").unwrap().options["run"]
                    .description
                    .clone(),
            }
        );
        assert_eq!(
            invocation("---\nagent: codex\n---\n\n").unwrap_err(),
            SpecError::EmptyPrompt("codex".into())
        );
    }

    #[test]
    fn an_egress_policy_is_read_from_the_front_matter() {
        let spec = parse_spec("---\nagent: claude-code\negress: none\n---\nGo.\n").unwrap();
        assert_eq!(spec.front.egress, Some(crate::egress::Policy::None));
        assert!(spec.front.options.is_empty());
        let spec =
            parse_spec("---\nagent: claude-code\negress: \"*.npmjs.org, pypi.org\"\n---\nGo.\n")
                .unwrap();
        assert_eq!(
            spec.front.egress.map(|p| p.to_string()).as_deref(),
            Some("*.npmjs.org,pypi.org")
        );
        let error =
            parse_spec("---\nagent: claude-code\negress: \"https://evil.example\"\n---\nGo.\n")
                .unwrap_err()
                .to_string();
        assert!(
            error.starts_with("invalid spec front matter")
                && error.contains("https://evil.example"),
            "{error}"
        );
    }

    #[test]
    fn a_budget_is_read_from_the_front_matter_and_must_be_positive() {
        let spec =
            parse_spec("---\nagent: claude-code\nmax_cost_usd: 0.5\nmax_tokens: 20000\n---\nGo.\n")
                .unwrap();
        assert_eq!(spec.front.max_cost_usd, Some(0.5));
        assert_eq!(spec.front.max_tokens, Some(20_000));
        assert!(
            spec.front.options.is_empty(),
            "budgets are not agent options"
        );
        resolve(&spec).unwrap();
        for (front, says) in [
            (
                "max_cost_usd: 0",
                "`max_cost_usd`: is 0; it must be a positive number",
            ),
            (
                "max_cost_usd: -2",
                "`max_cost_usd`: is -2; it must be a positive number",
            ),
            ("max_cost_usd: .nan", "`max_cost_usd`: is NaN"),
            (
                "max_tokens: 0",
                "`max_tokens`: is 0; it must be a positive number",
            ),
        ] {
            let spec =
                parse_spec(&format!("---\nagent: claude-code\n{front}\n---\nGo.\n")).unwrap();
            let error = resolve(&spec).unwrap_err().to_string();
            assert!(error.contains(says), "{front}: {error}");
        }
        for front in ["max_tokens: -1", "max_tokens: lots", "max_cost_usd: cheap"] {
            let error = parse_spec(&format!("---\nagent: claude-code\n{front}\n---\nGo.\n"))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("invalid spec front matter"),
                "{front}: {error}"
            );
        }
    }
}
