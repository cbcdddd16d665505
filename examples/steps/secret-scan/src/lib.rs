//! `secret-scan`: a worker step, made from `orchestrator/steps/template`, that runs between the
//! agent and the diff and fails the job, naming file and line, when the change adds something
//! that looks like a credential. The scanning is in [`scan`], which knows nothing of WIT.
//!
//! Params: `allowlist` (comma-separated; an entry is a path glob of files to skip, or text
//! that, found in a match, clears it: a known test fixture) and `max_findings` (how many to
//! list; default 20).

pub mod scan;

#[cfg(target_arch = "wasm32")]
mod step {
    wit_bindgen::generate!({
        path: "wit",
        world: "ckrv:cloud/worker-step",
        generate_all,
    });

    use crate::scan::{Allowlist, scan_patch};
    use ckrv::cloud::types::LogLevel;
    use ckrv::cloud::{git, log};
    use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

    struct SecretScan;

    impl Guest for SecretScan {
        fn run(ctx: StepContext) -> Result<StepOutput, String> {
            let param = |name: &str| {
                ctx.params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let allowlist = Allowlist::parse(param("allowlist").unwrap_or_default());
            let max = match param("max_findings") {
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("param max_findings is not a number: {v}"))?,
                None => 20,
            };
            let patch = git::diff(&ctx.git_base_branch)?;
            let report = scan_patch(&patch, &allowlist);
            for finding in report.findings.iter().take(max) {
                log::write(LogLevel::Warn, &finding.to_string());
            }
            if report.findings.is_empty() {
                return Ok(StepOutput {
                    outputs: vec![],
                    summary: format!(
                        "no secrets found in {} changed file(s)",
                        report.files_scanned
                    ),
                });
            }
            let mut message = format!(
                "found {} likely secret(s) in the change:",
                report.findings.len()
            );
            for finding in report.findings.iter().take(max) {
                message.push_str(&format!("\n  {finding}"));
            }
            if report.findings.len() > max {
                message.push_str(&format!("\n  … and {} more", report.findings.len() - max));
            }
            Err(message)
        }
    }

    export!(SecretScan);
}
