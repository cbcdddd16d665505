//! Worker step `publish`: when the job publishes, has the host commit the change and push it to
//! the job's branch, opens the pull request (GitHub) or merge request (GitLab) if asked, and
//! tells the API where the result went. It holds no credential: the host pushes with the job's,
//! and adds it to requests for the forge's API when the stage's `allowed_hosts` names it.
//!
//! Inputs from the host: `publish` (the job's mode), `title` (the spec's), `publish_branch`
//! (the branch the host pushes: the job's own, or its chain's) and, for a follow-up
//! whose chain has one, `pull_request_url` (updated by the push, not opened again); from the
//! steps before it: `diff` and `summary`. Params: `author_name`, `author_email` (the commit's).

ckrv_wit::guest_bindings!("../../../wit", "ckrv:cloud/worker-step", generate_all);

use ckrv::cloud::git::{self, ForgeApi, ForgeKind};
use ckrv::cloud::log;
use ckrv_wit::guest::{http, named as value};
use ckrv_wit::protocol::paths;
use ckrv_wit::types::{DiffStats, LogLevel, Publication, PublishMode};
use exports::ckrv::cloud::step::{Guest, StepContext, StepOutput};

const DEFAULT_AUTHOR_NAME: &str = "Chakravarti";
const DEFAULT_AUTHOR_EMAIL: &str = "ckrv@noreply.invalid";
/// GitHub's REST API version this step speaks.
const GITHUB_API_VERSION: &str = "2022-11-28";
/// How many changed files the pull request's description lists.
const LISTED_FILES: usize = 20;

struct Publish;

impl Guest for Publish {
    fn run(ctx: StepContext) -> Result<StepOutput, String> {
        let mode = match value(&ctx.inputs, "publish") {
            Some(text) => PublishMode::parse(text)?,
            None => PublishMode::None,
        };
        if !mode.publishes() {
            return Ok(skipped(
                "the job does not publish (ckrv run --cloud --publish)",
            ));
        }
        if value(&ctx.inputs, "diff").is_none_or(|diff| diff.trim().is_empty()) {
            return Ok(skipped(
                "the job changed nothing, so there is nothing to publish",
            ));
        }
        let stats: Option<DiffStats> =
            value(&ctx.inputs, "summary").and_then(|json| serde_json::from_str(json).ok());
        let title = value(&ctx.inputs, "title")
            .map(str::to_string)
            .unwrap_or_else(|| format!("ckrv job {}", ctx.job_id));
        let summary = stats
            .as_ref()
            .map_or_else(String::new, DiffStats::summary_line);
        let message = format!("{title}\n\n{summary}\n\nckrv job {}\n", ctx.job_id);
        let branch = value(&ctx.inputs, "publish_branch").unwrap_or(&ctx.feature_branch_name);
        let commit = git::push_branch(
            &message,
            value(&ctx.params, "author_name").unwrap_or(DEFAULT_AUTHOR_NAME),
            value(&ctx.params, "author_email").unwrap_or(DEFAULT_AUTHOR_EMAIL),
        )?;
        log::write(
            LogLevel::Info,
            &format!(
                "pushed {} ({}) to {}",
                branch,
                commit.get(..12).unwrap_or(&commit),
                ctx.git_repo_url
            ),
        );
        let mut publication = Publication {
            mode,
            branch: branch.to_string(),
            commit,
            pull_request_url: None,
        };
        let existing = value(&ctx.inputs, "pull_request_url");
        let opened = if let (true, Some(url)) = (mode.opens_pull_request(), existing) {
            // A follow-up's push updated the chain's pull request.
            Ok(Some(url.to_string()))
        } else if mode.opens_pull_request() {
            let body = description(&ctx, &summary, stats.as_ref());
            open_pull_request(&ctx, branch, &title, &body, mode == PublishMode::DraftPr)
        } else {
            Ok(None)
        };
        // The branch is in the repository whatever came of the pull request: the API hears of it.
        if let Ok(Some(url)) = &opened {
            publication.pull_request_url = Some(url.clone());
        }
        report(&ctx, &publication)?;
        opened?;
        if existing.is_some() && publication.pull_request_url.is_some() {
            log::write(LogLevel::Info, "the push updated the pull request");
        }
        Ok(StepOutput {
            outputs: vec![("published_branch".into(), publication.branch.clone())],
            summary: match &publication.pull_request_url {
                Some(url) => format!("published {} as {url}", publication.branch),
                None => format!("published {}", publication.branch),
            },
        })
    }
}

fn skipped(why: &str) -> StepOutput {
    StepOutput {
        outputs: Vec::new(),
        summary: why.to_string(),
    }
}

/// The pull request's description: what changed, and where the job is.
fn description(ctx: &StepContext, summary: &str, stats: Option<&DiffStats>) -> String {
    let mut body = format!("{summary}\n\n");
    if let Some(stats) = stats {
        for file in stats.files.iter().take(LISTED_FILES) {
            body.push_str(&format!(
                "- `{}` (+{} -{})\n",
                file.path, file.insertions, file.deletions
            ));
        }
        if stats.files.len() > LISTED_FILES {
            body.push_str(&format!(
                "- … and {} more\n",
                stats.files.len() - LISTED_FILES
            ));
        }
        body.push('\n');
    }
    let api = ctx.api_url.trim_end_matches('/');
    body.push_str(&format!(
        "Made by ckrv job [`{id}`]({api}{path}): `ckrv status {id}`, `ckrv logs {id}`.\n",
        id = ctx.job_id,
        path = paths::fill(paths::JOB, &ctx.job_id),
    ));
    body
}

/// Opens the pull request on the repository's forge; its web address.
fn open_pull_request(
    ctx: &StepContext,
    branch: &str,
    title: &str,
    body: &str,
    draft: bool,
) -> Result<Option<String>, String> {
    let Some(forge) = git::forge() else {
        return Err(format!(
            "cannot open a pull request for {}: the host knows the REST API of GitHub and \
             GitLab (github.com, gitlab.com, or a host the job's credential names as either), \
             called with an access token; the branch {} is pushed",
            ctx.git_repo_url, branch
        ));
    };
    let (url, request, link) = match forge.kind {
        ForgeKind::Github => (
            format!("{}/repos/{}/pulls", forge.api_url, forge.project),
            serde_json::json!({
                "title": title,
                "head": branch,
                "base": ctx.git_base_branch,
                "body": body,
                "draft": draft,
            }),
            "html_url",
        ),
        ForgeKind::Gitlab => (
            format!(
                "{}/projects/{}/merge_requests",
                forge.api_url,
                encode_path(&forge.project)
            ),
            serde_json::json!({
                "title": if draft { format!("Draft: {title}") } else { title.to_string() },
                "source_branch": branch,
                "target_branch": ctx.git_base_branch,
                "description": body,
            }),
            "web_url",
        ),
    };
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("User-Agent", "ckrv-publish"),
    ];
    if forge.kind == ForgeKind::Github {
        headers.push(("Accept", "application/vnd.github+json"));
        headers.push(("X-GitHub-Api-Version", GITHUB_API_VERSION));
    }
    let bytes = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    let response = http::send("POST", &url, &headers, Some(&bytes))
        .map_err(|e| format!("opening the pull request at {url} failed: {e}"))?;
    let answer: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    if !(200..300).contains(&response.status) {
        return Err(format!(
            "{} refused the pull request ({}): {}; the branch {} is pushed",
            forge_name(&forge),
            response.status,
            forge_reason(&answer, &response.body),
            branch
        ));
    }
    let link = answer[link]
        .as_str()
        .ok_or_else(|| format!("{} answered with no `{link}`", forge_name(&forge)))?;
    Ok(Some(link.to_string()))
}

fn forge_name(forge: &ForgeApi) -> &'static str {
    match forge.kind {
        ForgeKind::Github => "GitHub",
        ForgeKind::Gitlab => "GitLab",
    }
}

/// The forge's own words: GitHub's `message` and each error's `message` or `code`, GitLab's
/// `message` (text or list) or `error`.
fn forge_reason(answer: &serde_json::Value, raw: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    match &answer["message"] {
        serde_json::Value::String(text) => parts.push(text.clone()),
        serde_json::Value::Array(items) => {
            parts.extend(items.iter().filter_map(|m| m.as_str().map(str::to_string)))
        }
        _ => {}
    }
    if let Some(error) = answer["error"].as_str() {
        parts.push(error.to_string());
    }
    if let Some(errors) = answer["errors"].as_array() {
        for error in errors {
            let said = error["message"].as_str().map(str::to_string).or_else(|| {
                Some(format!(
                    "{} {}",
                    error["field"].as_str()?,
                    error["code"].as_str()?
                ))
            });
            parts.extend(said);
        }
    }
    if parts.is_empty() {
        parts.push(String::from_utf8_lossy(raw).chars().take(300).collect());
    }
    parts.join(": ")
}

/// A project path as one URL path segment (GitLab's `:id`): `/` and anything else outside the
/// unreserved characters percent-encoded.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Tells the API where the result went.
fn report(ctx: &StepContext, publication: &Publication) -> Result<(), String> {
    let url = format!(
        "{}{}",
        ctx.api_url.trim_end_matches('/'),
        paths::fill(paths::WORKER_PUBLICATION, &ctx.job_id)
    );
    let body = serde_json::to_vec(publication).map_err(|e| e.to_string())?;
    http::send_ok("PUT", &url, &[("Content-Type", "application/json")], &body)
}

export!(Publish);
