//! The `/activate` flow and the console in a real browser: Debian's Chromium, headless, driven through WebDriver
//! (chromedriver, with `fantoccini`). A person signs in, sees the device's request, approves or
//! denies it; a wrong password and an expired code are refused. In the console a person follows
//! a running job's log, searches it, cancels the job, reads a diff, and is refused another
//! account's job; an administrator sees the operators' page. axe-core (npm, `api/tests/axe`)
//! checks every console page inside the browser. A screenshot of every page is
//! kept under `target/browser-screenshots/<test>/` as an artifact. Without chromium and
//! chromedriver the tests print why and pass; CI installs them and sets `CKRV_REQUIRE_BROWSER=1`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ckrv_test_support::{Chromedriver, chromedriver};
use fantoccini::{Client, Locator};
use support::{PASSWORD, TestApi};

async fn driver() -> Option<Chromedriver> {
    chromedriver().await
}

async fn browser(driver: &Chromedriver) -> Client {
    driver.browser().await
}

/// Saves what the browser shows, numbered in the order taken.
struct Album {
    dir: PathBuf,
    taken: usize,
}

impl Album {
    fn new(test: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/browser-screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, taken: 0 }
    }

    async fn shoot(&mut self, browser: &Client, name: &str) {
        self.taken += 1;
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::write(self.dir.join(format!("{:02}-{name}.png", self.taken)), png).unwrap();
    }
}

/// The page's text once it shows `expected` (a click navigates while we read: wait for it).
async fn page_with(browser: &Client, expected: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let shown = match browser.find(Locator::Css("main")).await {
            Ok(main) => main.text().await.ok(),
            Err(_) => None,
        };
        if let Some(text) = shown {
            if text.contains(expected) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed {expected:?}; it shows {last:?}");
}

async fn sign_in(browser: &Client, email: &str, password: &str) {
    browser
        .find(Locator::Css("input[name=email]"))
        .await
        .unwrap()
        .send_keys(email)
        .await
        .unwrap();
    browser
        .find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form[action='/signin'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn press(browser: &Client, decision: &str) {
    browser
        .find(Locator::Css(&format!("button[value={decision}]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_reviews_the_request_and_approves_or_denies_it() {
    let Some(driver) = driver().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    api.add_user("dev@example.com", PASSWORD).await;
    let browser = browser(&driver).await;
    let mut album = Album::new("approve-and-deny");

    // The link the CLI prints leads to sign-in first.
    let device = api.start_device().await;
    let code = device["user_code"].as_str().unwrap();
    browser
        .goto(&format!("{}/activate?user_code={code}", api.url))
        .await
        .unwrap();
    page_with(&browser, "Sign in").await;
    album.shoot(&browser, "sign-in").await;

    // A wrong password is refused, and says so.
    sign_in(&browser, "dev@example.com", "not the password").await;
    page_with(&browser, "The email or the password is wrong.").await;
    album.shoot(&browser, "wrong-password").await;

    // Signed in, the person sees what asks, from where, with which code.
    sign_in(&browser, "dev@example.com", PASSWORD).await;
    let review = page_with(&browser, "Approve this device?").await;
    assert!(
        review.contains(code) && review.contains("ckrv-cli") && review.contains("127.0.0.1"),
        "{review}"
    );
    album.shoot(&browser, "review").await;
    press(&browser, "approve").await;
    page_with(&browser, "Signed in as dev@example.com").await;
    album.shoot(&browser, "approved").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, tokens) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{tokens}");

    // Another request, denied: the device is told.
    let device = api.start_device().await;
    browser
        .goto(&format!(
            "{}/activate?user_code={}",
            api.url,
            device["user_code"].as_str().unwrap()
        ))
        .await
        .unwrap();
    page_with(&browser, "Approve this device?").await;
    album.shoot(&browser, "second-review").await;
    press(&browser, "deny").await;
    page_with(&browser, "Request denied").await;
    album.shoot(&browser, "denied").await;
    let (_, error) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(error["error"], "access_denied");
    browser.close().await.unwrap();
    assert_eq!(std::fs::read_dir(&album.dir).unwrap().count(), album.taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_is_refused() {
    let Some(driver) = driver().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start(dir.path()).await;
    api.add_user("dev@example.com", PASSWORD).await;
    let device = api.start_device().await;
    // Ten minutes pass.
    api.sql("UPDATE device_codes SET expires_ms = 0").await;
    let browser = browser(&driver).await;
    let mut album = Album::new("expired-code");
    let code = device["user_code"].as_str().unwrap();
    browser
        .goto(&format!("{}/activate?user_code={code}", api.url))
        .await
        .unwrap();
    sign_in(&browser, "dev@example.com", PASSWORD).await;
    page_with(&browser, "unknown, expired or already used").await;
    assert!(
        browser
            .find(Locator::Css("button[value=approve]"))
            .await
            .is_err()
    );
    album.shoot(&browser, "expired").await;
    let (_, error) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(error["error"], "expired_token");
    browser.close().await.unwrap();
}

/// axe-core from npm (`npm ci --prefix api/tests/axe`), or why it is missing.
fn axe_source() -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/axe/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(_) => {
            ckrv_test_support::skip_unless_required(
                "CKRV_REQUIRE_BROWSER",
                "axe-core is not installed",
                "npm ci --prefix api/tests/axe",
            );
            None
        }
    }
}

/// Runs axe-core inside the page and fails on any serious or critical violation, naming each.
async fn assert_accessible(browser: &Client, axe: &str, page: &str) {
    // WebDriver's scripts run outside the page's CSP, which forbids every script but its own.
    browser
        .execute(&format!("{axe}\nreturn true;"), vec![])
        .await
        .unwrap();
    let found = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] }).then((r) => done(r.violations
               .filter((v) => v.impact === 'serious' || v.impact === 'critical')
               .map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`)));",
            vec![],
        )
        .await
        .unwrap();
    let problems: Vec<String> = serde_json::from_value(found).unwrap();
    assert!(problems.is_empty(), "{page}: {problems:#?}");
}

/// The text of the first element `css` finds once it holds `expected`.
async fn element_with(browser: &Client, css: &str, expected: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text.contains(expected) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never showed {expected:?}; it shows {last:?}");
}

async fn sign_out(browser: &Client) {
    browser
        .find(Locator::Css("form[action='/signout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page_with(browser, "You are signed out").await;
    let url = browser.current_url().await.unwrap();
    browser.goto(url.join("/").unwrap().as_str()).await.unwrap();
    page_with(browser, "Sign in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_follows_and_acts_on_jobs_in_the_console() {
    let Some(driver) = driver().await else { return };
    let Some(axe) = axe_source() else { return };
    let dir = tempfile::tempdir().unwrap();
    let api = TestApi::start_local(dir.path()).await;
    let dev = support::access(&api.login("dev@example.com").await).to_string();
    api.login("other@example.com").await;
    api.login("ops@example.com").await;
    api.sql("UPDATE accounts SET is_admin = 1 WHERE email = 'ops@example.com'")
        .await;
    let (_, pat) = ckrv_api::identity::admin::issue_token(
        &api.store().await,
        "dev@example.com",
        "ci-token",
        None,
    )
    .await
    .unwrap();
    // A finished job whose title, branch, log and file names hold markup.
    let hostile = "<script>alert(1)</script>";
    let (_, done) = api
        .post(
            "/v1/jobs",
            &dev,
            serde_json::json!({
                "spec_content": format!("---\nagent: script\nrun: echo hi\n---\n# Fix {hostile}\n"),
                "git_repo_url": "http://127.0.0.1:9/sample.git",
                "git_base_branch": format!("main{hostile}"),
            }),
        )
        .await;
    let done = done["id"].as_str().unwrap().to_string();
    let diff = "diff --git a/src/<img src=x>.rs b/src/<img src=x>.rs\n--- a/src/<img src=x>.rs\n+++ b/src/<img src=x>.rs\n@@ -1,2 +1,2 @@\n fn main() {\n-    let old = 1;\n+    let new = 2;\n";
    let stats = serde_json::json!({"files_changed": 1, "insertions": 1, "deletions": 1,
        "files": [{"path": "src/<img src=x>.rs", "insertions": 1, "deletions": 1, "binary": false}],
        "base_commit": "0123456789abcdef0123456789abcdef01234567"});
    api.work_job(
        &done,
        &[&format!("log says {hostile}")],
        Some((diff, stats)),
        Some(serde_json::json!({"state": "succeeded"})),
    )
    .await;
    // A running job, its log written while the page is open.
    let (_, running) = api.create_job(&dev).await;
    let running = running["id"].as_str().unwrap().to_string();
    api.work_job(&running, &["cloning the repository"], None, None)
        .await;

    let browser = browser(&driver).await;
    browser.set_window_size(1280, 900).await.unwrap();
    let mut album = Album::new("console");

    // The console is behind sign-in, which comes back to it.
    browser.goto(&format!("{}/", api.url)).await.unwrap();
    page_with(&browser, "Sign in").await;
    sign_in(&browser, "dev@example.com", PASSWORD).await;
    let jobs = page_with(&browser, "newest first").await;
    assert!(
        jobs.contains(&format!("Fix {hostile}")),
        "shown as text: {jobs}"
    );
    assert!(
        browser.get_alert_text().await.is_err(),
        "no script of a job ran"
    );
    album.shoot(&browser, "jobs").await;
    assert_accessible(&browser, &axe, "jobs").await;

    // A new job appears without a reload.
    let (_, new) = api.create_job(&dev).await;
    let new = new["id"].as_str().unwrap().to_string();
    element_with(&browser, "#jobs tbody", &new[..8]).await;

    // The running job's log grows while the page is open.
    browser
        .goto(&format!("{}/jobs/{running}", api.url))
        .await
        .unwrap();
    element_with(&browser, "#log", "cloning the repository").await;
    api.work_job(
        &running,
        &["agent: writing the fix", "error: a test failed"],
        None,
        None,
    )
    .await;
    element_with(&browser, "#log", "error: a test failed").await;
    album.shoot(&browser, "running-job").await;
    // From the keyboard: Tab reaches the skip link first, `/` the log's search.
    press_key(&browser, '\u{E004}').await;
    assert_eq!(focused(&browser).await, "Skip to content");
    press_key(&browser, '/').await;
    assert_eq!(focused(&browser).await, "log-search");
    assert_accessible(&browser, &axe, "running job").await;
    // Search and jump to the error.
    browser
        .find(Locator::Css("#log-search"))
        .await
        .unwrap()
        .send_keys("writing")
        .await
        .unwrap();
    element_with(&browser, "#log-count", "1 match").await;
    browser
        .find(Locator::Css("#log-error"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    element_with(&browser, "#log .log-line.current", "a test failed").await;

    // Cancel, through the API with the page's CSRF token.
    browser
        .find(Locator::Css("#cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    element_with(&browser, "#notice", "Cancelled.").await;
    element_with(&browser, "#job-state", "cancelled").await;
    let (_, job) = api.get(&format!("/v1/jobs/{running}"), &dev).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    album.shoot(&browser, "cancelled").await;

    // The finished job: its log as text, then its diff.
    browser
        .goto(&format!("{}/jobs/{done}", api.url))
        .await
        .unwrap();
    element_with(&browser, "#log", &format!("log says {hostile}")).await;
    album.shoot(&browser, "finished-job").await;
    browser
        .find(Locator::LinkText("Read the diff"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let shown = page_with(&browser, "Diff of job").await;
    assert!(shown.contains("src/<img src=x>.rs"), "{shown}");
    assert!(browser.get_alert_text().await.is_err());
    album.shoot(&browser, "diff").await;
    assert_accessible(&browser, &axe, "diff").await;

    // Continue with feedback: a follow-up job, as `ckrv run --cloud --continue` makes.
    browser
        .goto(&format!("{}/jobs/{done}", api.url))
        .await
        .unwrap();
    browser
        .find(Locator::Css("#feedback"))
        .await
        .unwrap()
        .send_keys("Also cover the <empty> case")
        .await
        .unwrap();
    browser
        .find(Locator::Css("#follow-up button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let follow_up = page_with(&browser, "Follows up").await;
    assert!(follow_up.contains(&done), "{follow_up}");
    let (_, jobs) = api.get("/v1/jobs", &dev).await;
    assert_eq!(jobs["jobs"][0]["parent_id"], done.as_str(), "{jobs}");
    album.shoot(&browser, "follow-up").await;

    // An attempt group, ranked.
    let (_, group) = api
        .post(
            "/v1/groups",
            &dev,
            serde_json::json!({"job": support::job_request(), "attempts": 2}),
        )
        .await;
    let group = group["id"].as_str().unwrap().to_string();
    browser
        .goto(&format!("{}/groups/{group}", api.url))
        .await
        .unwrap();
    page_with(&browser, "2 attempts, best first").await;
    album.shoot(&browser, "group").await;
    assert_accessible(&browser, &axe, "group").await;
    browser
        .find(Locator::Css("button[data-path$='/cancel']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page_with(&browser, "No attempt has a change to pull yet").await;
    for _ in 0..50 {
        if browser
            .find(Locator::Css("button[data-path]"))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, listed) = api.get(&format!("/v1/groups/{group}"), &dev).await;
    assert!(
        listed["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|job| job["state"] == "cancelled"),
        "{listed}"
    );

    // At 320 px wide nothing but the tables' own scrollers scrolls sideways.
    browser.set_window_size(320, 800).await.unwrap();
    browser.goto(&format!("{}/", api.url)).await.unwrap();
    page_with(&browser, "newest first").await;
    let fits = browser
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, serde_json::json!(true), "the page fits 320 px");
    album.shoot(&browser, "jobs-320px").await;
    browser.set_window_size(1280, 900).await.unwrap();

    // Another account sees none of it.
    sign_out(&browser).await;
    sign_in(&browser, "other@example.com", PASSWORD).await;
    page_with(&browser, "No jobs here yet").await;
    browser
        .goto(&format!("{}/jobs/{done}", api.url))
        .await
        .unwrap();
    page_with(&browser, "job not found").await;
    album.shoot(&browser, "another-accounts-job").await;
    browser
        .goto(&format!("{}/operators", api.url))
        .await
        .unwrap();
    page_with(&browser, "for administrators").await;

    // An administrator sees the whole system.
    sign_out(&browser).await;
    sign_in(&browser, "ops@example.com", PASSWORD).await;
    page_with(&browser, "No jobs here yet").await;
    browser
        .find(Locator::LinkText("Operators"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let operators = page_with(&browser, "Use this month").await;
    // The new job of the live list and the follow-up still run.
    assert!(
        operators.contains("dev@example.com: 0 waiting, 2 running"),
        "{operators}"
    );
    assert!(operators.contains("Ready: database ok"), "{operators}");
    assert!(operators.contains("ci-token"), "{operators}");
    album.shoot(&browser, "operators").await;
    assert_accessible(&browser, &axe, "operators").await;

    // The administrator revokes dev's token and disables other's account with the page's
    // buttons, which call the administrators' API.
    browser
        .find(Locator::Css(
            "button[aria-label='Revoke ci-token of dev@example.com']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for _ in 0..50 {
        if api.get("/v1/users/me", &pat).await.0 == reqwest::StatusCode::UNAUTHORIZED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        api.get("/v1/users/me", &pat).await.0,
        reqwest::StatusCode::UNAUTHORIZED
    );
    page_with(&browser, "Use this month").await;
    browser
        .find(Locator::Css(
            "button[aria-label='Disable other@example.com']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    element_with(
        &browser,
        "tr[data-email='other@example.com'] .account-status",
        "disabled",
    )
    .await;
    album.shoot(&browser, "operators-after-actions").await;
    browser.close().await.unwrap();

    // In dark mode, the same pages, as checked.
    let dark = driver.browser_with(&["--force-dark-mode"]).await;
    dark.set_window_size(1280, 900).await.unwrap();
    dark.goto(&format!("{}/", api.url)).await.unwrap();
    page_with(&dark, "Sign in").await;
    sign_in(&dark, "dev@example.com", PASSWORD).await;
    page_with(&dark, "newest first").await;
    let background = dark
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(background, serde_json::json!("rgb(13, 17, 23)"), "dark");
    album.shoot(&dark, "dark-jobs").await;
    assert_accessible(&dark, &axe, "jobs, dark").await;
    dark.goto(&format!("{}/jobs/{done}/diff", api.url))
        .await
        .unwrap();
    page_with(&dark, "Diff of job").await;
    album.shoot(&dark, "dark-diff").await;
    assert_accessible(&dark, &axe, "diff, dark").await;
    dark.close().await.unwrap();
}

/// Presses and releases one key (WebDriver's key codes: `\u{E004}` is Tab).
async fn press_key(browser: &Client, key: char) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let keys = KeyActions::new("keyboard".to_string())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    browser.perform_actions(keys).await.unwrap();
}

/// The focused element's id, else its text.
async fn focused(browser: &Client) -> String {
    browser
        .execute(
            "const e = document.activeElement; return e.id || e.textContent.trim();",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap_or_default()
        .to_string()
}
