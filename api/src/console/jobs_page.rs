//! The account's jobs, newest first, with filters. The script keeps the table current by asking
//! for its rows again (`?rows=true`: the same rows this renders, nothing else).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::JobState;
use serde::Deserialize;
use time::OffsetDateTime;

use super::ConsoleState;
use super::page::{self, Section, model_cost, render, seconds_between, span, time_ago, viewer};
use crate::clock;
use crate::error::{AppError, invalid};
use crate::identity::web::escape;
use crate::store::{JobFilter, JobRow};

/// Jobs per page unless the page asks for more.
const DEFAULT_ROWS: u32 = 100;
const MAX_ROWS: u32 = 1000;

#[derive(Deserialize, Default)]
pub struct Filters {
    state: Option<String>,
    agent: Option<String>,
    repo: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
    /// Only the table's rows: what the script refreshes the table with.
    #[serde(default)]
    rows: bool,
}

pub async fn page(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
    query: Result<Query<Filters>, QueryRejection>,
) -> Result<Response, AppError> {
    let user = match viewer(&state, &jar, "/").await? {
        Ok(user) => user,
        Err(sign_in) => return Ok(sign_in),
    };
    let filters = match query {
        Ok(Query(filters)) => filters,
        Err(rejection) => {
            return Ok(page::problem(
                &user,
                &invalid(format!("the filters: {rejection}")),
                Section::Jobs,
            ));
        }
    };
    let (job_filter, before, limit) = match checked(&filters) {
        Ok(checked) => checked,
        Err(error) => return Ok(page::problem(&user, &error, Section::Jobs)),
    };
    let jobs = state
        .jobs
        .store
        .find_jobs(&user.account.id, &job_filter, before, limit)
        .await?;
    let now = clock::now();
    let rows: String = jobs.iter().map(|job| row(job, now)).collect();
    if filters.rows {
        return Ok(page::with_headers(Html(rows).into_response()));
    }
    let older = (jobs.len() == limit as usize)
        .then(|| jobs.last())
        .flatten()
        .map(|last| {
            format!(
                "<p><a href=\"/?{}\">Older jobs</a></p>",
                escape(&query_string(&filters, Some(last.seq)))
            )
        })
        .unwrap_or_default();
    let table = if jobs.is_empty() {
        "<p>No jobs here yet. Dispatch one with <code>ckrv run --cloud --spec SPEC</code>.</p>"
            .to_string()
    } else {
        format!(
            r#"<div class="table-wrap"><table id="jobs" class="jobs"><caption>{count} jobs, newest first{live}</caption>
<thead><tr><th scope="col">Job</th><th scope="col">Spec</th><th scope="col">State</th><th scope="col">Phase</th><th scope="col">Agent</th><th scope="col">Repository</th><th scope="col">Age</th><th scope="col">Duration</th><th scope="col">Cost</th></tr></thead>
<tbody>{rows}</tbody></table></div>"#,
            count = jobs.len(),
            live = if filters.cursor.is_none() {
                "; updated as they change"
            } else {
                ""
            },
        )
    };
    let body = format!(
        "{form}{table}{older}",
        form = filter_form(&filters),
        table = table,
    );
    Ok(render(
        &user,
        StatusCode::OK,
        Section::Jobs,
        if filters.cursor.is_none() {
            "jobs"
        } else {
            "jobs-older"
        },
        "Jobs",
        &body,
    ))
}

/// The filters as the store takes them, or what is wrong with them.
fn checked(filters: &Filters) -> Result<(JobFilter<'_>, Option<i64>, u32), AppError> {
    let states = match filters.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(word) => Some(vec![
            JobState::ALL
                .into_iter()
                .find(|state| state.as_str() == word)
                .ok_or_else(|| {
                    invalid(format!(
                        "state {word:?} is not one of {}",
                        JobState::ALL.map(JobState::as_str).join(", ")
                    ))
                })?,
        ]),
    };
    let before = match filters.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
            invalid(format!(
                "cursor {cursor:?} is not one this page made: start from the first page"
            ))
        })?),
    };
    let limit = filters.limit.unwrap_or(DEFAULT_ROWS);
    if !(1..=MAX_ROWS).contains(&limit) {
        return Err(invalid(format!("limit must be between 1 and {MAX_ROWS}")));
    }
    fn text(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    Ok((
        JobFilter {
            states,
            agent: text(&filters.agent),
            repo: text(&filters.repo),
        },
        before,
        limit,
    ))
}

/// The page's address for the same filters, from `cursor`.
fn query_string(filters: &Filters, cursor: Option<i64>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("state", &filters.state),
        ("agent", &filters.agent),
        ("repo", &filters.repo),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            query.append_pair(name, value);
        }
    }
    if let Some(limit) = filters.limit {
        query.append_pair("limit", &limit.to_string());
    }
    if let Some(cursor) = cursor {
        query.append_pair("cursor", &cursor.to_string());
    }
    query.finish()
}

fn filter_form(filters: &Filters) -> String {
    let chosen = filters.state.as_deref().unwrap_or_default();
    let options: String = std::iter::once(("", "Any state"))
        .chain(JobState::ALL.map(|s| (s.as_str(), s.as_str())))
        .map(|(value, label)| {
            format!(
                "<option value=\"{value}\"{selected}>{label}</option>",
                selected = if value == chosen { " selected" } else { "" }
            )
        })
        .collect();
    format!(
        r#"<form method="get" action="/" class="filters" role="search" aria-label="Filter jobs">
<label>State <select name="state">{options}</select></label>
<label>Agent <input name="agent" value="{agent}" autocomplete="off"></label>
<label>Repository <input name="repo" value="{repo}" autocomplete="off"></label>
<button type="submit">Filter</button> <a href="/">Clear</a></form>"#,
        agent = escape(filters.agent.as_deref().unwrap_or_default()),
        repo = escape(filters.repo.as_deref().unwrap_or_default()),
    )
}

/// One job's row.
fn row(row: &JobRow, now: OffsetDateTime) -> String {
    let job = &row.job;
    let state = row.state.as_str();
    let title = ckrv_agents::spec_title(&row.spec)
        .or_else(|| job.spec_path.clone())
        .unwrap_or_default();
    let ended = job.completed_at.as_deref();
    let running_until = ended.map_or_else(|| clock::rfc3339(now), str::to_string);
    let duration = seconds_between(job.started_at.as_deref(), Some(&running_until))
        .map(span)
        .unwrap_or_default();
    let cost = model_cost(job);
    format!(
        r#"<tr data-id="{id}"><td><a href="/jobs/{id}"><code>{short}</code></a></td><td>{title}</td><td><span class="state state-{state}">{state}</span></td><td>{phase}</td><td>{agent}</td><td class="repo">{repo}</td><td>{age}</td><td>{duration}</td><td>{cost}</td></tr>"#,
        id = escape(&job.id),
        short = escape(job.id.get(..8).unwrap_or(&job.id)),
        title = escape(&title),
        phase = job.phase.map(|p| p.as_str()).unwrap_or_default(),
        agent = escape(job.agent.as_deref().unwrap_or_default()),
        repo = escape(&job.git_repo_url),
        age = time_ago(&job.created_at, now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_named() {
        let filters = Filters {
            state: Some("sleeping".into()),
            ..Filters::default()
        };
        let error = checked(&filters).err().map(|e| e.description().to_string());
        assert!(error.is_some_and(|e| e.contains("\"sleeping\"") && e.contains("running")));
        let filters = Filters {
            limit: Some(5000),
            ..Filters::default()
        };
        assert!(checked(&filters).is_err());
        let filters = Filters {
            cursor: Some("x".into()),
            ..Filters::default()
        };
        assert!(checked(&filters).is_err());
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let filters = Filters {
            state: Some("running".into()),
            repo: Some("a&b".into()),
            ..Filters::default()
        };
        assert_eq!(
            query_string(&filters, Some(7)),
            "state=running&repo=a%26b&cursor=7"
        );
    }
}
