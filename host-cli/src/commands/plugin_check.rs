//! `ckrv plugin check NAME`: the conformance kit. Drives a provider plugin through every call
//! of the provider interface against a live backend (a `ckrv-api serve`, or the provider's
//! own) with the signed-in session, and reports each contract point: pass, fail or skip.

use std::time::{Duration, Instant};

use ckrv_wit::types::{ErrorKind, Job, JobCreate, JobState, LogQuery};
use sha2::{Digest as _, Sha256};

use crate::cli::PluginCheckArgs;
use crate::cloud::Cloud;
use crate::config::Config;
use crate::output;

/// The spec dispatched when none is given: the built-in `script` agent writes one file.
const DEFAULT_SPEC: &str = "---\nagent: script\nrun: |\n  echo 'conformance check' \
                            > CKRV_CONFORMANCE.md\n  echo ckrv-conformance-line\n---\n\
                            # ckrv plugin check\n";
/// The longest the check waits for its job to end.
const JOB_DEADLINE: Duration = Duration::from_secs(600);

/// One contract point's outcome.
#[derive(Debug, serde::Serialize)]
pub struct Point {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

struct Report(Vec<Point>);

impl Report {
    fn note(&mut self, name: &'static str, outcome: Outcome, detail: impl Into<String>) {
        let detail = detail.into();
        self.0.push(Point {
            name,
            outcome,
            detail,
        });
    }

    fn check(&mut self, name: &'static str, ok: bool, detail: impl Into<String>) -> bool {
        let outcome = if ok { Outcome::Pass } else { Outcome::Fail };
        self.note(name, outcome, detail);
        ok
    }
}

pub async fn run(config: &Config, args: PluginCheckArgs) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.provider = args.name.clone();
    let mut cloud = Cloud::connect(&config).await?;
    let spec = match &args.spec {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
        None => DEFAULT_SPEC.to_string(),
    };
    let repo = match &args.repo {
        Some(url) => url.clone(),
        None => crate::git::origin_url(&std::env::current_dir()?)?,
    };
    let mut report = Report(Vec::new());
    let started = Instant::now();
    points(&mut cloud, &mut report, &spec, &repo, &args.base_branch).await;
    let failed = report
        .0
        .iter()
        .filter(|p| p.outcome == Outcome::Fail)
        .count();
    if args.json {
        output::json(&serde_json::json!({
            "provider": args.name,
            "api_url": cloud.api_url,
            "points": report.0,
            "passed": failed == 0,
        }))?;
    } else {
        for point in &report.0 {
            let mark = match point.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            output::line(format!("{mark}  {:<22} {}", point.name, point.detail));
        }
        output::blank();
        output::line(format!(
            "{} points, {failed} failed, in {:.1}s ({} against {})",
            report.0.len(),
            started.elapsed().as_secs_f64(),
            args.name,
            cloud.api_url
        ));
    }
    if failed > 0 {
        return Err(crate::exit::Exit::quiet(1).into());
    }
    Ok(())
}

async fn points(cloud: &mut Cloud, report: &mut Report, spec: &str, repo: &str, base: &str) {
    match cloud.provider.describe().await {
        Ok(info) => {
            let detail = format!("{} {}", info.name, info.version);
            report.check("describe", !info.version.is_empty(), detail);
        }
        Err(e) => {
            report.check("describe", false, e.to_string());
        }
    }

    let anonymous = cloud.anonymous();
    match cloud.provider.login_start(&anonymous).await {
        Ok(Ok(device)) => {
            let ok = !device.user_code.is_empty()
                && device.verification_uri.starts_with("http")
                && device.expires_in > 0;
            report.check(
                "login (device code)",
                ok,
                format!("code issued, approve at {}", device.verification_uri),
            );
        }
        Ok(Err(e)) if e.error == ErrorKind::UnsupportedGrantType => report.note(
            "login (device code)",
            Outcome::Skip,
            "the provider signs in with a token only",
        ),
        Ok(Err(e)) => {
            report.check("login (device code)", false, e.description().to_string());
        }
        Err(e) => {
            report.check("login (device code)", false, e.to_string());
        }
    }

    match cloud.call(async |p, ctx| p.whoami(ctx).await).await {
        Ok(user) => {
            report.check("whoami", !user.id.is_empty(), user.email);
        }
        Err(e) => {
            report.check("whoami", false, format!("{e:#} (sign in first)"));
            return;
        }
    }

    // Errors come as the contract's kinds.
    let missing = cloud
        .call_raw(async |p, ctx| p.get_job(ctx, "00000000-0000-0000-0000-000000000000").await)
        .await;
    let kind = match &missing {
        Ok(Err(e)) => Some(e.error),
        _ => None,
    };
    report.check(
        "errors: not found",
        kind == Some(ErrorKind::NotFound),
        format!("an unknown job gives {kind:?}"),
    );

    let request = JobCreate {
        spec_content: spec.to_string(),
        git_repo_url: repo.to_string(),
        git_base_branch: Some(base.to_string()),
        git_credential_name: None,
        spec_path: Some("ckrv-conformance.md".into()),
        no_snapshot: None,
        publish: None,
        continues: None,
        feedback: None,
    };
    let key = uuid::Uuid::new_v4().to_string();
    let job = match cloud
        .call(async |p, ctx| p.dispatch(ctx, &request, &key).await)
        .await
    {
        Ok(job) => {
            report.check("dispatch", !job.id.is_empty(), format!("job {}", job.id));
            job
        }
        Err(e) => {
            report.check("dispatch", false, format!("{e:#}"));
            return;
        }
    };
    match cloud
        .call(async |p, ctx| p.dispatch(ctx, &request, &key).await)
        .await
    {
        Ok(again) => {
            report.check(
                "dispatch: idempotency",
                again.id == job.id,
                "the same key gives the same job",
            );
        }
        Err(e) => {
            report.check("dispatch: idempotency", false, format!("{e:#}"));
        }
    }
    match cloud
        .call(async |p, ctx| p.get_job(ctx, &job.id).await)
        .await
    {
        Ok(read) => {
            report.check("status", read.id == job.id, format!("{}", read.lifecycle()));
        }
        Err(e) => {
            report.check("status", false, format!("{e:#}"));
        }
    }
    match cloud
        .call(async |p, ctx| p.list_jobs(ctx, None, None, 1).await)
        .await
    {
        Ok(page) => {
            let ok = page.jobs.len() == 1 && page.jobs[0].id == job.id;
            report.check(
                "list: newest first",
                ok,
                format!("{} job(s)", page.jobs.len()),
            );
        }
        Err(e) => {
            report.check("list: newest first", false, format!("{e:#}"));
        }
    }

    let (finished, lines) = follow(cloud, report, &job.id).await;
    let Some(finished) = finished else {
        return;
    };
    if spec == DEFAULT_SPEC {
        report.check(
            "logs: the agent's output",
            lines.iter().any(|l| l.contains("ckrv-conformance-line")),
            format!("{} lines", lines.len()),
        );
    } else {
        report.note("logs: the agent's output", Outcome::Skip, "a spec of yours");
    }
    if finished.lifecycle() == JobState::Succeeded {
        match cloud
            .call(async |p, ctx| p.fetch_diff(ctx, &job.id).await)
            .await
        {
            Ok(diff) => {
                let digest = hex::encode(Sha256::digest(&diff));
                let verified = finished.diff_sha256.as_deref().is_none_or(|d| d == digest);
                report.check(
                    "pull: diff",
                    verified && !diff.is_empty(),
                    format!("{} bytes, SHA-256 {}", diff.len(), &digest[..12]),
                );
            }
            Err(e) => {
                report.check("pull: diff", false, format!("{e:#}"));
            }
        }
    } else {
        report.check(
            "pull: diff",
            false,
            format!("the job ended {}", finished.lifecycle()),
        );
    }
    let cancel = cloud
        .call_raw(async |p, ctx| p.cancel_job(ctx, &job.id).await)
        .await;
    let kind = match &cancel {
        Ok(Err(e)) => Some(e.error),
        _ => None,
    };
    report.check(
        "cancel: an ended job",
        kind == Some(ErrorKind::Conflict),
        format!("gives {kind:?}"),
    );
}

/// Follows the job's log with long polls to its end; checks the cursor contract on the way.
async fn follow(cloud: &mut Cloud, report: &mut Report, id: &str) -> (Option<Job>, Vec<String>) {
    let deadline = Instant::now() + JOB_DEADLINE;
    let mut after = 0u64;
    let mut lines = Vec::new();
    let mut ordered = true;
    loop {
        if Instant::now() > deadline {
            report.check("logs: follow", false, "the job did not end in time");
            return (None, lines);
        }
        let query = LogQuery {
            after,
            limit: 500,
            tail: None,
            wait_ms: 10_000,
        };
        let page = match cloud
            .call(async |p, ctx| p.read_logs(ctx, id, query.clone()).await)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                report.check("logs: follow", false, format!("{e:#}"));
                return (None, lines);
            }
        };
        for entry in &page.logs {
            match entry.sequence {
                Some(sequence) if sequence > after => after = sequence,
                _ => ordered = false,
            }
            lines.push(entry.message.clone());
        }
        if page.logs.is_empty() && page.job_state.is_some_and(|s| s.is_terminal()) {
            break;
        }
    }
    report.check(
        "logs: cursor",
        ordered,
        "sequences rise; `after` skips what was read",
    );
    match cloud.call(async |p, ctx| p.get_job(ctx, id).await).await {
        Ok(job) => {
            report.check(
                "status: terminal",
                job.lifecycle().is_terminal(),
                format!("{}", job.lifecycle()),
            );
            (Some(job), lines)
        }
        Err(e) => {
            report.check("status: terminal", false, format!("{e:#}"));
            (None, lines)
        }
    }
}
