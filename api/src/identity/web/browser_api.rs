//! A signed-in browser calling the API: the console's pages read jobs, follow logs and cancel
//! with the session cookie instead of a bearer token. A request that changes something must
//! also carry the session's CSRF token in `X-CSRF-Token`, which another site's page cannot
//! read or set, so the cookie alone never acts for the person.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::ErrorKind;

use super::WebUser;
use crate::error::AppError;
use crate::identity::IdentityState;
use crate::identity::extract::BrowserSession;

/// The header a page's script sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Marks a cookie-signed-in request to the user API with its `BrowserSession`; a request with a
/// bearer token, to a worker's or the gateway's paths, or without a live session passes as it
/// came.
pub async fn sign_in_browser_requests(
    State(state): State<IdentityState>,
    jar: SignedCookieJar,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let user_api = path.starts_with("/v1/")
        && !path.starts_with("/v1/worker/")
        && !path.starts_with("/v1/gateway/");
    if !user_api || request.headers().contains_key(AUTHORIZATION) {
        return next.run(request).await;
    }
    let user = match WebUser::from_jar(&state, &jar).await {
        Ok(Some(user)) => user,
        Ok(None) => return next.run(request).await,
        Err(e) => return e.into_response(),
    };
    if !request.method().is_safe() {
        let presented = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !user.csrf_ok(presented) {
            tracing::warn!(account = %user.account.id, path, "a browser request without this session's CSRF token");
            return AppError::new(
                ErrorKind::Forbidden,
                "a signed-in browser's request that changes something must carry the page's \
                 CSRF token in X-CSRF-Token; reload the page and try again",
            )
            .into_response();
        }
    }
    request.extensions_mut().insert(BrowserSession {
        account_id: user.account.id.clone(),
        session_hash: user.session_hash().to_string(),
    });
    next.run(request).await
}
