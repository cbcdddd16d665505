//! An attempt group (docs/attempts.md): its attempts ranked best first with the evidence the
//! ranking used, why the best won, the pull command, and a button that cancels every attempt
//! still running, through `POST /v1/groups/{id}/cancel` as `ckrv cancel GROUP` does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::{Group, Job};

use super::ConsoleState;
use super::page::{self, Section, model_cost, render, viewer};
use crate::error::AppError;
use crate::identity::web::escape;
use crate::jobs::routes::groups::group_of;

pub async fn page(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let user = match viewer(&state, &jar, &format!("/groups/{id}")).await? {
        Ok(user) => user,
        Err(sign_in) => return Ok(sign_in),
    };
    let group = match group_of(&state.jobs, &page::session(&user), &id).await {
        Ok(group) => group,
        Err(error) => return Ok(page::problem(&user, &error, Section::Jobs)),
    };
    let title = format!("Group {}", group.id.get(..8).unwrap_or(&group.id));
    Ok(render(
        &user,
        StatusCode::OK,
        Section::Jobs,
        "group",
        &title,
        &body(&group),
    ))
}

fn body(group: &Group) -> String {
    let id = escape(&group.id);
    let rows: String = group
        .attempts
        .iter()
        .enumerate()
        .map(|(rank, job)| row(rank + 1, job, group.winner.as_deref() == Some(&job.id)))
        .collect();
    let best = match (group.winning_job(), &group.reason) {
        (Some(winner), Some(reason)) => {
            let attempt = winner.attempt.unwrap_or_default();
            format!(
                r#"<p class="lede">Best: attempt {attempt}: {reason}</p>
<p class="pull"><code id="pull-cmd">ckrv pull {id}</code> <button type="button" data-copy="pull-cmd">Copy</button> <span class="hint">or <code>ckrv pull {id} --attempt N</code></span></p>"#,
                reason = escape(reason),
            )
        }
        _ => "<p class=\"lede\">No attempt has a change to pull yet.</p>".to_string(),
    };
    let running = group
        .attempts
        .iter()
        .any(|job| !job.lifecycle().is_terminal());
    let cancel = if running {
        format!(
            r#"<button type="button" class="danger" data-method="POST" data-path="/v1/groups/{id}/cancel">Cancel every attempt still running</button>"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{best}<p id="notice" role="status" aria-live="polite"></p>{cancel}
<div class="table-wrap"><table id="attempts"><caption>{count} attempts, best first{stop}</caption>
<thead><tr><th scope="col">Rank</th><th scope="col">Attempt</th><th scope="col">Agent</th><th scope="col">State</th><th scope="col">Verified</th><th scope="col">Tests</th><th scope="col">Change</th><th scope="col">Cost</th><th scope="col">Job</th></tr></thead>
<tbody>{rows}</tbody></table></div>"#,
        count = group.attempts.len(),
        stop = if group.stop_at_first_verified {
            "; the rest stop once one is verified"
        } else {
            ""
        },
    )
}

fn row(rank: usize, job: &Job, best: bool) -> String {
    let state = job.lifecycle().as_str();
    let verified = match job.verified {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    };
    let tests = job
        .verification
        .as_ref()
        .and_then(|v| v.tests.as_ref())
        .map(|t| format!("{} passed, {} failed", t.passed, t.failed))
        .unwrap_or_default();
    let change = job
        .diff_stats
        .as_ref()
        .map(|s| {
            format!(
                "<span class=\"ins\">+{}</span> <span class=\"del\">−{}</span>",
                s.insertions, s.deletions
            )
        })
        .unwrap_or_default();
    let cost = model_cost(job);
    format!(
        r#"<tr{class}><td>{rank}{mark}</td><td>{attempt}</td><td>{agent}</td><td><span class="state state-{state}">{state}</span></td><td>{verified}</td><td>{tests}</td><td>{change}</td><td>{cost}</td><td><a href="/jobs/{id}"><code>{short}</code></a></td></tr>"#,
        class = if best { " class=\"best\"" } else { "" },
        mark = if best { " (best)" } else { "" },
        attempt = job.attempt.unwrap_or_default(),
        agent = escape(job.agent.as_deref().unwrap_or_default()),
        id = escape(&job.id),
        short = escape(job.id.get(..8).unwrap_or(&job.id)),
    )
}
