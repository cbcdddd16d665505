//! The web console over HTTP, as a browser without script sees it: pages behind sign-in, what
//! they show of the account's jobs and nothing of another's, escaping of what jobs hold, the
//! assets and headers, and the page's way into the API (session cookie, and the CSRF token for
//! what changes something). The same pages in Chromium are in `browser.rs`.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Browser, PASSWORD, TestApi, access};

/// HTML where a job's spec title, branch, log and file names go.
const HOSTILE: &str = "<script>alert(1)</script>";

const DIFF: &str = "diff --git a/src/<img src=x>.rs b/src/<img src=x>.rs\n--- a/src/<img src=x>.rs\n+++ b/src/<img src=x>.rs\n@@ -1,2 +1,2 @@\n fn main() {\n-    let old = 1;\n+    let new = \"<b>2</b>\";\n";

/// A signed-in person: their browser (cookies) and their API token.
async fn person(api: &TestApi, email: &str) -> (Browser, String) {
    let tokens = api.login(email).await;
    let browser = api.browser();
    browser.sign_in(email, PASSWORD).await;
    (browser, access(&tokens).to_string())
}

/// A job whose spec title, base branch, log and diff hold markup, finished with its diff.
async fn hostile_job(api: &TestApi, token: &str) -> String {
    let (status, job) = api
        .post(
            "/v1/jobs",
            token,
            json!({
                "spec_content": format!("---\nagent: script\nrun: echo hi\n---\n# Fix {HOSTILE}\n"),
                "git_repo_url": "http://127.0.0.1:9/sample.git",
                "git_base_branch": format!("main{HOSTILE}"),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let stats = json!({"files_changed": 1, "insertions": 1, "deletions": 1,
        "files": [{"path": "src/<img src=x>.rs", "insertions": 1, "deletions": 1, "binary": false}]});
    api.work_job(
        &id,
        &[&format!("log says {HOSTILE}")],
        Some((DIFF, stats)),
        Some(json!({"state": "succeeded"})),
    )
    .await;
    id
}

/// The page's CSRF token, as its script reads it.
fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf-token\" content=\"";
    let start = page.find(marker).unwrap() + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn pages_need_a_signed_in_browser() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let browser = api.browser();
    for path in ["/", "/jobs/0123abcd", "/operators"] {
        let (status, page) = browser.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(page.contains("Sign in"), "{path}: {page}");
    }
    // A bearer-less API call from a browser without a session is still refused.
    let (status, _) = browser.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn what_jobs_hold_is_shown_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (browser, token) = person(&api, "dev@example.com").await;
    let id = hostile_job(&api, &token).await;
    // What the gateway counted of its agent's model use.
    api.sql(&format!(
        "UPDATE jobs SET model_requests = 2, cost_micros = 1234567 WHERE id = '{id}'"
    ))
    .await;

    let (status, list) = browser.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains("<td>$1.23</td>"), "the cost column: {list}");
    assert!(list.contains(&format!("href=\"/jobs/{id}\"")), "{list}");
    assert!(
        list.contains("Fix &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{list}"
    );
    let (_, job) = browser.get(&format!("/jobs/{id}")).await;
    assert!(job.contains("main&lt;script&gt;"), "{job}");
    assert!(job.contains(&format!("ckrv pull {id}")), "{job}");
    assert!(job.contains(&format!("href=\"/jobs/{id}/diff\"")), "{job}");
    let (_, diff) = browser.get(&format!("/jobs/{id}/diff")).await;
    assert!(diff.contains("src/&lt;img src=x&gt;.rs"), "{diff}");
    assert!(diff.contains("&lt;b&gt;2&lt;/b&gt;"), "{diff}");
    assert!(
        diff.contains("<span class=\"hl-keyword\">let</span>"),
        "highlighted: {diff}"
    );
    for page in [&list, &job, &diff] {
        // The only script is the console's own, by its digest.
        assert!(
            !page.contains(HOSTILE) && !page.contains("<img src=x>"),
            "{page}"
        );
        assert_eq!(page.matches("<script").count(), 1, "{page}");
    }
    // The log goes through the API as JSON, for the script to put in as text.
    let (_, log) = browser.get(&format!("/v1/jobs/{id}/logs")).await;
    let log: Value = serde_json::from_str(&log).unwrap();
    assert_eq!(log["logs"][0]["message"], format!("log says {HOSTILE}"));
}

#[tokio::test]
async fn filters_narrow_the_list_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (browser, token) = person(&api, "dev@example.com").await;
    let done = hostile_job(&api, &token).await;
    let (_, waiting) = api.create_job(&token).await;
    let waiting = waiting["id"].as_str().unwrap();

    let (_, running) = browser.get("/?state=running").await;
    assert!(
        running.contains(waiting) && !running.contains(&done),
        "{running}"
    );
    // The worker said which agent ran the finished one.
    api.sql(&format!(
        "UPDATE jobs SET agent = 'codex' WHERE id = '{done}'"
    ))
    .await;
    let (_, succeeded) = browser.get("/?state=succeeded&agent=codex").await;
    assert!(
        succeeded.contains(&done) && !succeeded.contains(waiting),
        "{succeeded}"
    );
    let (_, by_agent) = browser
        .get("/?agent=codex&repo=127.0.0.1%3A9%2Fsample")
        .await;
    assert!(
        by_agent.contains(&done) && !by_agent.contains(waiting),
        "{by_agent}"
    );
    let (_, by_repo) = browser.get("/?repo=127.0.0.1%3A9").await;
    assert!(
        by_repo.contains(&done) && !by_repo.contains(waiting),
        "{by_repo}"
    );
    let (_, none) = browser.get("/?repo=nowhere%25").await;
    assert!(none.contains("No jobs here yet"), "{none}");
    let (_, rows) = browser.get("/?rows=true").await;
    assert!(
        rows.starts_with("<tr") && rows.contains(&done) && !rows.contains("<html"),
        "{rows}"
    );
    let (status, bad) = browser.get("/?state=sleeping").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        bad.contains("state &quot;sleeping&quot; is not one of"),
        "{bad}"
    );
    let (status, _) = browser.get("/?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn another_accounts_job_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (_, owner) = person(&api, "owner@example.com").await;
    let id = hostile_job(&api, &owner).await;
    let (other, _) = person(&api, "other@example.com").await;
    for path in [format!("/jobs/{id}"), format!("/jobs/{id}/diff")] {
        let (status, page) = other.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            page.contains("job not found") && !page.contains("Fix"),
            "{page}"
        );
    }
    let (_, list) = other.get("/").await;
    assert!(!list.contains(&id), "{list}");
    let (status, _) = other.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_page_acts_through_the_api_only_with_its_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (browser, token) = person(&api, "dev@example.com").await;
    let (_, job) = api.create_job(&token).await;
    let id = job["id"].as_str().unwrap();
    let (_, page) = browser.get(&format!("/jobs/{id}")).await;
    assert!(page.contains("id=\"cancel\""), "{page}");
    let cancel = format!("{}/v1/jobs/{id}/cancel", api.url);

    // The cookie alone (what another site's form could send) changes nothing.
    let refused = browser.http.post(&cancel).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let said: Value = refused.json().await.unwrap();
    assert!(
        said["error_description"]
            .as_str()
            .unwrap()
            .contains("X-CSRF-Token"),
        "{said}"
    );
    let wrong = browser
        .http
        .post(&cancel)
        .header("X-CSRF-Token", "csrf_guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["state"], "running", "{job}");

    // With the page's token it cancels, as the CLI would.
    let done = browser
        .http
        .post(&cancel)
        .header("X-CSRF-Token", csrf_of(&page))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let (_, job) = api.get(&format!("/v1/jobs/{id}"), &token).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let (_, page) = browser.get(&format!("/jobs/{id}")).await;
    assert!(
        !page.contains("id=\"cancel\"") && page.contains("state-cancelled"),
        "{page}"
    );

    // Signing out ends what the cookie could do.
    let (status, _) = browser
        .submit("/signout", &[("csrf", &csrf_of(&page))])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = browser.get("/v1/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn assets_are_served_by_digest_and_pages_forbid_inline_script() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (browser, _) = person(&api, "dev@example.com").await;
    let response = browser
        .http
        .get(format!("{}/", api.url))
        .send()
        .await
        .unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = response.text().await.unwrap();
    for (marker, kind) in [
        ("<script src=\"", "text/javascript"),
        ("<link rel=\"stylesheet\" href=\"", "text/css"),
    ] {
        let start = page.find(marker).unwrap() + marker.len();
        let href = page[start..].split('"').next().unwrap();
        assert!(href.starts_with("/assets/console."), "{href}");
        let asset = browser
            .http
            .get(format!("{}{href}", api.url))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), StatusCode::OK);
        assert!(
            asset.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(
            asset.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
    }
    let (status, _) = browser.get("/assets/console.0000000000000000.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn operators_see_every_account_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (user, token) = person(&api, "dev@example.com").await;
    let (_, job) = api.create_job(&token).await;
    let id = job["id"].as_str().unwrap();
    let (status, page) = user.get("/operators").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("for administrators"), "{page}");
    assert!(!user.get("/").await.1.contains("href=\"/operators\""));

    let (admin, _) = person(&api, "ops@example.com").await;
    api.sql("UPDATE accounts SET is_admin = 1 WHERE email = 'ops@example.com'")
        .await;
    ckrv_api::identity::admin::add_worker(&api.store().await, "builder-1")
        .await
        .unwrap();
    let (status, page) = admin.get("/operators").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Ready: database ok, artifact store ok"),
        "{page}"
    );
    assert!(
        page.contains(&id[..8])
            && page.contains("dev@example.com: 0 waiting, 1 running")
            && page.contains("0 waiting, 1 running; at most "),
        "{page}"
    );
    assert!(
        page.contains("ckrv-api users disable dev@example.com"),
        "{page}"
    );
    // Its worker's last heartbeat: the claim, a moment ago.
    let row = page[page.find(&id[..8]).unwrap()..]
        .split("</tr>")
        .next()
        .unwrap();
    assert_eq!(row.matches("<time").count(), 2, "heartbeat and age: {row}");
    assert!(!row.contains("lapsed"), "{row}");
    // The workers: this server's own runs the job, with that heartbeat; the external one,
    // has never claimed.
    let worker = |name: &str| {
        let at = page
            .find(&format!("<tr data-worker=\"{name}\">"))
            .unwrap_or_else(|| panic!("no row for worker {name}: {page}"));
        page[at..].split("</tr>").next().unwrap().to_string()
    };
    let local = worker("local");
    assert!(
        local.contains("<td>this server's</td><td>1</td>"),
        "{local}"
    );
    assert_eq!(local.matches("<time").count(), 1, "its heartbeat: {local}");
    let external = worker("builder-1");
    assert!(
        external.contains("<td>external</td><td>0</td><td>no job running</td><td>never</td>"),
        "{external}"
    );
    assert!(
        external.contains("ckrv-api workers remove builder-1"),
        "{external}"
    );
    assert!(
        page.contains("href=\"/operators\" aria-current=\"page\""),
        "{page}"
    );
}

#[tokio::test]
async fn administrators_disable_enable_and_revoke_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (dev_browser, dev) = person(&api, "dev@example.com").await;
    let (admin_browser, admin) = person(&api, "ops@example.com").await;
    let disable = "/v1/admin/accounts/dev%40example.com/disable";
    let enable = "/v1/admin/accounts/dev@example.com/enable";

    // Not yet an administrator: refused, and nothing changes.
    let (status, body) = api.post(disable, &admin, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("only administrators")
    );
    api.sql("UPDATE accounts SET is_admin = 1 WHERE email = 'ops@example.com'")
        .await;

    // A personal access token of dev's, revoked by the administrator.
    let store = api.store().await;
    let (token_id, pat) =
        ckrv_api::identity::admin::issue_token(&store, "dev@example.com", "ci", None)
            .await
            .unwrap();
    assert_eq!(api.get("/v1/users/me", &pat).await.0, StatusCode::OK);
    let (_, page) = admin_browser.get("/operators").await;
    assert!(
        page.contains(&format!(
            "data-path=\"/v1/admin/accounts/dev%40example.com/tokens/{token_id}\""
        )),
        "{page}"
    );
    let revoke = format!(
        "{}/v1/admin/accounts/dev@example.com/tokens/{token_id}",
        api.url
    );
    let response = api
        .http
        .delete(&revoke)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/users/me", &pat).await.0,
        StatusCode::UNAUTHORIZED
    );
    let response = api
        .http
        .delete(format!(
            "{}/v1/admin/accounts/dev@example.com/tokens/nope",
            api.url
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Disabling ends dev's tokens and browser session at once; the page's button does it with
    // the page's CSRF token, and not without it.
    let cookie_only = admin_browser
        .http
        .post(format!("{}{disable}", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_only.status(), StatusCode::FORBIDDEN);
    assert_eq!(api.get("/v1/users/me", &dev).await.0, StatusCode::OK);
    let done = admin_browser
        .http
        .post(format!("{}{disable}", api.url))
        .header("X-CSRF-Token", csrf_of(&page))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        api.get("/v1/users/me", &dev).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(dev_browser.get("/").await.1.contains("Sign in"));
    let (_, page) = admin_browser.get("/operators").await;
    assert!(
        page.contains("ckrv-api users enable dev@example.com"),
        "{page}"
    );

    let (status, _) = api.post(enable, &admin, json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api
        .post(
            "/v1/admin/accounts/ops@example.com/disable",
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = api
        .post(
            "/v1/admin/accounts/nobody@example.com/disable",
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("no account for nobody@example.com")
    );
}

#[tokio::test]
async fn a_group_page_ranks_its_attempts_and_cancels_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let (browser, token) = person(&api, "dev@example.com").await;
    let (status, made) = api
        .post(
            "/v1/groups",
            &token,
            json!({"job": support::job_request(), "attempts": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let group = made["id"].as_str().unwrap().to_string();
    let attempts = support::attempt_ids(&made);
    // Attempt 2 finishes with a change; attempt 1 still runs.
    let stats = json!({"files_changed": 1, "insertions": 1, "deletions": 1,
        "files": [{"path": "src/<img src=x>.rs", "insertions": 1, "deletions": 1, "binary": false}]});
    api.work_job(
        &attempts[1],
        &[],
        Some((DIFF, stats)),
        Some(json!({"state": "succeeded"})),
    )
    .await;

    let (status, page) = browser.get(&format!("/groups/{}", &group[..8])).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Best: attempt 2: "), "{page}");
    assert!(page.contains(&format!("ckrv pull {group}")), "{page}");
    let best = page
        .find(&format!("href=\"/jobs/{}\"", attempts[1]))
        .unwrap();
    let other = page
        .find(&format!("href=\"/jobs/{}\"", attempts[0]))
        .unwrap();
    assert!(best < other, "best first: {page}");
    let (_, job_page) = browser.get(&format!("/jobs/{}", attempts[0])).await;
    assert!(
        job_page.contains(&format!("href=\"/groups/{group}\"")),
        "{job_page}"
    );

    // Its button calls the group's cancel, with the page's token.
    let cancel = format!("/v1/groups/{group}/cancel");
    assert!(page.contains(&format!("data-path=\"{cancel}\"")), "{page}");
    let done = browser
        .http
        .post(format!("{}{cancel}", api.url))
        .header("X-CSRF-Token", csrf_of(&page))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let (_, job) = api.get(&format!("/v1/jobs/{}", attempts[0]), &token).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let (_, page) = browser.get(&format!("/groups/{group}")).await;
    assert!(
        !page.contains("data-path"),
        "nothing left to cancel: {page}"
    );

    let (other, _) = person(&api, "other@example.com").await;
    let (status, page) = other.get(&format!("/groups/{group}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("group not found"), "{page}");
}
