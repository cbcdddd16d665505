//! The routes of identity: the device flow, sessions, the signed-in user, and what
//! administrators do to accounts.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod users;

use axum::routing::on;
use ckrv_wit::protocol::paths;

use crate::identity::IdentityState;
use crate::route::{Auth, Content, Method, Route, answering, op, with_body};

/// The device flow, sessions and the signed-in user.
pub const ROUTES: &[Route<IdentityState>] = &[
    Route::new(
        answering(
            with_body(
                op(
                    Method::Post,
                    paths::AUTH_DEVICE,
                    "startDeviceAuthorization",
                    "Start the device flow",
                    Auth::None,
                ),
                Content::Json("DeviceCodeRequest"),
            ),
            &[(200, Content::Json("DeviceCodeResponse"))],
        ),
        |method| on(method, auth::device),
    ),
    Route::new(
        answering(
            with_body(
                op(
                    Method::Post,
                    paths::AUTH_TOKEN,
                    "pollDeviceToken",
                    "Poll for the device flow's tokens",
                    Auth::None,
                ),
                Content::Json("DeviceTokenRequest"),
            ),
            &[(200, Content::Json("TokenResponse"))],
        ),
        |method| on(method, auth::token),
    ),
    Route::new(
        answering(
            with_body(
                op(
                    Method::Post,
                    paths::AUTH_REFRESH,
                    "refreshToken",
                    "Exchange a refresh token",
                    Auth::None,
                ),
                Content::Json("RefreshRequest"),
            ),
            &[(200, Content::Json("TokenResponse"))],
        ),
        |method| on(method, auth::refresh),
    ),
    Route::new(
        op(
            Method::Post,
            paths::AUTH_LOGOUT,
            "logout",
            "Revoke this session's tokens",
            Auth::User,
        ),
        |method| on(method, auth::logout),
    ),
    Route::new(
        answering(
            op(
                Method::Get,
                paths::USER,
                "getCurrentUser",
                "The signed-in account and its quota",
                Auth::User,
            ),
            &[(200, Content::Json("User"))],
        ),
        |method| on(method, users::me),
    ),
    Route::new(
        op(
            Method::Post,
            paths::ADMIN_ACCOUNT_DISABLE,
            "disableAccount",
            "Administrators: disable an account, revoking its tokens and sessions",
            Auth::User,
        ),
        |method| on(method, admin::disable),
    ),
    Route::new(
        op(
            Method::Post,
            paths::ADMIN_ACCOUNT_ENABLE,
            "enableAccount",
            "Administrators: enable a disabled account again",
            Auth::User,
        ),
        |method| on(method, admin::enable),
    ),
    Route::new(
        op(
            Method::Delete,
            paths::ADMIN_ACCOUNT_TOKEN,
            "revokeAccountToken",
            "Administrators: revoke one of an account's personal access tokens",
            Auth::User,
        ),
        |method| on(method, admin::revoke_token),
    ),
];
