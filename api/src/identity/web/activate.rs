//! Where a signed-in person sees a device's pending sign-in request (which client, when, from
//! which address) and approves or denies it.

use axum::extract::rejection::{FormRejection, QueryRejection};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use serde::Deserialize;

use super::{WebUser, escape, normalize_user_code, query_value, render, too_many};
use crate::clock;
use crate::error::AppError;
use crate::identity::IdentityState;
use crate::store::PendingRequest;

#[derive(Deserialize, Default)]
pub struct CodeQuery {
    user_code: Option<String>,
}

pub async fn page(
    State(state): State<IdentityState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: SignedCookieJar,
    query: Result<Query<CodeQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let code = query
        .ok()
        .and_then(|Query(q)| q.user_code)
        .map(|c| normalize_user_code(&c))
        .filter(|c| !c.is_empty());
    let Some(user) = WebUser::from_jar(&state, &jar).await? else {
        let here = match &code {
            Some(code) => format!("/activate?user_code={}", query_value(code)),
            None => "/activate".to_string(),
        };
        return Ok(Redirect::to(&format!("/signin?next={}", query_value(&here))).into_response());
    };
    let Some(code) = code else {
        return Ok(enter_code(&user, StatusCode::OK, None));
    };
    if let Err(wait) = state.limits.user_code(peer.ip(), &code) {
        return Ok(too_many(wait));
    }
    match state
        .store
        .pending_request(&code, clock::millis(clock::now()))
        .await?
    {
        Some(request) => Ok(review(&user, &request)),
        None => Ok(enter_code(
            &user,
            StatusCode::NOT_FOUND,
            Some(&unknown(&code)),
        )),
    }
}

#[derive(Deserialize)]
pub struct Decision {
    csrf: String,
    user_code: String,
    decision: String,
}

pub async fn decide(
    State(state): State<IdentityState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: SignedCookieJar,
    form: Result<Form<Decision>, FormRejection>,
) -> Result<Response, AppError> {
    let Some(user) = WebUser::from_jar(&state, &jar).await? else {
        return Ok(Redirect::to("/signin?next=%2Factivate").into_response());
    };
    let Ok(Form(decision)) = form else {
        return Ok(enter_code(
            &user,
            StatusCode::BAD_REQUEST,
            Some("The form was incomplete. Enter the code again."),
        ));
    };
    if !user.csrf_ok(&decision.csrf) {
        tracing::warn!(account = %user.account.id, "a device decision without this session's CSRF token");
        return Ok(enter_code(
            &user,
            StatusCode::FORBIDDEN,
            Some("This form did not come from this page. Enter the code again."),
        ));
    }
    let code = normalize_user_code(&decision.user_code);
    if let Err(wait) = state.limits.user_code(peer.ip(), &code) {
        return Ok(too_many(wait));
    }
    let now = clock::millis(clock::now());
    let (done, title, message) = match decision.decision.as_str() {
        "approve" => (
            state.store.approve_user_code(&code, &user.account.id, now).await?,
            "Device approved",
            format!(
                "✔ Signed in as {}. You can return to your terminal.",
                escape(&user.account.email)
            ),
        ),
        "deny" => (
            state.store.deny_user_code(&code, now).await?,
            "Request denied",
            "The device was not signed in. If you did not start this, someone may know your code: nothing more is needed.".to_string(),
        ),
        _ => (false, "", String::new()),
    };
    if !done {
        return Ok(enter_code(
            &user,
            StatusCode::NOT_FOUND,
            Some(&unknown(&code)),
        ));
    }
    tracing::info!(account = %user.account.id, decision = %decision.decision, "device request decided");
    Ok(render(
        StatusCode::OK,
        title,
        &format!("<p>{message}</p>{}", sign_out_form(&user)),
    ))
}

/// The request, as the person must see it before deciding.
fn review(user: &WebUser, request: &PendingRequest) -> Response {
    let asked = clock::rfc3339(clock::from_millis(request.created_ms));
    let body = format!(
        r#"<p>A device asks to sign in as <strong>{email}</strong>.</p>
<p>Code <span class="code">{code}</span><br>
Client <code>{client}</code><br>
From {from}<br>
Asked at {asked}</p>
<p class="warn">Approve only if you started <code>ckrv cloud login</code> yourself and the code matches your terminal.</p>
<form method="post" action="/activate" class="inline">
  <input type="hidden" name="csrf" value="{csrf}">
  <input type="hidden" name="user_code" value="{code}">
  <button type="submit" name="decision" value="approve">Approve</button>
  <button type="submit" name="decision" value="deny">Deny</button>
</form>{sign_out}"#,
        email = escape(&user.account.email),
        code = escape(&request.user_code),
        client = escape(&request.client_id),
        from = escape(&request.requested_from),
        asked = escape(&asked),
        csrf = escape(&user.csrf_token),
        sign_out = sign_out_form(user),
    );
    render(StatusCode::OK, "Approve this device?", &body)
}

fn enter_code(user: &WebUser, status: StatusCode, problem: Option<&str>) -> Response {
    let notice = problem
        .map(|p| format!("<p class=\"warn\">{p}</p>"))
        .unwrap_or_default();
    let body = format!(
        r#"{notice}<p>Signed in as {email}. Enter the code <code>ckrv cloud login</code> shows.</p>
<form method="get" action="/activate">
  <label>Code <input name="user_code" class="code" autocomplete="off" required autofocus></label>
  <button type="submit">Continue</button>
</form>{sign_out}"#,
        email = escape(&user.account.email),
        sign_out = sign_out_form(user),
    );
    render(status, "Activate a device", &body)
}

fn unknown(code: &str) -> String {
    format!(
        "The code {} is unknown, expired or already used. Run <code>ckrv cloud login</code> again for a new one.",
        escape(code)
    )
}

fn sign_out_form(user: &WebUser) -> String {
    format!(
        r#"<form method="post" action="/signout"><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form>"#,
        escape(&user.csrf_token)
    )
}
