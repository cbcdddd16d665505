//! Worker step `upload`: sends the diff and its summary to the API. It holds no credential:
//! the host adds the worker token to requests for the API's authority.

ckrv_wit::guest_bindings!("../../../wit", "ckrv:cloud/worker-step", generate_all);

use ckrv::cloud::log;
use ckrv_wit::guest::http;
use ckrv_wit::protocol::paths;
use ckrv_wit::types::LogLevel;
use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

struct Upload;

impl Guest for Upload {
    fn run(ctx: StepContext) -> Result<StepOutput, String> {
        let input = |name: &str| {
            ckrv_wit::guest::named(&ctx.inputs, name)
                .ok_or_else(|| format!("upload needs the `{name}` output of an earlier step"))
        };
        let diff = input("diff")?;
        let summary = input("summary")?;
        let api = ctx.api_url.trim_end_matches('/');
        log::write(
            LogLevel::Info,
            &format!("uploading diff ({} bytes)", diff.len()),
        );
        http::send_ok(
            "PUT",
            &format!("{api}{}", paths::fill(paths::WORKER_DIFF, &ctx.job_id)),
            &[("Content-Type", "text/x-diff")],
            diff.as_bytes(),
        )?;
        http::send_ok(
            "POST",
            &format!("{api}{}", paths::fill(paths::WORKER_RESULT, &ctx.job_id)),
            &[("Content-Type", "application/json")],
            summary.as_bytes(),
        )?;
        Ok(StepOutput {
            outputs: Vec::new(),
            summary: format!("uploaded diff ({} bytes) and summary", diff.len()),
        })
    }
}

export!(Upload);
