//! Follow-ups as the API sees them (docs/follow-ups.md), on both databases: a follow-up is
//! made whole from the job it continues (repository, base, credential, spec and feedback),
//! links both ways, hands its worker the earlier change to start from; what cannot be
//! continued is refused with the reason. The chain itself runs through the real binaries in
//! tests/e2e/tests/publish.rs.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestApi, access, job_request};

const PATCH: &str = "diff --git a/a.txt b/a.txt\nnew file mode 100644\n--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1 @@\n+a\n";

fn stats() -> Value {
    json!({"files_changed": 1, "insertions": 1, "deletions": 0,
           "files": [{"path": "a.txt", "insertions": 1, "deletions": 0, "binary": false}],
           "base_commit": "0123456789abcdef0123456789abcdef01234567"})
}

fn follow_up(parent: &str, feedback: Option<&str>, spec: &str) -> Value {
    let mut request = job_request();
    request["git_repo_url"] = "".into();
    request["spec_content"] = spec.into();
    request["continues"] = parent.into();
    if let Some(feedback) = feedback {
        request["feedback"] = feedback.into();
    }
    request
}

#[tokio::test]
async fn a_follow_up_starts_from_its_jobs_change_and_what_cannot_be_continued_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    let token = access(&api.login("dev@example.com").await).to_string();
    let (_, parent) = api.create_job(&token).await;
    let parent_id = parent["id"].as_str().unwrap().to_owned();

    // Not yet finished: nothing to start from.
    let (status, body) = api
        .post("/v1/jobs", &token, follow_up(&parent_id, Some("more"), ""))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("has no uploaded change to continue from"),
        "{body}"
    );

    api.work_job(
        &parent_id,
        &[],
        Some((PATCH, stats())),
        Some(json!({"state": "succeeded"})),
    )
    .await;
    let (status, child) = api
        .post(
            "/v1/jobs",
            &token,
            follow_up(&parent_id[..8], Some("and a b"), ""),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    let child_id = child["id"].as_str().unwrap().to_owned();
    assert_eq!(child["parent_id"], parent_id.as_str());
    assert_eq!(child["git_repo_url"], parent["git_repo_url"]);
    assert_eq!(child["git_base_branch"], parent["git_base_branch"]);
    let (_, parent_now) = api.get(&format!("/v1/jobs/{parent_id}"), &token).await;
    assert_eq!(parent_now["follow_ups"], json!([child_id]));

    // Its worker gets the start and the earlier change, and the spec with the feedback.
    let worker = api.dispatcher.token_for(&child_id);
    let (_, work) = api
        .get(&format!("/v1/worker/jobs/{child_id}"), &worker)
        .await;
    assert_eq!(work["start"]["parent_id"], parent_id.as_str());
    assert_eq!(
        work["start"]["base_commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    let spec = work["spec_content"].as_str().unwrap();
    assert!(
        spec.starts_with(job_request()["spec_content"].as_str().unwrap().trim_end())
            && spec.contains("## Feedback on the previous attempt")
            && spec.ends_with("and a b\n"),
        "{spec}"
    );
    let diff = api
        .http
        .get(format!("{}/v1/worker/jobs/{child_id}/start/diff", api.url))
        .bearer_auth(&worker)
        .send()
        .await
        .unwrap();
    assert_eq!(diff.status(), StatusCode::OK);
    assert_eq!(diff.text().await.unwrap(), PATCH);
    // A job that follows up nothing has no start to read.
    let (status, _) = api
        .get(
            &format!("/v1/worker/jobs/{parent_id}/start/diff"),
            &api.dispatcher.token_for(&parent_id),
        )
        .await;
    assert!(status.is_client_error(), "{status}");

    // Refusals, each naming what was wrong.
    for (request, status, says) in [
        (
            follow_up(
                &parent_id,
                Some("x"),
                "---\nagent: script\nrun: true\n---\n# X\n",
            ),
            StatusCode::BAD_REQUEST,
            "feedback or a spec_content of its own, not both",
        ),
        (
            follow_up(&parent_id, None, ""),
            StatusCode::BAD_REQUEST,
            "needs feedback",
        ),
        (
            follow_up(&parent_id, Some("  "), ""),
            StatusCode::BAD_REQUEST,
            "feedback is empty",
        ),
        (
            {
                let mut r = follow_up(&parent_id, Some("x"), "");
                r["git_repo_url"] = "https://git.example.com/other.git".into();
                r
            },
            StatusCode::BAD_REQUEST,
            "a follow-up runs on its job's repository",
        ),
        (
            {
                let mut r = job_request();
                r["feedback"] = "x".into();
                r
            },
            StatusCode::BAD_REQUEST,
            "feedback: it goes with `continues`",
        ),
        (
            follow_up("abcdef12", Some("x"), ""),
            StatusCode::NOT_FOUND,
            "job not found",
        ),
    ] {
        let (got, body) = api.post("/v1/jobs", &token, request).await;
        assert_eq!(got, status, "{body}");
        assert!(
            body["error_description"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
    }
    // Another account's job is not found.
    let other = access(&api.login("other@example.com").await).to_string();
    let (status, _) = api
        .post("/v1/jobs", &other, follow_up(&parent_id, Some("x"), ""))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
