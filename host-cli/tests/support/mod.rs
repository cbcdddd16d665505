//! A real `ckrv-api` in this process (its worker played by the test) and the real `ckrv`
//! binary, each test with its own config and cache directories.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ckrv_api::store::Store;
use ckrv_test_support::api::TestApi;
use ckrv_test_support::{Browser, PASSWORD};

pub struct Env {
    pub api_url: String,
    pub home: tempfile::TempDir,
    /// The in-process API; its recording dispatcher hands the test each job's worker token.
    pub api: TestApi,
    pub http: reqwest::Client,
    /// The session bus `ckrv` reaches its keyring on: none by default, so no test touches the
    /// keyring of the person running it.
    pub bus: std::sync::Mutex<String>,
}

/// A session bus address where nothing listens.
pub const NO_BUS: &str = "unix:path=/nonexistent/ckrv-test-bus";

impl Env {
    pub async fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        let api = TestApi::start(&home.path().join("api")).await;
        Self {
            api_url: api.url.clone(),
            home,
            api,
            http: reqwest::Client::new(),
            bus: std::sync::Mutex::new(NO_BUS.to_string()),
        }
    }

    /// The API's store, as the `ckrv-api users` commands open it.
    pub async fn store(&self) -> Store {
        self.api.store().await
    }

    /// Adds an account, as `ckrv-api users add --password-stdin` does.
    pub async fn add_user(&self, email: &str) {
        self.api.add_user(email, PASSWORD).await;
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home.path().join("config")
    }

    pub fn ckrv(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckrv"));
        cmd.current_dir(cwd)
            .args(args)
            .env("CKRV_API_URL", &self.api_url)
            .env("CKRV_CONFIG_DIR", self.config_dir())
            .env("CKRV_CACHE_DIR", self.home.path().join("cache"))
            .env_remove("CKRV_TOKEN")
            .env_remove("CKRV_INSECURE_STORAGE")
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                self.bus.lock().unwrap().as_str(),
            )
            .env_remove("RUST_LOG");
        // No desktop: `ckrv cloud login` never opens the browser of the person running tests.
        for name in [
            "DISPLAY",
            "WAYLAND_DISPLAY",
            "BROWSER",
            "SSH_CONNECTION",
            "SSH_CLIENT",
            "SSH_TTY",
        ] {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Runs `ckrv` on a blocking thread so the in-process API keeps serving.
    pub async fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut cmd = self.ckrv(cwd, args);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// Runs `ckrv` with `input` on its standard input.
    pub async fn run_with_stdin(&self, cwd: &Path, args: &[&str], input: &str) -> Output {
        let mut cmd = self.ckrv(cwd, args);
        let input = input.to_string();
        tokio::task::spawn_blocking(move || {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
            drop(stdin);
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    /// Runs `ckrv` and insists on success; returns stdout.
    pub async fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args).await;
        assert!(
            out.status.success(),
            "ckrv {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `ckrv` and insists on failure; returns stderr.
    pub async fn fails(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "ckrv {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `ckrv cloud login`, approved on the activation page as a person would.
    pub async fn login(&self, email: &str) -> String {
        let (out, lines) = self.login_decided(email, "approve").await;
        assert!(
            out.status.success(),
            "{lines}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines
    }

    /// `ckrv cloud login` for a new account `email`, which signs in on the activation page and
    /// presses `decision`; returns how the command ended and what it printed.
    pub async fn login_decided(&self, email: &str, decision: &str) -> (Output, String) {
        self.login_with(email, decision, &[], &[]).await
    }

    /// As [`Env::login_decided`], with more arguments to `ckrv cloud login` and more
    /// environment variables.
    pub async fn login_with(
        &self,
        email: &str,
        decision: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Output, String) {
        let mut login = vec!["cloud", "login"];
        login.extend(args);
        let mut child = self
            .ckrv(self.home.path(), &login)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (code, mut lines, rest) = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut seen = Vec::new();
            for line in lines.by_ref() {
                let line = line.unwrap();
                seen.push(line.clone());
                if let Some((_, code)) = line.split_once("Enter code: ") {
                    return (code.trim().to_string(), seen, lines);
                }
            }
            panic!("login printed no code: {seen:?}");
        })
        .await
        .unwrap();
        // The person has an account an administrator made, signs in and approves.
        self.add_user(email).await;
        let browser = Browser::new(&self.api_url);
        browser.sign_in(email, PASSWORD).await;
        let (status, page) = browser.decide(&code, decision).await;
        assert!(status.is_success(), "{page}");
        let (rest, out) = tokio::task::spawn_blocking(move || {
            let rest: Vec<String> = rest.map(Result::unwrap).collect();
            (rest, child.wait_with_output().unwrap())
        })
        .await
        .unwrap();
        lines.extend(rest);
        (out, lines.join("\n"))
    }

    pub fn worker_token(&self, job_id: &str) -> String {
        self.api.dispatcher.token_for(job_id)
    }

    /// Plays the worker: finishes `job_id` as succeeded with `diff` as its result.
    pub async fn finish_with_diff(&self, job_id: &str, diff: &str) {
        let token = self.worker_token(job_id);
        let base = format!("{}/v1/worker/jobs/{job_id}", self.api_url);
        let send = |r: reqwest::RequestBuilder| async {
            let response = r.bearer_auth(&token).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{}",
                response.text().await.unwrap()
            );
        };
        send(self.http.get(&base)).await;
        send(
            self.http.post(format!("{base}/logs")).json(&serde_json::json!({"first_sequence": 1, "lines": [
                {"timestamp": "2026-11-22T12:34:56Z", "level": "info", "source": "script", "message": "agent says hi"}
            ]})),
        )
        .await;
        send(
            self.http
                .put(format!("{base}/artifacts/diff"))
                .body(diff.to_string()),
        )
        .await;
        send(
            self.http
                .post(format!("{base}/complete"))
                .json(&serde_json::json!({"state": "succeeded"})),
        )
        .await;
    }
}

pub use ckrv_test_support::git;

/// A worktree on `main` with an `origin`, a README and a spec.
pub fn worktree(root: &Path) -> PathBuf {
    let dir = root.join("work");
    std::fs::create_dir_all(dir.join("specs")).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "Status: draft\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "initial"]);
    git(
        &dir,
        &[
            "remote",
            "add",
            "origin",
            "https://git.example.com/work.git",
        ],
    );
    std::fs::write(
        dir.join("specs/spec.md"),
        "---\nagent: script\nrun: echo hi\n---\n# Hi\n",
    )
    .unwrap();
    dir
}
