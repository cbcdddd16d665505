//! Single sign-on against a real OpenID Connect provider (node-oidc-provider, from
//! `api/tests/oidc`, started on loopback): a browser goes from the sign-in page to the
//! provider and back. Without Node.js or the provider's packages (`npm ci --prefix
//! api/tests/oidc`) the tests print why and pass; CI sets `CKRV_REQUIRE_OIDC=1`.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ckrv_api::identity::sso::SsoConfig;
use ckrv_test_support::{Browser, PASSWORD};
use reqwest::StatusCode;
use support::{RecordingDispatcher, TestApi};
use zeroize::Zeroizing;

const CLIENT_SECRET: &str = "ckrv-test-client-secret";

/// The provider process; killed on drop.
struct Provider {
    child: Child,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    let ready = dir.join("node_modules/oidc-provider").is_dir()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if ready {
        return Some(dir);
    }
    ckrv_test_support::skip_unless_required(
        "CKRV_REQUIRE_OIDC",
        "Node.js or the OpenID provider's packages are missing",
        "npm ci --prefix api/tests/oidc",
    );
    None
}

/// A free loopback port, for a provider whose address the API must know before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_provider(dir: &PathBuf, port: u16, redirect_uri: &str) -> Provider {
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .env("CLIENT_ID", "ckrv")
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("REDIRECT_URI", redirect_uri)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("listening on ") => break,
            Some(Ok(_)) => {}
            _ => panic!("the OpenID provider did not start"),
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Provider { child }
}

/// An API with single sign-on through a provider that vouches for whoever logs in.
async fn stage() -> Option<(tempfile::TempDir, TestApi, Provider)> {
    let dir = provider_dir()?;
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let api =
        TestApi::start_configured(data.path(), Arc::new(RecordingDispatcher::default()), |c| {
            c.sso = Some(SsoConfig {
                name: "Team SSO".into(),
                issuer: format!("http://127.0.0.1:{port}"),
                client_id: "ckrv".into(),
                client_secret: Some(Zeroizing::new(CLIENT_SECRET.into())),
                allowed_domains: vec!["team.example.com".into()],
            });
        })
        .await;
    let provider = start_provider(&dir, port, &format!("{}/signin/sso/callback", api.url));
    Some((data, api, provider))
}

/// The first form of a page: its action and its hidden fields.
fn form(page: &str) -> (String, Vec<(String, String)>) {
    let start = page
        .find("<form")
        .unwrap_or_else(|| panic!("no form in {page}"));
    let form = &page[start
        ..page[start..]
            .find("</form>")
            .map_or(page.len(), |e| start + e)];
    let attr = |tag: &str, name: &str| {
        tag.split(&format!("{name}=\""))
            .nth(1)
            .map(|v| v.split('"').next().unwrap_or("").to_string())
    };
    let action = attr(form, "action").unwrap();
    let hidden = form
        .split("<input")
        .skip(1)
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value")?)))
        .collect();
    (action.replace("&amp;", "&"), hidden)
}

/// Signs in at the provider as `login` from the API's sign-in page; returns where the browser
/// lands back at the API.
async fn sign_on(browser: &Browser, login: &str) -> (StatusCode, String) {
    let response = through_provider(browser, login).await;
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// Starts a single sign-on in `browser` and signs in at the provider as `login`; returns the
/// last response: the API's page when the browser follows every redirect, the provider's
/// redirect to the callback when it stops there.
async fn through_provider(browser: &Browser, login: &str) -> reqwest::Response {
    let (status, page) = browser.get("/signin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Sign in with Team SSO"), "{page}");
    let mut response = browser
        .http
        .get(format!("{}/signin/sso?next=%2Factivate", browser.url))
        .send()
        .await
        .unwrap();
    // The provider's pages: sign in, then (the first time) consent.
    for _ in 0..3 {
        if response.status() != StatusCode::OK {
            break;
        }
        let page = response.text().await.unwrap();
        assert!(page.contains("/interaction/"), "{page}");
        let (action, mut fields) = form(&page);
        if page.contains("name=\"login\"") {
            fields.push(("login".into(), login.into()));
            fields.push(("password".into(), "anything".into()));
        }
        response = browser
            .http
            .post(&action)
            .form(&fields)
            .send()
            .await
            .unwrap();
        let at_api = response
            .url()
            .as_str()
            .starts_with(&format!("{}/", browser.url));
        if at_api || response.status() != StatusCode::OK {
            return response;
        }
    }
    response
}

/// A browser that stops where the provider sends it back to the API, as an attacker does to
/// take the callback URL (with a valid code and state of their own) elsewhere.
fn stopping_at_the_callback(api: &TestApi, cookies: Arc<reqwest::cookie::Jar>) -> Browser {
    let http = reqwest::Client::builder()
        .cookie_provider(cookies)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path() == "/signin/sso/callback" {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap();
    Browser {
        url: api.url.clone(),
        http,
    }
}

/// Whether `cookies` hold a session of the API at `url`.
fn has_session(cookies: &reqwest::cookie::Jar, url: &str) -> bool {
    use reqwest::cookie::CookieStore as _;
    cookies
        .cookies(&url.parse().unwrap())
        .is_some_and(|header| header.to_str().unwrap().contains("ckrv_session="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_of_an_allowed_domain_sign_on_and_get_an_account() {
    let Some((_data, api, _provider)) = stage().await else {
        return;
    };
    let browser = api.browser();
    let (status, page) = sign_on(&browser, "alice@team.example.com").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Activate a device") && page.contains("alice@team.example.com"),
        "{page}"
    );
    let account = api
        .store()
        .await
        .account_by_email("alice@team.example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!account.has_password && !account.is_admin);

    // The session works for approving a device, as a password sign-in's would.
    let device = api.start_device().await;
    let (status, page) = browser
        .decide(device["user_code"].as_str().unwrap(), "approve")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (status, tokens) = api.poll(device["device_code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_domains_need_an_account_and_unverified_emails_are_refused() {
    let Some((_data, api, _provider)) = stage().await else {
        return;
    };
    // Not of an allowed domain, and no account: refused, nothing created.
    let (status, page) = sign_on(&api.browser(), "bob@elsewhere.example.com").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("no account for bob@elsewhere.example.com"),
        "{page}"
    );
    assert!(
        api.store()
            .await
            .account_by_email("bob@elsewhere.example.com")
            .await
            .unwrap()
            .is_none()
    );

    // An account an administrator added signs on whatever its domain.
    api.add_user("carol@elsewhere.example.com", PASSWORD).await;
    let (status, page) = sign_on(&api.browser(), "carol@elsewhere.example.com").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("carol@elsewhere.example.com"), "{page}");

    // The provider vouches for an email it has not verified: not enough.
    let (status, page) = sign_on(&api.browser(), "unverified:carol@elsewhere.example.com").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    assert!(page.contains("has not verified"), "{page}");

    // An answer for a sign-on this server did not start is refused.
    let (status, page) = api
        .browser()
        .get("/signin/sso/callback?code=forged&state=forged")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("not started here"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_on_answer_opened_in_another_browser_signs_nobody_in() {
    let Some((_data, api, _provider)) = stage().await else {
        return;
    };
    // The attacker starts a sign-on in their own browser, signs in at the provider as
    // themselves, and keeps the callback URL instead of following it.
    let attacker = stopping_at_the_callback(&api, Arc::default());
    let answer = through_provider(&attacker, "mallory@team.example.com").await;
    assert!(answer.status().is_redirection(), "{}", answer.status());
    let callback = answer.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        callback.starts_with(&format!("{}/signin/sso/callback?", api.url))
            && callback.contains("code=")
            && callback.contains("state="),
        "{callback}"
    );

    // The victim's browser opens it (a link, an image, a redirect from another site).
    let cookies = Arc::new(reqwest::cookie::Jar::default());
    let victim = Browser {
        url: api.url.clone(),
        http: reqwest::Client::builder()
            .cookie_provider(Arc::clone(&cookies))
            .build()
            .unwrap(),
    };
    let response = victim.http.get(&callback).send().await.unwrap();
    let status = response.status();
    let page = response.text().await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(
        page.contains("started in another browser") && !page.contains("mallory"),
        "{page}"
    );
    assert!(!has_session(&cookies, &api.url), "the victim got a session");
    let (_, page) = victim.get("/activate").await;
    assert!(
        page.contains("Sign in") && !page.contains("mallory"),
        "{page}"
    );
    assert!(
        api.store()
            .await
            .account_by_email("mallory@team.example.com")
            .await
            .unwrap()
            .is_none(),
        "nobody was signed in, so no account was made"
    );
    // Used up: the attacker's own browser cannot finish it afterwards either.
    let response = attacker.http.get(&callback).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // The same steps in one browser sign in, as they should.
    let cookies = Arc::new(reqwest::cookie::Jar::default());
    let person = stopping_at_the_callback(&api, Arc::clone(&cookies));
    let answer = through_provider(&person, "alice@team.example.com").await;
    let callback = answer.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let response = person.http.get(&callback).send().await.unwrap();
    let status = response.status();
    let page = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Activate a device") && page.contains("alice@team.example.com"),
        "{page}"
    );
    assert!(has_session(&cookies, &api.url));
}
