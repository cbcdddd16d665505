//! One-time setup links: the first administrator creates their account, and a person an
//! administrator added chooses their password. The link is spent when the form succeeds.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::SubscriptionTier;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{escape, render, session};
use crate::clock;
use crate::error::AppError;
use crate::identity::IdentityState;
use crate::identity::accounts::{self, IdentityError, NewUser};
use crate::identity::password;
use crate::identity::tokens::hash_secret;
use crate::store::Account;

#[derive(Deserialize, Default)]
pub struct TokenQuery {
    token: Option<String>,
}

/// Whom the link is for: `Some(None)` is the first administrator, `None` a spent or unknown link.
async fn holder(state: &IdentityState, token: &str) -> Result<Option<Option<Account>>, AppError> {
    let now = clock::millis(clock::now());
    let Some(account_id) = state.store.setup_token(&hash_secret(token), now).await? else {
        return Ok(None);
    };
    Ok(match account_id {
        None => Some(None),
        Some(id) => state.store.account(&id).await?.map(Some),
    })
}

pub async fn page(
    State(state): State<IdentityState>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let token = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    Ok(match holder(&state, &token).await? {
        Some(holder) => form(&token, holder.as_ref(), StatusCode::OK, None),
        None => spent(),
    })
}

#[derive(Deserialize)]
pub struct SetupForm {
    token: String,
    email: Option<String>,
    name: Option<String>,
    password: Zeroizing<String>,
    confirm: Zeroizing<String>,
}

pub async fn submit(
    State(state): State<IdentityState>,
    jar: SignedCookieJar,
    form: Result<Form<SetupForm>, FormRejection>,
) -> Result<Response, AppError> {
    let Ok(Form(form)) = form else {
        return Ok(render(
            StatusCode::BAD_REQUEST,
            "Set up your account",
            "<p class=\"warn\">The form was incomplete. Open your setup link again.</p>",
        ));
    };
    let Some(holder) = holder(&state, &form.token).await? else {
        return Ok(spent());
    };
    let retry = |problem: &str| form_page(&form.token, holder.as_ref(), problem);
    if *form.password != *form.confirm {
        return Ok(retry("The two passwords differ."));
    }
    if let Err(e) = password::check(&form.password) {
        return Ok(retry(&format!("{e}.")));
    }
    let email = match (&holder, form.email.as_deref()) {
        (None, Some(email)) => match accounts::normalize_email(email) {
            Ok(email) => Some(email),
            Err(e) => return Ok(retry(&format!("{e}."))),
        },
        (None, None) => return Ok(retry("Enter your email.")),
        (Some(_), _) => None,
    };
    // Spend the link first: of two forms sent with it at once, only one goes on.
    let now = clock::millis(clock::now());
    if !state
        .store
        .use_setup_token(&hash_secret(&form.token), now)
        .await?
    {
        return Ok(spent());
    }
    let account = match holder {
        Some(account) => {
            let hash = password::hash(form.password)
                .await
                .map_err(|e| AppError::new(ckrv_wit::types::ErrorKind::Internal, e.to_string()))?;
            state.store.set_password_hash(&account.id, &hash).await?;
            account
        }
        None => {
            let new = NewUser {
                email: email.unwrap_or_default(),
                name: form.name,
                tier: SubscriptionTier::Enterprise,
                admin: true,
                password: Some(form.password),
            };
            match accounts::add_user(&state.store, new).await {
                Ok(account) => account,
                Err(IdentityError::Exists(email)) => {
                    return Ok(render(
                        StatusCode::CONFLICT,
                        "Set up your account",
                        &format!(
                            "<p class=\"warn\">An account for {} exists already. Ask an administrator for a setup link: <code>ckrv-api users reset-password {}</code>.</p>",
                            escape(&email),
                            escape(&email)
                        ),
                    ));
                }
                Err(e) => {
                    return Err(AppError::new(
                        ckrv_wit::types::ErrorKind::Internal,
                        e.to_string(),
                    ));
                }
            }
        }
    };
    tracing::info!(account = %account.id, admin = account.is_admin, "account set up");
    let jar = session::sign_in(&state, jar, &account.id).await?;
    Ok((jar, Redirect::to("/activate")).into_response())
}

fn form(
    token: &str,
    holder: Option<&Account>,
    status: StatusCode,
    problem: Option<&str>,
) -> Response {
    let notice = problem
        .map(|p| format!("<p class=\"warn\">{}</p>", escape(p)))
        .unwrap_or_default();
    let who = match holder {
        Some(account) => format!(
            "<p>Choose a password for <strong>{}</strong>.</p>",
            escape(&account.email)
        ),
        None => r#"<p>This server has no administrator yet: create the first account.</p>
  <label>Email <input name="email" type="email" autocomplete="username" required></label>
  <label>Name <input name="name" autocomplete="name"></label>"#
            .to_string(),
    };
    let body = format!(
        r#"{notice}<form method="post" action="/setup">
  <input type="hidden" name="token" value="{token}">
  {who}
  <label>Password <input name="password" type="password" autocomplete="new-password" minlength="{min}" required></label>
  <label>Again <input name="confirm" type="password" autocomplete="new-password" minlength="{min}" required></label>
  <button type="submit">Save</button>
</form>"#,
        token = escape(token),
        min = password::MIN_CHARS,
    );
    render(status, "Set up your account", &body)
}

fn form_page(token: &str, holder: Option<&Account>, problem: &str) -> Response {
    form(token, holder, StatusCode::BAD_REQUEST, Some(problem))
}

fn spent() -> Response {
    render(
        StatusCode::NOT_FOUND,
        "Link expired",
        "<p>This setup link is unknown, used or expired. Ask an administrator for a new one: <code>ckrv-api users reset-password EMAIL</code>.</p>",
    )
}
