//! One job: where it is in its life, what it did, its log (which the script loads, follows over
//! the API's SSE stream with resume, searches and pages through), the way to its diff, and what
//! the person can do next (copy the pull command, cancel).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::{JobPhase, JobState};
use time::OffsetDateTime;

use super::ConsoleState;
use super::page::{self, Section, render, seconds_between, span, time_ago, viewer};
use crate::clock;
use crate::error::AppError;
use crate::identity::web::escape;
use crate::jobs::routes::lookup::resolve;
use crate::store::JobRow;

pub async fn page(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let here = format!("/jobs/{id}");
    let user = match viewer(&state, &jar, &here).await? {
        Ok(user) => user,
        Err(sign_in) => return Ok(sign_in),
    };
    let row = match resolve(&state.jobs, &page::session(&user), &id).await {
        Ok(row) => row,
        Err(error) => return Ok(page::problem(&user, &error, Section::Jobs)),
    };
    let follow_ups = state.jobs.store.follow_ups(&row.job.id).await?;
    let now = clock::now();
    let title = format!("Job {}", row.job.id.get(..8).unwrap_or(&row.job.id));
    let body = format!(
        "{summary}{timeline}{actions}{details}{change}{log}",
        summary = summary(&row, now),
        timeline = timeline(&row),
        actions = actions(&row),
        details = details(&row, &follow_ups),
        change = change(&row),
        log = log(&row),
    );
    Ok(render(
        &user,
        StatusCode::OK,
        Section::Jobs,
        "job",
        &title,
        &body,
    ))
}

fn summary(row: &JobRow, now: OffsetDateTime) -> String {
    let job = &row.job;
    let title = ckrv_agents::spec_title(&row.spec).unwrap_or_default();
    format!(
        r#"<p class="lede">{title}</p>
<p class="summary"><span id="job-state" class="state state-{state}">{state}</span> · {agent} · <span class="repo">{repo}</span> @ <code>{branch}</code> · created {created}</p>"#,
        title = escape(&title),
        state = row.state.as_str(),
        agent = escape(job.agent.as_deref().unwrap_or("agent not known yet")),
        repo = escape(&job.git_repo_url),
        branch = escape(&job.git_base_branch),
        created = time_ago(&job.created_at, now),
    )
}

/// The phases in order: those passed, the current one, those to come.
fn timeline(row: &JobRow) -> String {
    let current = row.job.phase.unwrap_or(JobPhase::Queued);
    let ended = row.state.is_terminal();
    let items: String = JobPhase::ALL
        .into_iter()
        .map(|phase| {
            let (class, said) = if phase == current && !(ended && phase == JobPhase::Finished) {
                ("current", " (now)")
            } else if ended || is_before(phase, current) {
                ("done", "")
            } else {
                ("todo", "")
            };
            let aria = if class == "current" {
                " aria-current=\"step\""
            } else {
                ""
            };
            format!("<li class=\"{class}\"{aria}>{}{said}</li>", phase.as_str())
        })
        .collect();
    format!(
        r#"<section aria-labelledby="phases-h"><h2 id="phases-h">Phases</h2><ol class="timeline" id="timeline" data-phase="{}">{items}</ol></section>"#,
        current.as_str()
    )
}

fn is_before(phase: JobPhase, current: JobPhase) -> bool {
    let at = |p: JobPhase| JobPhase::ALL.iter().position(|x| *x == p);
    at(phase) < at(current)
}

fn actions(row: &JobRow) -> String {
    let id = escape(&row.job.id);
    let cancel = if row.state.is_terminal() {
        String::new()
    } else {
        format!(
            r#"<button type="button" id="cancel" class="danger" data-job="{id}">Cancel job</button>"#
        )
    };
    let pull = if row.job.change_is_pullable() && row.has_diff {
        format!(
            r#"<p class="pull"><code id="pull-cmd">ckrv pull {id}</code> <button type="button" data-copy="pull-cmd">Copy</button></p>"#
        )
    } else if row.state.is_terminal() {
        "<p>There is no change to pull.</p>".to_string()
    } else {
        format!(
            r#"<p class="pull">When it is done: <code id="pull-cmd">ckrv pull {id}</code> <button type="button" data-copy="pull-cmd">Copy</button></p>"#
        )
    };
    // A follow-up starts from the change and its base commit (docs/follow-ups.md).
    let can_continue = row.job.change_is_pullable()
        && row.has_diff
        && row.expired_at.is_none()
        && row
            .job
            .diff_stats
            .as_ref()
            .and_then(|stats| stats.base_commit.as_deref())
            .is_some_and(|base| !base.is_empty());
    let follow_up = if can_continue {
        format!(
            r#"<form id="follow-up" class="follow-up" data-job="{id}"><label for="feedback">Feedback for a follow-up job, which starts from this change</label>
<textarea id="feedback" name="feedback" rows="3" required></textarea>
<button type="submit">Continue with feedback</button> <span class="hint">or <code>ckrv run --cloud --continue {id} --message TEXT</code></span></form>"#
        )
    } else {
        String::new()
    };
    format!(
        r#"<section aria-labelledby="actions-h"><h2 id="actions-h">Actions</h2>{pull}{cancel}{follow_up}<p id="notice" role="status" aria-live="polite"></p></section>"#
    )
}

fn details(row: &JobRow, follow_ups: &[String]) -> String {
    let job = &row.job;
    let mut items: Vec<(&str, String)> = vec![("Job", format!("<code>{}</code>", escape(&job.id)))];
    let mut text = |name: &'static str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            items.push((name, escape(value)));
        }
    };
    text("Spec", job.spec_path.as_deref());
    text("Branch", job.feature_branch_name.as_deref());
    text("Started", job.started_at.as_deref());
    text("Completed", job.completed_at.as_deref());
    text("Result", job.result_summary.as_deref());
    text("Error", job.error_message.as_deref());
    let verification = job.verification.as_ref().map(|v| v.line());
    text("Verified", verification.as_deref());
    if let Some(seconds) = seconds_between(job.started_at.as_deref(), job.completed_at.as_deref()) {
        items.push(("Duration", span(seconds)));
    }
    if let Some(usage) = &job.usage {
        items.push((
            "Model use",
            format!(
                "{} requests, {} tokens in, {} out, ${:.2}",
                usage.requests, usage.input_tokens, usage.output_tokens, usage.cost_usd
            ),
        ));
    }
    if let Some(publication) = &job.publication {
        let request = publication
            .pull_request_url
            .as_deref()
            .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
            .map(|url| {
                format!(
                    ", <a href=\"{0}\" rel=\"noreferrer noopener\">{0}</a>",
                    escape(url)
                )
            })
            .unwrap_or_default();
        items.push((
            "Published",
            format!(
                "branch <code>{}</code> at <code>{}</code>{request}",
                escape(&publication.branch),
                escape(publication.commit.get(..12).unwrap_or(&publication.commit)),
            ),
        ));
    }
    if let (Some(group), Some(attempt)) = (&job.group_id, job.attempt) {
        items.push((
            "Attempt",
            format!(
                "{attempt} of group <a href=\"/groups/{0}\"><code>{0}</code></a>",
                escape(group)
            ),
        ));
    }
    if let Some(parent) = &job.parent_id {
        items.push((
            "Follows up",
            format!("<a href=\"/jobs/{0}\"><code>{0}</code></a>", escape(parent)),
        ));
    }
    if !follow_ups.is_empty() {
        let links: Vec<String> = follow_ups
            .iter()
            .map(|id| format!("<a href=\"/jobs/{0}\"><code>{0}</code></a>", escape(id)))
            .collect();
        items.push(("Followed up by", links.join(", ")));
    }
    let rows: String = items
        .iter()
        .map(|(name, value)| format!("<dt>{name}</dt><dd>{value}</dd>"))
        .collect();
    format!(
        r#"<section aria-labelledby="details-h"><h2 id="details-h">Details</h2><dl class="details">{rows}</dl></section>"#
    )
}

fn change(row: &JobRow) -> String {
    let job = &row.job;
    let body = match (&job.diff_stats, row.expired_at.as_deref()) {
        (_, Some(when)) => format!(
            "<p>The diff and log expired at {} under this server's retention.</p>",
            escape(when)
        ),
        (Some(stats), None) if row.has_diff => format!(
            r#"<p>{files} files changed, <span class="ins">+{ins}</span> <span class="del">−{del}</span>. <a href="/jobs/{id}/diff">Read the diff</a></p>"#,
            files = stats.files_changed,
            ins = stats.insertions,
            del = stats.deletions,
            id = escape(&job.id),
        ),
        _ if row.state == JobState::Succeeded => "<p>The job changed nothing.</p>".to_string(),
        _ => "<p>No change yet.</p>".to_string(),
    };
    format!(r#"<section aria-labelledby="change-h"><h2 id="change-h">Change</h2>{body}</section>"#)
}

fn log(row: &JobRow) -> String {
    if row.expired_at.is_some() {
        return String::new();
    }
    format!(
        r#"<section aria-labelledby="log-h"><h2 id="log-h">Log</h2>
<div class="log-tools" role="toolbar" aria-label="Log tools">
<label>Search <input id="log-search" type="search" autocomplete="off" aria-describedby="log-count"></label>
<button type="button" id="log-prev">Previous</button><button type="button" id="log-next">Next</button>
<button type="button" id="log-error">Next error</button>
<label><input type="checkbox" id="log-follow" checked> Follow</label>
<span id="log-count" role="status" aria-live="polite"></span></div>
<div id="log" class="log" tabindex="0" role="log" aria-labelledby="log-h" data-job="{id}" data-ended="{ended}"><div class="log-space"></div></div>
<noscript><p>The log needs script: read it with <code>ckrv logs {id}</code>.</p></noscript></section>"#,
        id = escape(&row.job.id),
        ended = row.state.is_terminal(),
    )
}
