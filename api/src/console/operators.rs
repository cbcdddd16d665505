//! What an administrator sees of the whole system: whether the server is ready, the jobs
//! waiting and running in each account with the worker holding each and its last heartbeat,
//! the admission limits, the workers (this server's own and the external ones) with their jobs
//! and latest heartbeat, the accounts and their tokens, and each account's use this month. Its
//! buttons call the administrators' API; each names the CLI command that does the same.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::ErrorKind;

use super::ConsoleState;
use super::page::{self, Section, render, span, time_ago, viewer};
use crate::clock;
use crate::error::AppError;
use crate::identity::quota;
use crate::identity::tokens::SERVER_WORKER;
use crate::identity::web::escape;
use crate::ops::health::readiness;
use crate::store::{Account, ActiveJob, PersonalToken, WorkerCredential};

/// Jobs waiting or running shown at most.
const MAX_ACTIVE: u32 = 500;

pub async fn page(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
) -> Result<Response, AppError> {
    let user = match viewer(&state, &jar, "/operators").await? {
        Ok(user) => user,
        Err(sign_in) => return Ok(sign_in),
    };
    if !user.account.is_admin {
        let error = AppError::new(
            ErrorKind::Forbidden,
            "the operators' page is for administrators; an administrator can make you one with \
             `ckrv-api users add EMAIL --admin`",
        );
        return Ok(page::problem(&user, &error, Section::Operators));
    }
    let store = &state.jobs.store;
    let now = clock::now();
    let now_ms = clock::millis(now);
    let settings = state.jobs.engine.settings();
    let lease = settings.lease;
    let (limit, per) = (
        settings.admission.max_running,
        settings.admission.max_running_per_account,
    );
    let ready = readiness(&state.ops).await;
    let accounts = store.accounts().await?;
    let emails: HashMap<&str, &str> = accounts
        .iter()
        .map(|a| (a.id.as_str(), a.email.as_str()))
        .collect();
    let email = |id: &str| escape(emails.get(id).copied().unwrap_or(id));
    let active = store.active_jobs(MAX_ACTIVE).await?;
    let workers = store.worker_credentials().await?;
    let (month_start, _) = quota::cycle(now);
    let usage = store.usage_since(clock::millis(month_start)).await?;

    let readiness_html = format!(
        r#"<p id="readiness" class="{class}">{word}: database {db}, artifact store {art}{stopping}.</p>"#,
        class = if ready.ready { "ok" } else { "warn" },
        word = if ready.ready { "Ready" } else { "Not ready" },
        db = ready.database,
        art = ready.artifacts,
        stopping = if ready.stopping { ", stopping" } else { "" },
    );
    let active_rows: String = active
        .iter()
        .map(|job| active_row(job, &email(&job.account_id), lease, now))
        .collect();
    let queued = active.iter().filter(|j| j.state == "pending").count();
    let running = active.len() - queued;
    let per_account: String = {
        let mut counts: Vec<(String, usize, usize)> = Vec::new();
        for job in &active {
            let who = email(&job.account_id);
            let at = counts
                .iter()
                .position(|(e, _, _)| *e == who)
                .unwrap_or_else(|| {
                    counts.push((who, 0, 0));
                    counts.len() - 1
                });
            if job.state == "pending" {
                counts[at].1 += 1;
            } else {
                counts[at].2 += 1;
            }
        }
        counts
            .iter()
            .map(|(who, q, r)| format!("<li>{who}: {q} waiting, {r} running</li>"))
            .collect()
    };
    let worker_rows = worker_rows(
        state.jobs.engine.starts_workers(),
        &workers,
        &active,
        lease,
        now,
    );
    let mut account_rows = String::new();
    for account in &accounts {
        let tokens = store.personal_tokens(&account.id).await?;
        let live: Vec<&PersonalToken> = tokens
            .iter()
            .filter(|t| !t.revoked && t.expires_ms.is_none_or(|at| at > now_ms))
            .collect();
        account_rows.push_str(&account_row(account, &live, account.id == user.account.id));
    }
    let none = |rows: String, columns: u8, said: &str| {
        if rows.is_empty() {
            format!("<tr><td colspan=\"{columns}\">{said}</td></tr>")
        } else {
            rows
        }
    };
    let active_rows = none(active_rows, 8, "No job is waiting or running.");
    let worker_rows = none(
        worker_rows,
        7,
        "None: this server starts no workers, and none elsewhere is added yet; add one with \
         <code>ckrv-api workers add NAME</code>.",
    );
    let usage_rows: String = usage
        .iter()
        .map(|u| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>${:.2}</td></tr>",
                email(&u.account_id),
                u.jobs,
                quota::micros_to_dollars(u64::try_from(u.cost_micros).unwrap_or_default())
            )
        })
        .collect();
    let usage_rows = none(usage_rows, 3, "No jobs this month.");
    let body = format!(
        r#"<p id="notice" role="status" aria-live="polite"></p>
<section aria-labelledby="ready-h"><h2 id="ready-h">Server</h2>{readiness_html}</section>
<section aria-labelledby="queue-h"><h2 id="queue-h">Queue</h2><p>{queued} waiting, {running} running; at most {limit} run at once, {per} for one account (<code>--max-running</code>, <code>--max-running-per-account</code>).</p><ul>{per_account}</ul>
<div class="table-wrap"><table id="active"><thead><tr><th scope="col">Job</th><th scope="col">Account</th><th scope="col">State</th><th scope="col">Phase</th><th scope="col">Agent</th><th scope="col">Worker</th><th scope="col">Last heartbeat</th><th scope="col">Age</th></tr></thead><tbody>{active_rows}</tbody></table></div></section>
<section aria-labelledby="workers-h"><h2 id="workers-h">Workers</h2><p><code>local</code> is this server's own: the workers it starts for its jobs. The others are external, each with its own credential.</p>
<div class="table-wrap"><table id="workers"><thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Running</th><th scope="col">Last heartbeat</th><th scope="col">Last claim</th><th scope="col">Added</th><th scope="col">Remove with</th></tr></thead><tbody>{worker_rows}</tbody></table></div></section>
<section aria-labelledby="accounts-h"><h2 id="accounts-h">Accounts</h2>
<div class="table-wrap"><table id="accounts"><thead><tr><th scope="col">Email</th><th scope="col">Tier</th><th scope="col">Role</th><th scope="col">Status</th><th scope="col">Personal access tokens</th><th scope="col">Actions</th></tr></thead><tbody>{account_rows}</tbody></table></div></section>
<section aria-labelledby="usage-h"><h2 id="usage-h">Use this month</h2>
<div class="table-wrap"><table id="usage"><thead><tr><th scope="col">Account</th><th scope="col">Jobs</th><th scope="col">Model cost</th></tr></thead><tbody>{usage_rows}</tbody></table></div></section>"#
    );
    Ok(render(
        &user,
        StatusCode::OK,
        Section::Operators,
        "operators",
        "Operators",
        &body,
    ))
}

/// A job waiting or running, with its worker's last heartbeat.
fn active_row(
    job: &ActiveJob,
    email: &str,
    lease: std::time::Duration,
    now: time::OffsetDateTime,
) -> String {
    let now_ms = clock::millis(now);
    let heartbeat = job
        .lease_expires_ms
        .filter(|_| job.state == "running")
        .map(|until| {
            let last = at_millis(last_heartbeat_ms(until, lease));
            let lapsed = if until < now_ms {
                format!(
                    " <span class=\"warn\">(lease lapsed {} ago)</span>",
                    span((now_ms - until) / 1000)
                )
            } else {
                String::new()
            };
            format!("{}{lapsed}", time_ago(&last, now))
        })
        .unwrap_or_default();
    format!(
        r#"<tr><td><code>{short}</code></td><td>{email}</td><td><span class="state state-{state}">{state}</span></td><td>{phase}</td><td>{agent}</td><td>{worker}</td><td>{heartbeat}</td><td>{age}</td></tr>"#,
        short = escape(job.id.get(..8).unwrap_or(&job.id)),
        state = escape(&job.state),
        phase = escape(job.phase.as_deref().unwrap_or_default()),
        agent = escape(job.agent.as_deref().unwrap_or_default()),
        worker = escape(job.worker.as_deref().unwrap_or_default()),
        age = time_ago(&job.created_at, now),
    )
}

/// When a running job's worker last renewed its lease ending at `until`: each heartbeat renews
/// it to a full `lease` from then, so the last one was a lease before the lease's end.
fn last_heartbeat_ms(until: i64, lease: std::time::Duration) -> i64 {
    until.saturating_sub(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

fn at_millis(ms: i64) -> String {
    clock::rfc3339(clock::from_millis(ms))
}

/// One row per worker: this server's own (`local`, when it starts workers) and each external
/// one, with how many jobs it runs now and the latest heartbeat among them.
fn worker_rows(
    starts_workers: bool,
    external: &[WorkerCredential],
    active: &[ActiveJob],
    lease: std::time::Duration,
    now: time::OffsetDateTime,
) -> String {
    let running = |name: &str| {
        let jobs: Vec<&ActiveJob> = active
            .iter()
            .filter(|job| job.state == "running" && job.worker.as_deref() == Some(name))
            .collect();
        let latest = jobs
            .iter()
            .filter_map(|job| job.lease_expires_ms)
            .map(|until| last_heartbeat_ms(until, lease))
            .max();
        let heartbeat = latest.map_or_else(
            || "no job running".to_string(),
            |ms| time_ago(&at_millis(ms), now),
        );
        (jobs.len(), heartbeat)
    };
    let mut rows = String::new();
    if starts_workers {
        let (count, heartbeat) = running(SERVER_WORKER);
        rows.push_str(&format!(
            "<tr data-worker=\"{SERVER_WORKER}\"><td>{SERVER_WORKER}</td><td>this server's</td><td>{count}</td><td>{heartbeat}</td><td>at each job's start</td><td>with the server</td><td>stops with the server</td></tr>",
        ));
    }
    for worker in external {
        let (count, heartbeat) = running(&worker.name);
        rows.push_str(&format!(
            "<tr data-worker=\"{name}\"><td>{name}</td><td>external</td><td>{count}</td><td>{heartbeat}</td><td>{last}</td><td>{added}</td><td><code>ckrv-api workers remove {name}</code></td></tr>",
            name = escape(&worker.name),
            added = time_ago(&at_millis(worker.created_ms), now),
            last = worker
                .last_claim_ms
                .map(|ms| time_ago(&at_millis(ms), now))
                .unwrap_or_else(|| "never".to_string()),
        ));
    }
    rows
}

/// An account with its live tokens, and buttons that call the administrators' API (the CLI
/// command that does the same is named beside each).
fn account_row(account: &Account, live_tokens: &[&PersonalToken], is_me: bool) -> String {
    let email = escape(&account.email);
    let in_path: String = url::form_urlencoded::byte_serialize(account.email.as_bytes()).collect();
    let button = |method: &str, path: String, label: &str, what: &str| {
        format!(
            "<button type=\"button\" data-method=\"{method}\" data-path=\"{}\" aria-label=\"{label} {what}\">{label}</button>",
            escape(&path)
        )
    };
    let (status, action) = if account.disabled {
        (
            "disabled",
            button(
                "POST",
                format!("/v1/admin/accounts/{in_path}/enable"),
                "Enable",
                &email,
            ) + &format!(" <code>ckrv-api users enable {email}</code>"),
        )
    } else if is_me {
        ("enabled", "this is you".to_string())
    } else {
        (
            "enabled",
            button(
                "POST",
                format!("/v1/admin/accounts/{in_path}/disable"),
                "Disable",
                &email,
            ) + &format!(" <code>ckrv-api users disable {email}</code>"),
        )
    };
    let tokens: String = if live_tokens.is_empty() {
        "none".to_string()
    } else {
        let items: String = live_tokens
            .iter()
            .map(|token| {
                let id: String =
                    url::form_urlencoded::byte_serialize(token.id.as_bytes()).collect();
                format!(
                    "<li>{name} <code>{id_text}</code> {revoke}</li>",
                    name = escape(&token.name),
                    id_text = escape(&token.id),
                    revoke = button(
                        "DELETE",
                        format!("/v1/admin/accounts/{in_path}/tokens/{id}"),
                        "Revoke",
                        &format!("{} of {email}", escape(&token.name)),
                    ),
                )
            })
            .collect();
        format!("<ul class=\"tokens\">{items}</ul>")
    };
    format!(
        "<tr data-email=\"{email}\"><td>{email}</td><td>{tier}</td><td>{role}</td><td class=\"account-status\">{status}</td><td>{tokens}</td><td>{action}</td></tr>",
        tier = account.tier.as_str(),
        role = if account.is_admin {
            "administrator"
        } else {
            "user"
        },
    )
}
