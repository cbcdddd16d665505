//! A worker step: a WebAssembly component of the world `ckrv:cloud/worker-step`. The worker
//! calls `run` once per job, at its place in the pipeline. Edit `run`; the rest is wiring.
//!
//! What a step can use (see docs/steps.md):
//! - `/workspace`, the job's files, with `std::fs` (nothing else of the filesystem exists);
//! - `git::diff(base)`, the change so far as a patch, and the host's other git calls;
//! - `log::write`, a line in the job's log under this stage's name;
//! - `wasi:http` to the API and to the stage's `allowed_hosts`, nothing else.

wit_bindgen::generate!({
    path: "wit",
    world: "ckrv:cloud/worker-step",
    generate_all,
});

use ckrv::cloud::log;
use ckrv::cloud::types::LogLevel;
use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

struct Step;

impl Guest for Step {
    /// Returns the step's outputs and a one-line summary, or an error that fails the job.
    fn run(ctx: StepContext) -> Result<StepOutput, String> {
        // Parameters come from the stage's `params` in the pipeline file, as text.
        let greeting = param(&ctx, "greeting").unwrap_or("hello");
        // Outputs of the steps before this one: after `diff`, `diff` holds the patch.
        let earlier = ctx.inputs.len();
        log::write(
            LogLevel::Info,
            &format!(
                "{greeting} from job {} ({earlier} earlier outputs)",
                ctx.job_id
            ),
        );
        // The job's files: count the entries at the top of the workspace.
        let entries = std::fs::read_dir("/workspace")
            .map_err(|e| format!("reading /workspace: {e}"))?
            .count();
        if param(&ctx, "fail").is_some_and(|v| v == "true") {
            // An error fails the job with this message, naming the stage.
            return Err("asked to fail".into());
        }
        Ok(StepOutput {
            outputs: vec![("entries".into(), entries.to_string())],
            summary: format!("{greeting}: the workspace has {entries} entries"),
        })
    }
}

/// A parameter of the stage, if the pipeline set it.
fn param<'a>(ctx: &'a StepContext, name: &str) -> Option<&'a str> {
    ctx.params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

export!(Step);
