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
            ctx.inputs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("upload needs the `{name}` output of an earlier step"))
        };
        let diff = input("diff")?;
        let summary = input("summary")?;
        let api = ctx.api_url.trim_end_matches('/');
        log::write(
            LogLevel::Info,
            &format!("uploading diff ({} bytes)", diff.len()),
        );
        call(
            "PUT",
            &format!("{api}{}", paths::fill(paths::WORKER_DIFF, &ctx.job_id)),
            &[("Content-Type", "text/x-diff")],
            diff.as_bytes(),
        )?;
        call(
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

fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(), String> {
    let response = http::send(method, url, headers, Some(body))
        .map_err(|e| format!("{method} {url} failed: {e}"))?;
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(format!(
            "{method} {url} returned {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ))
    }
}

export!(Upload);
