//! Agents as data, the spec front matter that picks one, and the runtime that runs it in a
//! job's workspace.

mod definition;
mod output;
mod runtime;
mod sandbox;
mod spec;

pub use definition::{
    AgentDefinition, AgentOption, OptionKind, PromptMode, agent_names, agents, find_agent,
};
pub use output::MAX_LINE_BYTES;
pub use runtime::{
    AgentRuntime, ExitStatus, OutputLine, ProcessRuntime, RunRequest, Stream, run_collecting,
};
pub use sandbox::{SandboxLimits, SandboxRuntime, SandboxUnavailable};
pub use spec::{
    Invocation, PROMPT_FILE, Prompt, Spec, SpecError, SpecFrontMatter, parse_front_matter,
    parse_spec, resolve,
};
