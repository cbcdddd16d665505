//! The `/activate` flow in a real browser: Debian's Chromium, headless, driven through WebDriver
//! (chromedriver, with `fantoccini`). A person signs in, sees the device's request, approves or
//! denies it; a wrong password and an expired code are refused. A screenshot of every page is
//! kept under `target/browser-screenshots/<test>/` as an artifact. Without chromium and
//! chromedriver the tests print why and pass; CI installs them and sets `CKRV_REQUIRE_BROWSER=1`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use support::{PASSWORD, TestApi};

/// chromedriver on a loopback port, killed on drop.
struct Driver {
    url: String,
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn driver() -> Option<Driver> {
    if !(installed("chromium") && installed("chromedriver")) {
        ckrv_test_support::skip_unless_required(
            "CKRV_REQUIRE_BROWSER",
            "chromium and chromedriver are not installed",
            "apt-get install chromium chromium-driver",
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(Driver {
        url,
        child,
        profile: tempfile::tempdir().unwrap(),
    })
}

/// A headless Chromium that calls nothing but loopback.
async fn browser(driver: &Driver) -> Client {
    let profile = driver.profile.path().display().to_string();
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        &format!("--user-data-dir={profile}"),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": "/usr/bin/chromium", "args": args}),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap()
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
