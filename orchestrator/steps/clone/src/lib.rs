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
            &format!("cloning {} at {}", ctx.git_repo_url, ctx.git_base_branch),
        );
        git::clone_repo(&ctx.git_repo_url, &ctx.git_base_branch)?;
        log::write(
            LogLevel::Info,
            &format!("creating branch {}", ctx.feature_branch_name),
        );
        git::create_branch(&ctx.feature_branch_name)
            .map_err(|e| format!("creating branch {} failed: {e}", ctx.feature_branch_name))?;
        Ok(StepOutput {
            outputs: vec![("branch".into(), ctx.feature_branch_name.clone())],
            summary: format!(
                "cloned {} ({}) onto branch {}",
                ctx.git_repo_url, ctx.git_base_branch, ctx.feature_branch_name
            ),
        })
    }
}

export!(Clone);
