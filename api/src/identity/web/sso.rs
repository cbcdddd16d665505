//! Signing in through the team's OpenID provider: `/signin/sso` sends the person there, and
//! the provider sends them back to `/signin/sso/callback`. The attempt's `state` is also given
//! to the browser that started it, in a signed cookie: an answer that comes back in another
//! browser (an attacker's own callback URL opened in a victim's) signs nobody in, so nobody can
//! be signed in to the attacker's account (login CSRF).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::SubscriptionTier;
use serde::Deserialize;

use super::session::{self, Binding};
use super::signin::safe_next;
use super::{escape, render};
use crate::clock;
use crate::error::AppError;
use crate::identity::IdentityState;
use crate::identity::accounts::{self, NewUser};
use crate::identity::tokens::{duration_ms, hash_secret};
use crate::store::SsoLogin;

/// How long a person has at the provider.
const SSO_TTL: Duration = Duration::from_secs(10 * 60);
/// The `state` of the attempt this browser started; the provider's answer must carry it.
const STATE: Binding = Binding::new("ckrv_sso", SSO_TTL);

#[derive(Deserialize, Default)]
pub struct Next {
    next: Option<String>,
}

pub async fn start(
    State(state): State<IdentityState>,
    jar: SignedCookieJar,
    next: Result<Query<Next>, QueryRejection>,
) -> Result<Response, AppError> {
    let Some(sso) = state.sso.clone() else {
        return Ok(refused(
            StatusCode::NOT_FOUND,
            "Single sign-on is not set up on this server.",
        ));
    };
    let next = safe_next(next.ok().and_then(|Query(n)| n.next).as_deref());
    let started = match sso.start().await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on could not start");
            return Ok(refused(StatusCode::BAD_GATEWAY, &e.to_string()));
        }
    };
    let login = SsoLogin {
        state_hash: hash_secret(&started.state),
        nonce: started.nonce,
        pkce_verifier: started.pkce_verifier,
        next,
    };
    let expires = clock::millis(clock::now()) + duration_ms(SSO_TTL);
    state.store.create_sso_login(&login, expires).await?;
    // The stored attempt (its nonce and PKCE verifier) is found by its state, and only the
    // browser holding this cookie can present that state back.
    let jar = STATE.bind(&state, jar, started.state);
    Ok((jar, Redirect::to(&started.authorize_url)).into_response())
}

#[derive(Deserialize, Default)]
pub struct Answer {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(
    State(state): State<IdentityState>,
    jar: SignedCookieJar,
    answer: Result<Query<Answer>, QueryRejection>,
) -> Result<Response, AppError> {
    let Some(sso) = state.sso.clone() else {
        return Ok(refused(
            StatusCode::NOT_FOUND,
            "Single sign-on is not set up on this server.",
        ));
    };
    let Ok(Query(answer)) = answer else {
        return Ok(refused(
            StatusCode::BAD_REQUEST,
            "The provider's answer was malformed.",
        ));
    };
    // The attempt is used up whatever the answer: a state is good once.
    let login = match &answer.state {
        Some(sent) => {
            state
                .store
                .take_sso_login(&hash_secret(sent), clock::millis(clock::now()))
                .await?
        }
        None => None,
    };
    let Some(login) = login else {
        return Ok(refused(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started here, or it expired. Start again from the sign-in page.",
        ));
    };
    let started_here = answer
        .state
        .as_deref()
        .is_some_and(|sent| STATE.matches(&jar, sent));
    let jar = STATE.clear(jar);
    if !started_here {
        tracing::warn!("a single sign-on answer came back to a browser that did not start it");
        return Ok((
            jar,
            refused(
                StatusCode::FORBIDDEN,
                "This sign-in was started in another browser, so it cannot finish in this one. \
                 If you followed a link to get here, someone may be trying to sign you in to \
                 their account: start again from the sign-in page.",
            ),
        )
            .into_response());
    }
    if let Some(error) = answer.error {
        let why = answer.error_description.unwrap_or(error);
        return Ok(refused(
            StatusCode::UNAUTHORIZED,
            &format!("The provider said: {why}"),
        ));
    }
    let Some(code) = answer.code else {
        return Ok(refused(
            StatusCode::BAD_REQUEST,
            "The provider sent no code.",
        ));
    };
    let email = match sso.finish(code, login.pkce_verifier, login.nonce).await {
        Ok(email) => email,
        Err(e) => {
            tracing::warn!(error = %e, "a single sign-on failed");
            return Ok(refused(StatusCode::UNAUTHORIZED, &e.to_string()));
        }
    };
    let email = match accounts::normalize_email(&email) {
        Ok(email) => email,
        Err(e) => return Ok(refused(StatusCode::UNAUTHORIZED, &e.to_string())),
    };
    let account = match state.store.account_by_email(&email).await? {
        Some(account) if account.disabled => {
            return Ok(refused(
                StatusCode::FORBIDDEN,
                &format!("The account for {email} is disabled."),
            ));
        }
        Some(account) => account,
        None if sso.domain_allowed(&email) => {
            let user = NewUser {
                email: email.clone(),
                name: None,
                tier: SubscriptionTier::Free,
                admin: false,
                password: None,
            };
            let account = accounts::add_user(&state.store, user)
                .await
                .map_err(|e| AppError::new(ckrv_wit::types::ErrorKind::Internal, e.to_string()))?;
            tracing::info!(account = %account.id, "account created through single sign-on");
            account
        }
        None => {
            return Ok(refused(
                StatusCode::FORBIDDEN,
                &format!(
                    "There is no account for {email}, and its domain does not get one automatically. Ask an administrator to add it."
                ),
            ));
        }
    };
    tracing::info!(account = %account.id, "signed in through single sign-on");
    let jar = session::sign_in(&state, jar, &account.id).await?;
    Ok((jar, Redirect::to(&login.next)).into_response())
}

fn refused(status: StatusCode, why: &str) -> Response {
    render(
        status,
        "Sign-in failed",
        &format!(
            "<p class=\"warn\">{}</p><p><a href=\"/signin\">Back to sign-in</a></p>",
            escape(why)
        ),
    )
}
