//! Worker step `upload`: sends the diff and its summary to the API. It holds no credential:
//! the host adds the worker token to requests for the API's authority.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "ckrv:cloud/worker-step",
    with: {
        "ckrv:cloud/types@0.1.0": ckrv_wit::types,
        "wasi:http/types@0.2.12": ckrv_wit::guest::wasi::http::types,
        "wasi:http/outgoing-handler@0.2.12": ckrv_wit::guest::wasi::http::outgoing_handler,
        "wasi:io/poll@0.2.12": ckrv_wit::guest::wasi::io::poll,
        "wasi:io/error@0.2.12": ckrv_wit::guest::wasi::io::error,
        "wasi:io/streams@0.2.12": ckrv_wit::guest::wasi::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": ckrv_wit::guest::wasi::clocks::monotonic_clock,
    },
    generate_all,
});

use ckrv::cloud::log;
use ckrv_wit::guest::http;
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
        let base = format!(
            "{}/v1/worker/jobs/{}",
            ctx.api_url.trim_end_matches('/'),
            ctx.job_id
        );
        log::write(
            LogLevel::Info,
            &format!("uploading diff ({} bytes)", diff.len()),
        );
        call(
            "PUT",
            &format!("{base}/artifacts/diff"),
            &[("Content-Type", "text/x-diff")],
            diff.as_bytes(),
        )?;
        call(
            "POST",
            &format!("{base}/result"),
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
