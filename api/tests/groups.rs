//! Attempt groups as the API sees them (docs/attempts.md), on both databases: a group makes its
//! attempts as ordinary jobs within the quota, ranks them by evidence with the reason, cancels
//! them together, and with `stop_at_first_verified` cancels the rest once one is verified. The
//! attempts themselves run through the real binaries in tests/e2e/tests/groups.rs.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestApi, access, attempt_ids, job_request};

fn group(attempts: u32, agents: Option<&[&str]>, stop: bool) -> Value {
    json!({"job": job_request(), "attempts": attempts, "agents": agents,
           "stop_at_first_verified": stop})
}

/// The attempt's worker reports what its check found and ends the job as succeeded.
async fn finish(api: &TestApi, job: &str, verified: bool, passed: u32) {
    let worker = api.dispatcher.token_for(job);
    let verdict = if verified { "passed" } else { "failed" };
    let (status, body) = api
        .post(
            &format!("/v1/worker/jobs/{job}/phase"),
            &worker,
            json!({"phase": "verifying", "verification": {"command": "t", "verdict": verdict,
                   "exit_code": i32::from(!verified), "duration_ms": 5, "last_lines": [],
                   "tests": {"passed": passed, "failed": u32::from(!verified), "skipped": 0}}}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = api
        .post(
            &format!("/v1/worker/jobs/{job}/complete"),
            &worker,
            json!({"state": "succeeded"}),
        )
        .await;
    assert!(
        status == StatusCode::NO_CONTENT || status == StatusCode::CONFLICT,
        "{body}"
    );
}

#[tokio::test]
async fn a_group_makes_its_attempts_as_jobs_and_ranks_them_by_evidence() {
    let (api, token) = TestApi::signed_in("dev@example.com").await;
    let (status, made) = api.post("/v1/groups", &token, group(3, None, false)).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let attempts = attempt_ids(&made);
    assert_eq!(attempts.len(), 3);
    assert!(made["winner"].is_null(), "none has a change yet: {made}");
    // Each attempt is an ordinary job a seed client sees as one.
    let (_, listed) = api.get("/v1/jobs", &token).await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 3);
    let (_, first) = api.get(&format!("/v1/jobs/{}", attempts[0]), &token).await;
    assert_eq!(first["group_id"], id.as_str());
    assert_eq!(first["attempt"], 1);

    finish(&api, &attempts[0], false, 4).await;
    finish(&api, &attempts[1], true, 3).await;
    finish(&api, &attempts[2], true, 5).await;
    let (status, ranked) = api.get(&format!("/v1/groups/{}", &id[..8]), &token).await;
    assert_eq!(status, StatusCode::OK, "{ranked}");
    let order: Vec<u64> = ranked["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [3, 2, 1], "{ranked}");
    assert_eq!(ranked["winner"], attempts[2].as_str());
    assert_eq!(
        ranked["reason"],
        "more tests passed: 5 against attempt 2's 3"
    );

    // Another account sees none of it.
    let other = access(&api.login("other@example.com").await).to_string();
    let (status, _) = api.get(&format!("/v1/groups/{id}"), &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .post(&format!("/v1/groups/{id}/cancel"), &other, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Every attempt has ended: nothing to cancel.
    let (status, body) = api
        .post(&format!("/v1/groups/{id}/cancel"), &token, json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn cancelling_a_group_or_verifying_one_attempt_first_stops_the_others() {
    let (api, token) = TestApi::signed_in("dev@example.com").await;
    let (_, made) = api.post("/v1/groups", &token, group(2, None, false)).await;
    let id = made["id"].as_str().unwrap();
    let (status, cancelled) = api
        .post(&format!("/v1/groups/{id}/cancel"), &token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    for job in cancelled["attempts"].as_array().unwrap() {
        assert_eq!(job["state"], "cancelled", "{job}");
    }

    let (_, made) = api.post("/v1/groups", &token, group(3, None, true)).await;
    assert_eq!(made["stop_at_first_verified"], true);
    let attempts = attempt_ids(&made);
    finish(&api, &attempts[1], true, 1).await;
    let (_, group) = api
        .get(
            &format!("/v1/groups/{}", made["id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(group["winner"], attempts[1].as_str(), "{group}");
    for other in [&attempts[0], &attempts[2]] {
        let (_, job) = api.get(&format!("/v1/jobs/{other}"), &token).await;
        assert_eq!(job["state"], "cancelled", "{job}");
        assert!(
            job["error_message"]
                .as_str()
                .unwrap()
                .contains("was verified first (--stop-at-first-verified)"),
            "{job}"
        );
    }
}

#[tokio::test]
async fn bad_groups_are_refused_naming_why_and_none_of_their_jobs_is_made() {
    let (api, token) = TestApi::signed_in("dev@example.com").await;
    let mut follow_up = group(2, None, false);
    follow_up["job"]["continues"] = "0000".into();
    for (body, says) in [
        (group(0, None, false), "a group runs 1 to 8"),
        (
            group(3, Some(&["script", "codex", "aider"]), false),
            "is 9 attempts",
        ),
        (group(1, Some(&[]), false), "agents is empty"),
        (
            group(1, Some(&["script", "script"]), false),
            "names script twice",
        ),
        (
            group(1, Some(&["script", "nope"]), false),
            "agent nope: spec_content: agent `nope` is unknown",
        ),
        // An agent this server cannot run is refused with its reason.
        (
            group(1, Some(&["script", "aider"]), false),
            "agent aider: spec_content: ",
        ),
        (follow_up, "start afresh"),
    ] {
        let (status, error) = api.post("/v1/groups", &token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{says}: {error}");
        let said = error["error_description"].as_str().unwrap();
        assert!(said.contains(says), "{says}: {said}");
    }
    let (_, listed) = api.get("/v1/jobs", &token).await;
    assert!(listed["jobs"].as_array().unwrap().is_empty(), "{listed}");

    // The whole group must fit in the month's quota.
    for n in 0..95 {
        let (status, job) = api.create_job(&token).await;
        assert_eq!(status, StatusCode::CREATED, "job {n}: {job}");
    }
    let (status, error) = api.post("/v1/groups", &token, group(8, None, false)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the group needs 8 jobs of this month's free quota and 5 are left"),
        "{error}"
    );
    let (status, _) = api.post("/v1/groups", &token, group(5, None, false)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api.get("/v1/groups/ffffffff", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
