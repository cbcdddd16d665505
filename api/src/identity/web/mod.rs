//! The pages people use in a browser: sign in, approve or deny a device's sign-in request, and
//! set a password from a one-time link. Plain HTML forms that work without script; every page
//! forbids framing and scripts, every form carries a CSRF token, and the session cookie is
//! signed, HttpOnly and SameSite.

mod activate;
pub mod browser_api;
mod session;
mod setup;
mod signin;
mod sso;

use axum::Router;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

pub use session::WebUser;

use crate::error::RetryAfter;
use crate::identity::IdentityState;

pub fn router() -> Router<IdentityState> {
    Router::new()
        .route("/signin", get(signin::page).post(signin::submit))
        .route("/signout", post(signin::sign_out))
        .route("/activate", get(activate::page).post(activate::decide))
        .route("/setup", get(setup::page).post(setup::submit))
        .route("/signin/sso", get(sso::start))
        .route(crate::identity::sso::CALLBACK_PATH, get(sso::callback))
}

/// A whole page: the layout, and headers that keep it from being framed, scripted, cached or
/// leaking its URL (which may hold a code) to other sites.
pub fn render(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · ckrv</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>",
        title = escape(title)
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}\
main{max-width:28rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 3px #0002}label{display:block;margin:.8rem 0}input{display:block;width:100%;\
box-sizing:border-box;padding:.5rem;font-size:1rem}button{padding:.5rem 1rem;font-size:1rem;\
margin:.8rem .5rem 0 0}.code{font-family:monospace;font-size:1.4rem;letter-spacing:.1em}\
.warn{color:#8a4b00}form.inline{display:inline}";

/// The page a rate-limited request gets, with how long to wait.
pub fn too_many(wait: RetryAfter) -> Response {
    let mut response = render(
        StatusCode::TOO_MANY_REQUESTS,
        "Slow down",
        &format!(
            "<p class=\"warn\">Too many attempts. Try again in {} seconds.</p>",
            wait.seconds()
        ),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(wait.seconds()));
    response
}

/// Escapes text for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Percent-encodes a value for a query string.
fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Accepts `abcd-1234`, `ABCD1234` and stray spaces for `ABCD-1234`.
pub fn normalize_user_code(code: &str) -> String {
    let compact: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .take(16)
        .collect();
    if compact.len() == 8 {
        format!("{}-{}", &compact[..4], &compact[4..])
    } else {
        compact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_normalized() {
        assert_eq!(normalize_user_code(" bcdf-2345 "), "BCDF-2345");
        assert_eq!(normalize_user_code("BCDF2345"), "BCDF-2345");
        assert_eq!(normalize_user_code("x"), "X");
        assert_eq!(normalize_user_code(&"a".repeat(100)).len(), 16);
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(escape("<b>\"x\"&'"), "&lt;b&gt;&quot;x&quot;&amp;&#39;");
    }

    #[test]
    fn pages_forbid_framing_scripts_and_caching() {
        let response = render(StatusCode::OK, "T<", "<p>x</p>");
        let csp = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"));
        assert_eq!(response.headers()[X_FRAME_OPTIONS], "DENY");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    }
}
