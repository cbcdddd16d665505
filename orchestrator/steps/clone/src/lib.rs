//! Worker step `clone`: checks out the base branch and creates the feature branch, through the
//! host's `git` so that repository credentials never enter the sandbox.

ckrv_wit::guest_bindings!("../../../wit", "ckrv:cloud/worker-step", generate_all);

use ckrv::cloud::{git, log};
use ckrv_wit::types::LogLevel;
use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

struct Clone;

impl Guest for Clone {
    fn run(ctx: StepContext) -> Result<StepOutput, String> {
        log::write(
            LogLevel::Info,
            &format!("cloning {} at {}", ctx.repo_url, ctx.base_branch),
        );
        git::clone_repo(&ctx.repo_url, &ctx.base_branch)?;
        log::write(
            LogLevel::Info,
            &format!("creating branch {}", ctx.feature_branch),
        );
        git::create_branch(&ctx.feature_branch)
            .map_err(|e| format!("creating branch {} failed: {e}", ctx.feature_branch))?;
        Ok(StepOutput {
            outputs: vec![("branch".into(), ctx.feature_branch.clone())],
            summary: format!(
                "cloned {} ({}) onto branch {}",
                ctx.repo_url, ctx.base_branch, ctx.feature_branch
            ),
        })
    }
}

export!(Clone);
