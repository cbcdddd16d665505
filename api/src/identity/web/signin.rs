//! Signing in with email and password, and signing out.

use std::time::Duration;

use axum::extract::rejection::{FormRejection, QueryRejection};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::session::{self, Binding, WebUser};
use super::{escape, render, too_many};
use crate::error::AppError;
use crate::identity::IdentityState;
use crate::identity::accounts;
use crate::identity::tokens::new_secret;

/// The nonce the sign-in form must echo, so another site cannot sign a browser in to an
/// account of its choosing (login CSRF).
const NONCE: Binding = Binding::new("ckrv_signin", Duration::from_secs(30 * 60));

#[derive(Deserialize, Default)]
pub struct Next {
    next: Option<String>,
}

pub async fn page_for(
    state: &IdentityState,
    jar: SignedCookieJar,
    next: &str,
    problem: Option<(StatusCode, &str)>,
) -> Response {
    let nonce = new_secret("nonce");
    let jar = NONCE.bind(state, jar, nonce.clone());
    let (status, notice) = match problem {
        Some((status, message)) => (status, format!("<p class=\"warn\">{}</p>", escape(message))),
        None => (StatusCode::OK, String::new()),
    };
    let sso = state
        .sso
        .as_ref()
        .map(|sso| {
            format!(
                r#"<p><a href="/signin/sso?next={}">Sign in with {}</a></p><p>or with your password:</p>"#,
                escape(&super::query_value(next)),
                escape(sso.name())
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"{notice}{sso}<form method="post" action="/signin">
  <input type="hidden" name="nonce" value="{nonce}">
  <input type="hidden" name="next" value="{next}">
  <label>Email <input name="email" type="email" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>"#,
        next = escape(next)
    );
    (jar, render(status, "Sign in", &body)).into_response()
}

pub async fn page(
    State(state): State<IdentityState>,
    jar: SignedCookieJar,
    next: Result<Query<Next>, QueryRejection>,
) -> Result<Response, AppError> {
    let next = safe_next(next.ok().and_then(|Query(n)| n.next).as_deref());
    if WebUser::from_jar(&state, &jar).await?.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    Ok(page_for(&state, jar, &next, None).await)
}

#[derive(Deserialize)]
pub struct SignInForm {
    email: String,
    password: Zeroizing<String>,
    nonce: String,
    next: Option<String>,
}

pub async fn submit(
    State(state): State<IdentityState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: SignedCookieJar,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, AppError> {
    let Ok(Form(form)) = form else {
        let problem = (
            StatusCode::BAD_REQUEST,
            "Enter your email and your password.",
        );
        return Ok(page_for(&state, jar, "/activate", Some(problem)).await);
    };
    let next = safe_next(form.next.as_deref());
    if !NONCE.matches(&jar, &form.nonce) {
        let problem = (
            StatusCode::BAD_REQUEST,
            "This sign-in form expired or came from elsewhere. Sign in again here.",
        );
        return Ok(page_for(&state, jar, &next, Some(problem)).await);
    }
    if let Err(wait) = state.limits.sign_in(peer.ip(), &form.email) {
        tracing::warn!(from = %peer.ip(), "sign-in attempts rate-limited");
        return Ok(too_many(wait));
    }
    let Some(account) = accounts::check_sign_in(&state.store, &form.email, form.password).await?
    else {
        tracing::info!("a sign-in failed");
        let problem = (
            StatusCode::UNAUTHORIZED,
            "The email or the password is wrong.",
        );
        return Ok(page_for(&state, jar, &next, Some(problem)).await);
    };
    tracing::info!(account = %account.id, "signed in on the web");
    let jar = session::sign_in(&state, jar, &account.id).await?;
    let jar = NONCE.clear(jar);
    Ok((jar, Redirect::to(&next)).into_response())
}

#[derive(Deserialize)]
pub struct SignOutForm {
    csrf: String,
}

pub async fn sign_out(
    State(state): State<IdentityState>,
    jar: SignedCookieJar,
    form: Result<Form<SignOutForm>, FormRejection>,
) -> Result<Response, AppError> {
    let user = WebUser::from_jar(&state, &jar).await?;
    let Some(user) = user.filter(|u| form.is_ok_and(|Form(f)| u.csrf_ok(&f.csrf))) else {
        return Ok(Redirect::to("/signin").into_response());
    };
    let jar = user.sign_out(&state, jar).await?;
    Ok((
        jar,
        render(StatusCode::OK, "Signed out", "<p>You are signed out.</p>"),
    )
        .into_response())
}

/// Where to go after signing in: a path on this site only, never another origin.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(
            safe_next(Some("/activate?user_code=BCDF-2345")),
            "/activate?user_code=BCDF-2345"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
