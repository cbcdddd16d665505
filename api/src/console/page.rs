//! The console's page shell: who is signed in, the navigation, the stylesheet and script by
//! their digests, and the headers every page carries. The CSP allows script and style from this
//! origin only (never inline), connections to this origin only, and no framing.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use time::OffsetDateTime;

use super::ConsoleState;
use super::assets::assets;
use crate::clock;
use crate::error::AppError;
use crate::identity::extract::{Session, Via};
use crate::identity::web::{WebUser, escape};

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The signed-in person, or the way to sign in and come back to `here`.
pub async fn viewer(
    state: &ConsoleState,
    jar: &SignedCookieJar,
    here: &str,
) -> Result<Result<WebUser, Response>, AppError> {
    match WebUser::from_jar(&state.identity, jar).await? {
        Some(user) if !user.account.disabled => Ok(Ok(user)),
        _ => {
            let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
            Ok(Err(
                Redirect::to(&format!("/signin?next={next}")).into_response()
            ))
        }
    }
}

/// The person as the job routes know a caller, so a page sees exactly what the API would.
pub fn session(user: &WebUser) -> Session {
    Session {
        account_id: user.account.id.clone(),
        via: Via::Browser(user.session_hash().to_string()),
    }
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Jobs,
    Operators,
}

/// A whole page: `kind` tells the script what to run (`data-page`).
pub fn render(
    user: &WebUser,
    status: StatusCode,
    section: Section,
    kind: &str,
    title: &str,
    body: &str,
) -> Response {
    let assets = assets();
    let current = |s: Section| {
        if s == section {
            " aria-current=\"page\""
        } else {
            ""
        }
    };
    let operators = if user.account.is_admin {
        format!(
            "<a href=\"/operators\"{}>Operators</a>",
            current(Section::Operators)
        )
    } else {
        String::new()
    };
    let html = format!(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="csrf-token" content="{csrf}">
<title>{title} · ckrv</title>
<link rel="stylesheet" href="{style}">
<script src="{script}" defer></script>
</head><body data-page="{kind}">
<a class="skip" href="#main">Skip to content</a>
<header class="bar"><nav aria-label="Console"><a class="brand" href="/">ckrv</a><a href="/"{jobs}>Jobs</a>{operators}</nav>
<div class="who"><span>{email}</span><form method="post" action="/signout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit">Sign out</button></form></div></header>
<main id="main"><h1>{title}</h1>
{body}
</main></body></html>"##,
        csrf = escape(&user.csrf_token),
        title = escape(title),
        style = assets.style.href(),
        script = assets.script.href(),
        kind = escape(kind),
        jobs = current(Section::Jobs),
        email = escape(&user.account.email),
    );
    with_headers((status, Html(html)).into_response())
}

/// The headers of every console answer: this CSP, no framing, no sniffing, no caching, no
/// referrer.
pub fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A page that says what went wrong and what to do, in the console's shell.
pub fn problem(user: &WebUser, error: &AppError, section: Section) -> Response {
    let status = error.status();
    render(
        user,
        status,
        section,
        "problem",
        if status == StatusCode::NOT_FOUND {
            "Not found"
        } else {
            "Not available"
        },
        &format!(
            "<p class=\"warn\">{}</p><p><a href=\"/\">Back to your jobs</a></p>",
            escape(error.description())
        ),
    )
}

/// A timestamp as a `<time>` element: when, and how long ago.
pub fn time_ago(at: &str, now: OffsetDateTime) -> String {
    let ago = clock::parse(at)
        .map(|then| span((now - then).whole_seconds()) + " ago")
        .unwrap_or_else(|| at.to_string());
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        escape(at),
        escape(at),
        escape(&ago)
    )
}

/// Seconds between two timestamps, when both are there and parse.
pub fn seconds_between(from: Option<&str>, to: Option<&str>) -> Option<i64> {
    let from = clock::parse(from?)?;
    let to = clock::parse(to?)?;
    Some((to - from).whole_seconds().max(0))
}

/// What a job's agent spent on models, in dollars; empty before the gateway has counted any.
pub fn model_cost(job: &ckrv_wit::types::Job) -> String {
    job.usage
        .as_ref()
        .map(|usage| format!("${:.2}", usage.cost_usd))
        .unwrap_or_default()
}

/// A length of time in the largest two units that matter: `45 s`, `3 min 20 s`, `2 h 5 min`.
pub fn span(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min {} s", seconds / 60, seconds % 60),
        3600..86400 => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{} d {} h", seconds / 86400, seconds % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(-3), "0 s");
        assert_eq!(span(45), "45 s");
        assert_eq!(span(200), "3 min 20 s");
        assert_eq!(span(7500), "2 h 5 min");
        assert_eq!(span(90000), "1 d 1 h");
    }

    #[test]
    fn times_are_escaped_and_relative() {
        let now = clock::parse("2026-01-01T00:10:00Z").unwrap_or_else(clock::now);
        let html = time_ago("2026-01-01T00:00:00Z", now);
        assert!(html.contains("10 min 0 s ago"), "{html}");
        assert!(time_ago("<b>", now).contains("&lt;b&gt;"));
    }
}
