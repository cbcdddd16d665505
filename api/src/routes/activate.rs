//! The page where a person approves a device code: a plain HTML form, no script.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use serde::Deserialize;

use crate::clock;
use crate::error::AppError;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct Prefill {
    user_code: Option<String>,
}

/// A malformed query string just leaves the code field empty.
pub async fn page(prefill: Result<Query<Prefill>, QueryRejection>) -> Html<String> {
    let code = prefill
        .ok()
        .and_then(|Query(p)| p.user_code)
        .map(|c| normalize_user_code(&c))
        .unwrap_or_default();
    Html(layout(
        "Activate ckrv",
        &format!(
            r#"<p>Enter the code shown by <code>ckrv cloud login</code>.</p>
<form method="post" action="activate">
  <label>Code <input name="user_code" value="{}" required autocomplete="off"></label>
  <label>Email <input name="email" type="email" required></label>
  <button type="submit">Approve</button>
</form>"#,
            escape(&code)
        ),
    ))
}

#[derive(Deserialize)]
pub struct Approval {
    user_code: String,
    email: String,
}

pub async fn approve(
    State(state): State<AppState>,
    approval: Result<Form<Approval>, FormRejection>,
) -> Result<(StatusCode, Html<String>), AppError> {
    let Ok(Form(approval)) = approval else {
        return Ok(failure(
            "The form needs both the code and your email. Go back and fill in both.",
        ));
    };
    let email = approval.email.trim().to_ascii_lowercase();
    if !plausible_email(&email) {
        return Ok(failure(&format!(
            "“{}” is not an email address. Go back and enter yours.",
            escape(&email)
        )));
    }
    let code = normalize_user_code(&approval.user_code);
    let unknown = || {
        failure(&format!(
            "The code {} is unknown, expired or already used. Run <code>ckrv cloud login</code> again for a new one.",
            escape(&code)
        ))
    };
    // Check the code before creating an account, so a mistyped code leaves nothing behind.
    if !state
        .store
        .user_code_pending(&code, clock::millis(clock::now()))
        .await?
    {
        return Ok(unknown());
    }
    let account = state.store.account_for_email(&email).await?;
    let approved = state
        .store
        .approve_user_code(&code, &account.id, clock::millis(clock::now()))
        .await?;
    if !approved {
        return Ok(unknown());
    }
    tracing::info!(account = %account.id, "device code approved");
    Ok((
        StatusCode::OK,
        Html(layout(
            "Device approved",
            &format!(
                "<p>✔ Signed in as {}. You can return to your terminal.</p>",
                escape(&email)
            ),
        )),
    ))
}

fn failure(message: &str) -> (StatusCode, Html<String>) {
    (
        StatusCode::BAD_REQUEST,
        Html(layout("Activation failed", &format!("<p>{message}</p>"))),
    )
}

/// Accepts `abcd-1234`, `ABCD1234` and stray spaces for `ABCD-1234`.
fn normalize_user_code(code: &str) -> String {
    let compact: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if compact.len() == 8 {
        format!("{}-{}", &compact[..4], &compact[4..])
    } else {
        compact
    }
}

fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_normalized() {
        assert_eq!(normalize_user_code(" bcdf-2345 "), "BCDF-2345");
        assert_eq!(normalize_user_code("BCDF2345"), "BCDF-2345");
        assert_eq!(normalize_user_code("x"), "X");
    }

    #[test]
    fn emails_are_checked_for_shape() {
        assert!(plausible_email("dev@example.com"));
        for bad in [
            "",
            "dev",
            "dev@",
            "@example.com",
            "dev@example",
            "a b@example.com",
            "<a>@x.io",
        ] {
            assert!(!plausible_email(bad), "{bad}");
        }
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(escape("<b>\"x\"&'"), "&lt;b&gt;&quot;x&quot;&amp;&#39;");
    }
}
