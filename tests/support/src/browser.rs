//! A person's browser on the API's web pages: cookies kept, redirects followed, forms filled
//! in from the page as served (their CSRF tokens included).

use reqwest::StatusCode;

/// The password of the accounts the suites create.
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Browser {
    pub url: String,
    pub http: reqwest::Client,
}

impl Browser {
    /// A new browser, signed in nowhere, on the site at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Submits a form; returns the status and page the browser ends on (after redirects).
    pub async fn submit(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .form(fields)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Signs in on /signin as a person would; returns where that lands.
    pub async fn try_sign_in(&self, email: &str, password: &str) -> (StatusCode, String) {
        let (status, form) = self.get("/signin").await;
        assert_eq!(status, StatusCode::OK, "{form}");
        let nonce = form_value(&form, "nonce");
        self.submit(
            "/signin",
            &[
                ("email", email),
                ("password", password),
                ("nonce", &nonce),
                ("next", "/activate"),
            ],
        )
        .await
    }

    pub async fn sign_in(&self, email: &str, password: &str) {
        let (status, page) = self.try_sign_in(email, password).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("Activate a device"), "{page}");
    }

    /// Opens the request for `user_code` and presses `decision` (`approve` or `deny`).
    pub async fn decide(&self, user_code: &str, decision: &str) -> (StatusCode, String) {
        let (status, page) = self.get(&format!("/activate?user_code={user_code}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let csrf = form_value(&page, "csrf");
        self.submit(
            "/activate",
            &[
                ("csrf", &csrf),
                ("user_code", user_code),
                ("decision", decision),
            ],
        )
        .await
    }
}

/// The `value` of the form field named `name` in a page.
pub fn form_value(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {page}"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_string()
}
