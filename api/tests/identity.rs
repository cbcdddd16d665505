//! Identity over real HTTP: accounts an administrator made, the web sign-in, approving and
//! denying device requests, refresh families, personal access tokens, disabled accounts.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use ckrv_api::identity::admin;
use ckrv_test_support::form_value;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{CLIENT_ID, PASSWORD, TestApi, access};

#[tokio::test]
async fn a_device_signs_in_only_when_its_signed_in_owner_approves() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    api.add_user("dev@example.com", PASSWORD).await;

    let device = api.start_device().await;
    let user_code = device["user_code"].as_str().unwrap();
    let device_code = device["device_code"].as_str().unwrap();
    assert_eq!(device["verification_uri"], format!("{}/activate", api.url));

    // Only the client the code was issued to may redeem it.
    let (status, error) = api
        .call(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(json!({
                "client_id": "another-client",
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": device_code,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "expired_token");
    // Not approved yet; polling again at once is too fast.
    let (_, error) = api.poll(device_code).await;
    assert_eq!(error["error"], "authorization_pending");
    let (_, error) = api.poll(device_code).await;
    assert_eq!(error["error"], "slow_down");

    // The link the CLI prints leads to sign-in first, and back to the request after.
    let browser = api.browser();
    let (status, page) = browser
        .get(&format!("/activate?user_code={user_code}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Sign in"), "{page}");
    let next = form_value(&page, "next");
    assert_eq!(next, format!("/activate?user_code={user_code}"));
    let nonce = form_value(&page, "nonce");
    let (status, page) = browser
        .submit(
            "/signin",
            &[
                ("email", "Dev@Example.com"),
                ("password", PASSWORD),
                ("nonce", &nonce),
                ("next", &next),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // The request as the person must see it: who asks, from where, with which code.
    assert!(page.contains("Approve this device?"), "{page}");
    assert!(
        page.contains(user_code) && page.contains(CLIENT_ID),
        "{page}"
    );
    assert!(page.contains("127.0.0.1"), "{page}");
    assert!(page.contains("dev@example.com"), "{page}");

    // Lower case and no dash are accepted.
    let (status, page) = browser
        .decide(&user_code.replace('-', "").to_lowercase(), "approve")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Signed in as dev@example.com"), "{page}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, tokens) = api.poll(device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");

    // The code is spent; the session works.
    let (_, error) = api.poll(device_code).await;
    assert_eq!(error["error"], "expired_token");
    let (status, user) = api.get("/v1/users/me", access(&tokens)).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["email"], "dev@example.com");
    assert_eq!(user["name"], "dev");
    assert_eq!(user["subscription_tier"], "free");
    assert_eq!(user["job_quota_remaining"], 100);
    assert!(
        user["billing_cycle_end"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z")
    );
    // A spent code shows as unknown, and nothing is approved twice.
    let (status, page) = browser
        .get(&format!("/activate?user_code={user_code}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("unknown, expired or already used"), "{page}");
}

#[tokio::test]
async fn a_denied_request_is_refused_to_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    api.add_user("dev@example.com", PASSWORD).await;
    let device = api.start_device().await;
    let browser = api.browser();
    browser.sign_in("dev@example.com", PASSWORD).await;
    let (status, page) = browser
        .decide(device["user_code"].as_str().unwrap(), "deny")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Request denied"), "{page}");
    let (status, error) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "access_denied");
}

#[tokio::test]
async fn knowing_an_email_is_not_enough_to_sign_in_or_approve() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    api.add_user("dev@example.com", PASSWORD).await;
    let device = api.start_device().await;
    let user_code = device["user_code"].as_str().unwrap();

    // The old way in, typing an email with the code, approves nothing.
    let browser = api.browser();
    let (status, _) = browser
        .submit(
            "/activate",
            &[("user_code", user_code), ("email", "dev@example.com")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = browser.get("/activate").await;
    assert!(page.contains("Sign in"), "{page}");

    // Wrong passwords and unknown accounts get the same answer.
    for (email, password) in [
        ("dev@example.com", "not the password"),
        ("nobody@example.com", PASSWORD),
        ("not an email", PASSWORD),
    ] {
        let (status, page) = browser.try_sign_in(email, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{email}");
        assert!(
            page.contains("The email or the password is wrong."),
            "{page}"
        );
    }
    // A sign-in form not issued to this browser is refused (login CSRF).
    let (status, page) = browser
        .submit(
            "/signin",
            &[
                ("email", "dev@example.com"),
                ("password", PASSWORD),
                ("nonce", "forged"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");

    // Signed in, a decision without the session's CSRF token approves nothing.
    browser.sign_in("dev@example.com", PASSWORD).await;
    let (status, page) = browser
        .submit(
            "/activate",
            &[
                ("csrf", "forged"),
                ("user_code", user_code),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let (_, error) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(error["error"], "authorization_pending");

    // Another browser's session cannot decide with this one's token either.
    let other = api.browser();
    let (_, review) = browser
        .get(&format!("/activate?user_code={user_code}"))
        .await;
    let csrf = form_value(&review, "csrf");
    let (status, page) = other
        .submit(
            "/activate",
            &[
                ("csrf", &csrf),
                ("user_code", user_code),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Sign in"), "{page}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, error) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(error["error"], "authorization_pending");
}

#[tokio::test]
async fn pages_cannot_be_framed_or_scripted_and_cookies_are_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let response = reqwest::get(format!("{}/signin", api.url)).await.unwrap();
    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let cookie = headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // Signed: a cookie the server did not sign is ignored.
    let forged = reqwest::Client::new()
        .get(format!("{}/activate", api.url))
        .header("cookie", "ckrv_session=ckrv_ws_forged")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(forged.contains("Sign in"), "{forged}");
}

#[tokio::test]
async fn requests_without_a_valid_session_are_refused_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let response = api
        .http
        .get(format!("{}/v1/users/me", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // RFC 6750 §3: the 401 names the scheme to use.
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"], "not_authenticated");
    let (status, error) = api.get("/v1/jobs", "ckrv_at_made_up").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        !error["error_description"]
            .as_str()
            .unwrap()
            .contains("made_up")
    );

    let (status, error) = api
        .call(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(json!({"client_id": CLIENT_ID, "grant_type": "password", "device_code": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "unsupported_grant_type");
    let (status, error) = api
        .call(
            Method::POST,
            "/v1/auth/token",
            None,
            Some(json!({"device_code": "x", "grant_type": "urn:ietf:params:oauth:grant-type:device_code"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_request");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("client_id"),
        "{error}"
    );
    let (status, error) = api.poll("ckrv_dc_unknown").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "expired_token");
    let (status, error) = api
        .call(Method::POST, "/v1/auth/device", None, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_request");

    let (status, error) = api.call(Method::GET, "/v1/nothing/here", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"], "not_found");
}

fn refresh_body(tokens: &serde_json::Value) -> serde_json::Value {
    json!({"refresh_token": tokens["refresh_token"], "grant_type": "refresh_token"})
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_refresh_token_ends_the_whole_session() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let first = api.login("dev@example.com").await;
    let refresh = |body| api.call(Method::POST, "/v1/auth/refresh", None, Some(body));

    let (status, error) =
        refresh(json!({"refresh_token": first["refresh_token"], "grant_type": "password"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "unsupported_grant_type");
    let (status, second) = refresh(refresh_body(&first)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    // The old access token is revoked with its refresh token.
    let (status, _) = api.get("/v1/users/me", access(&first)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Presented again at once, it is the client retrying a lost answer: served, nothing revoked.
    let (status, retried) = refresh(refresh_body(&first)).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    let (status, _) = api.get("/v1/users/me", access(&second)).await;
    assert_eq!(status, StatusCode::OK);

    // Later, a replay means the token was stolen: the whole family ends, thief and owner alike.
    api.sql("UPDATE tokens SET used_ms = used_ms - 3600000 WHERE used_ms IS NOT NULL")
        .await;
    let (status, error) = refresh(refresh_body(&first)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
    for tokens in [&second, &retried] {
        let (status, _) = api.get("/v1/users/me", access(tokens)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = refresh(refresh_body(tokens)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    // Logout ends a session and its refresh token.
    let fresh = api.login("other@example.com").await;
    let (status, _) = api
        .call(Method::POST, "/v1/auth/logout", Some(access(&fresh)), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/v1/users/me", access(&fresh)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = refresh(refresh_body(&fresh)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_disabled_account_loses_its_tokens_and_sessions_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let tokens = api.login("dev@example.com").await;
    let browser = api.browser();
    browser.sign_in("dev@example.com", PASSWORD).await;
    let store = api.store().await;
    let (_, pat) = admin::issue_token(&store, "dev@example.com", "ci", None)
        .await
        .unwrap();
    for token in [access(&tokens), pat.as_str()] {
        let (status, _) = api.get("/v1/jobs", token).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A device request approved, its tokens not yet fetched.
    let approved = api.start_device().await;
    let (status, page) = browser
        .decide(approved["user_code"].as_str().unwrap(), "approve")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");

    admin::set_disabled(&store, "dev@example.com", true)
        .await
        .unwrap();
    for token in [access(&tokens), pat.as_str()] {
        let (status, _) = api.get("/v1/jobs", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(refresh_body(&tokens)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, page) = browser.get("/activate").await;
    assert!(page.contains("Sign in"), "{page}");
    let (status, _) = browser.try_sign_in("dev@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Enabled again: nothing issued before the account was disabled comes back.
    admin::set_disabled(&store, "dev@example.com", false)
        .await
        .unwrap();
    for token in [access(&tokens), pat.as_str()] {
        let (status, error) = api.get("/v1/jobs", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    }
    let (status, error) = api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(refresh_body(&tokens)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, error) = api.poll(approved["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"], "access_denied");
    let listed = admin::tokens(&store, "dev@example.com").await.unwrap();
    assert!(listed.iter().all(|t| t.revoked), "{listed:?}");

    // The person signs in anew and gets new tokens that work.
    browser.sign_in("dev@example.com", PASSWORD).await;
    let device = api.start_device().await;
    let (status, page) = browser
        .decide(device["user_code"].as_str().unwrap(), "approve")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, fresh) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let (_, new_pat) = admin::issue_token(&store, "dev@example.com", "ci-2", None)
        .await
        .unwrap();
    for token in [access(&fresh), new_pat.as_str()] {
        let (status, _) = api.get("/v1/jobs", token).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn personal_access_tokens_work_until_revoked_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    api.add_user("ci@example.com", PASSWORD).await;
    let store = api.store().await;
    let (id, token) = admin::issue_token(&store, "ci@example.com", "github-actions", None)
        .await
        .unwrap();
    assert!(id.starts_with("pat_") && token.starts_with("ckrv_pat_"));
    let (status, user) = api.get("/v1/users/me", &token).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["email"], "ci@example.com");
    let (status, job) = api.create_job(&token).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");

    let listed = admin::tokens(&store, "ci@example.com").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].name.as_str()),
        (id.as_str(), "github-actions")
    );
    admin::revoke_token(&store, "ci@example.com", &id)
        .await
        .unwrap();
    let (status, _) = api.get("/v1/users/me", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let err = admin::revoke_token(&store, "ci@example.com", &id)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ckrv-api users tokens ci@example.com"),
        "{err}"
    );

    let (_, short) = admin::issue_token(
        &store,
        "ci@example.com",
        "brief",
        Some(Duration::from_millis(1)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _) = api.get("/v1/users/me", &short).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn setup_links_create_the_first_admin_and_let_invited_people_choose_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let database = ckrv_test_support::TestDatabase::new(dir.path()).await;
    let config = support::test_config(dir.path(), &database);
    let server = ckrv_api::Server::bind(config.clone()).await.unwrap();
    let url = server.url();
    let link = server.first_admin_link().await.unwrap().unwrap();
    assert!(
        link.starts_with(&format!("{url}/setup?token=ckrv_setup_")),
        "{link}"
    );
    let task = tokio::spawn(server.run());
    let path = link.trim_start_matches(&url).to_string();
    let browser = support::Browser::new(&url);
    let (status, page) = browser.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let token = form_value(&page, "token");
    let setup = |email: &'static str, password: &'static str, confirm: &'static str| {
        let token = token.clone();
        let browser = &browser;
        async move {
            browser
                .submit(
                    "/setup",
                    &[
                        ("token", &token),
                        ("email", email),
                        ("name", "Lead"),
                        ("password", password),
                        ("confirm", confirm),
                    ],
                )
                .await
        }
    };
    let (status, page) = setup("lead@example.com", PASSWORD, "something else").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("The two passwords differ."), "{page}");
    let (status, page) = setup("lead@example.com", "short", "short").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("at least 10 characters"), "{page}");
    let (status, page) = setup("lead@example.com", PASSWORD, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Signed in as lead@example.com"), "{page}");
    // The link is spent; the first account is an administrator.
    let (status, _) = setup("second@example.com", PASSWORD, PASSWORD).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let store = ckrv_api::store::Store::open(&config.database)
        .await
        .unwrap();
    let lead = store
        .account_by_email("lead@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(lead.is_admin && lead.has_password);

    // An invited person gets a link of their own; it sets their password, once.
    let (account, link) = admin::add_user(
        &store,
        ckrv_api::identity::accounts::NewUser {
            email: "new@example.com".into(),
            name: None,
            tier: ckrv_wit::types::SubscriptionTier::Pro,
            admin: false,
            password: None,
        },
        None,
    )
    .await
    .unwrap();
    assert!(!account.has_password);
    let link = link.unwrap();
    let invited = support::Browser::new(&url);
    let (_, page) = invited.get(link.trim_start_matches(&url)).await;
    assert!(page.contains("new@example.com"), "{page}");
    let token = form_value(&page, "token");
    let (status, page) = invited
        .submit(
            "/setup",
            &[
                ("token", &token),
                ("password", PASSWORD),
                ("confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let fresh = support::Browser::new(&url);
    fresh.sign_in("new@example.com", PASSWORD).await;
    task.abort();
}

#[tokio::test]
async fn sessions_and_jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, job_id, database) = {
        let api = TestApi::start(dir.path()).await;
        let tokens = api.login("dev@example.com").await;
        let (status, job) = api.create_job(access(&tokens)).await;
        assert_eq!(status, StatusCode::CREATED);
        (
            tokens,
            job["id"].as_str().unwrap().to_string(),
            api.database(),
        )
    };
    let api = TestApi::restart(dir.path(), database).await;
    let (status, job) = api
        .get(&format!("/v1/jobs/{job_id}"), access(&tokens))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["id"], job_id.as_str());
}

#[tokio::test]
async fn guessing_codes_and_passwords_is_slowed_down() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    api.add_user("dev@example.com", PASSWORD).await;

    // Device authorizations from one address: a burst, then 429 with Retry-After.
    for _ in 0..9 {
        api.start_device().await;
    }
    let response = api
        .http
        .post(format!("{}/v1/auth/device", api.url))
        .json(&json!({"client_id": CLIENT_ID}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = api
        .http
        .post(format!("{}/v1/auth/device", api.url))
        .json(&json!({"client_id": CLIENT_ID}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"], "too_many_requests");

    // Password guesses for one account: after the burst even the right password is refused,
    // so the limit tells a guesser nothing.
    let browser = api.browser();
    for _ in 0..10 {
        let (status, _) = browser
            .try_sign_in("dev@example.com", "wrong password")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, page) = browser.try_sign_in("dev@example.com", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(page.contains("Too many attempts"), "{page}");

    // Guessing user codes from one address, signed in as another account.
    api.add_user("guesser@example.com", PASSWORD).await;
    let guesser = api.browser();
    guesser.sign_in("guesser@example.com", PASSWORD).await;
    let mut limited = false;
    for n in 0..25 {
        let (status, _) = guesser
            .get(&format!("/activate?user_code=BCDF-{n:04}"))
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert!(
        limited,
        "20 wrong codes a minute from one address are enough"
    );
}
