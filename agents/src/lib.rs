//! Agents as data, the spec front matter that picks one, and the runtimes that run it in a
//! job's workspace: a process, bubblewrap, or the agent container of a Kubernetes job pod.

mod definition;
pub mod egress;
pub mod environment;
mod output;
pub mod pod;
mod runtime;
mod sandbox;
mod spec;
pub mod verify;

pub use definition::{
    AgentDefinition, AgentOption, KeyHeader, ModelRoute, OptionKind, PromptMode, agent_names,
    agents, find_agent,
};
pub use egress::{Allowlist, Entry, Policy, Refusal};
pub use output::{MAX_LINE_BYTES, OutputLine, Stream};
pub use pod::{PodError, PodRuntime};
pub use runtime::{AgentRuntime, ExitStatus, ProcessRuntime, RunRequest, home_in, run_collecting};
pub use sandbox::{
    DEFAULT_TMP_BYTES, MAX_TMP_MIB, NoEgressBridge, SandboxLimits, SandboxRuntime,
    SandboxUnavailable,
};
pub use spec::{
    Invocation, PROMPT_FILE, Prompt, Spec, SpecError, SpecFrontMatter, parse_front_matter,
    parse_spec, resolve, title as spec_title, with_agent,
};
