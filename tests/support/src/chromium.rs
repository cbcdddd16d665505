//! Debian's Chromium, headless, driven through WebDriver (chromedriver, with `fantoccini`): for
//! the browser tests of the web pages and the console's benchmark. It calls nothing but
//! loopback.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};

/// chromedriver on a loopback port, killed on drop.
pub struct Chromedriver {
    url: String,
    child: Child,
    profile: tempfile::TempDir,
}

impl Drop for Chromedriver {
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

/// Whether chromium and chromedriver are installed.
pub fn chromium_installed() -> bool {
    installed("chromium") && installed("chromedriver")
}

/// A chromedriver, or `None` (having said why) when chromium or chromedriver is missing and
/// `CKRV_REQUIRE_BROWSER` is not set.
pub async fn chromedriver() -> Option<Chromedriver> {
    if !chromium_installed() {
        crate::skip_unless_required(
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
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(Chromedriver {
        url: format!("http://127.0.0.1:{port}"),
        child,
        profile: tempfile::tempdir().unwrap(),
    })
}

impl Chromedriver {
    /// A headless Chromium that calls nothing but loopback.
    pub async fn browser(&self) -> Client {
        self.browser_with(&[]).await
    }

    /// The same, with `extra` flags (e.g. `--force-dark-mode`), in a profile of its own.
    pub async fn browser_with(&self, extra: &[&str]) -> Client {
        let profile = tempfile::Builder::new()
            .prefix("profile")
            .tempdir_in(self.profile.path())
            .unwrap()
            .keep()
            .display()
            .to_string();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            format!("--user-data-dir={profile}"),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap()
    }
}
