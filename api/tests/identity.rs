//! The device flow, sessions and the activation page over real HTTP.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{TestApi, access};

#[tokio::test]
async fn the_device_flow_issues_a_session_once_the_code_is_approved() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;

    let (status, device) = api.call(Method::POST, "/v1/auth/device", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let user_code = device["user_code"].as_str().unwrap();
    let device_code = device["device_code"].as_str().unwrap();
    assert_eq!(device["verification_uri"], format!("{}/activate", api.url));
    assert!(
        device["verification_uri_complete"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/activate?user_code={user_code}"))
    );

    // Not approved yet; polling again at once is too fast.
    let (status, error) = api.poll(device_code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "authorization_pending");
    let (_, error) = api.poll(device_code).await;
    assert_eq!(error["error"], "slow_down");

    // The page shows the code prefilled; a wrong code is refused without approving anything.
    let page = api
        .http
        .get(format!("{}/activate?user_code={user_code}", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains(user_code));
    let (status, page) = api.activate("ZZZZ-0000", "dev@example.com").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("unknown, expired or already used"), "{page}");
    let response = api
        .http
        .post(format!("{}/activate", api.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user_code=ABCD-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("needs both the code and your email")
    );
    let (status, page) = api.activate(user_code, "not an email").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("not an email address"), "{page}");

    // Lower case and no dash are accepted.
    let (status, page) = api
        .activate(
            &user_code.replace('-', "").to_lowercase(),
            "Dev@Example.com",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, tokens) = api.poll(device_code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_u64().unwrap() > 0);

    // The code is spent; the session works.
    let (status, error) = api.poll(device_code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
    let (status, user) = api.get("/v1/users/me", access(&tokens)).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["email"], "dev@example.com");
    assert_eq!(user["tier"], "free");
    assert_eq!(user["quota"]["limit"], 100);
    assert_eq!(user["quota"]["remaining"], 100);
    assert!(
        user["quota"]["cycle_end"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z")
    );
}

#[tokio::test]
async fn requests_without_a_valid_session_are_refused_with_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let (status, error) = api.call(Method::GET, "/v1/users/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"], "not_authenticated");
    let (status, error) = api.get("/v1/jobs", "ckrv_at_made_up").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["error"], "not_authenticated");
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
            Some(json!({"grant_type": "password", "device_code": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_request");
    let (status, error) = api.poll("ckrv_dc_unknown").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");

    let (status, error) = api.call(Method::GET, "/v1/nothing/here", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"], "not_found");
}

#[tokio::test]
async fn refresh_rotates_the_session_and_logout_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let first = api.login("dev@example.com").await;

    let refresh = json!({"refresh_token": first["refresh_token"]});
    let (status, second) = api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(refresh.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["access_token"], first["access_token"]);
    // The old pair is revoked, and a refresh token works once.
    let (status, _) = api.get("/v1/users/me", access(&first)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, error) = api
        .call(Method::POST, "/v1/auth/refresh", None, Some(refresh))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "invalid_grant");
    let (status, _) = api.get("/v1/users/me", access(&second)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = api
        .call(Method::POST, "/v1/auth/logout", Some(access(&second)), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/v1/users/me", access(&second)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": second["refresh_token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sessions_and_jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, job_id) = {
        let api = TestApi::start(dir.path()).await;
        let tokens = api.login("dev@example.com").await;
        let (status, job) = api.create_job(access(&tokens)).await;
        assert_eq!(status, StatusCode::CREATED);
        (tokens, job["id"].as_str().unwrap().to_string())
    };
    let api = TestApi::start(dir.path()).await;
    let (status, job) = api
        .get(&format!("/v1/jobs/{job_id}"), access(&tokens))
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["id"], job_id.as_str());
}
