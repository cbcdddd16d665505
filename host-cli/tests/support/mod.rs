//! A real `ckrv-api` in this process (its worker played by the test) and the real `ckrv`
//! binary, each test with its own config and cache directories.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use ckrv_api::dispatch::{DispatchError, Dispatcher};
use ckrv_api::{Config, DispatcherConfig, Server};

/// Hands each job's worker token to the test instead of starting a process.
#[derive(Default)]
pub struct TestWorkers {
    tokens: Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl Dispatcher for TestWorkers {
    async fn start(&self, job_id: &str, token: &str) -> Result<(), DispatchError> {
        self.tokens
            .lock()
            .unwrap()
            .push((job_id.to_string(), token.to_string()));
        Ok(())
    }

    async fn stop(&self, _job_id: &str) {}
}

pub struct Env {
    pub api_url: String,
    pub home: tempfile::TempDir,
    pub workers: Arc<TestWorkers>,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Env {
    pub async fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        let workers = Arc::new(TestWorkers::default());
        let server = Server::bind(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: home.path().join("api"),
            dispatcher: DispatcherConfig::Custom(workers.clone()),
            public_url: None,
        })
        .await
        .unwrap();
        let api_url = server.url();
        Self {
            api_url,
            home,
            workers,
            http: reqwest::Client::new(),
            server: tokio::spawn(server.run()),
        }
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
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs `ckrv` on a blocking thread so the in-process API keeps serving.
    pub async fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut cmd = self.ckrv(cwd, args);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
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
        let mut child = self
            .ckrv(self.home.path(), &["cloud", "login"])
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
        let approved = self
            .http
            .post(format!("{}/activate", self.api_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "user_code={code}&email={}",
                email.replace('@', "%40")
            ))
            .send()
            .await
            .unwrap();
        assert!(approved.status().is_success());
        let (rest, out) = tokio::task::spawn_blocking(move || {
            let rest: Vec<String> = rest.map(Result::unwrap).collect();
            (rest, child.wait_with_output().unwrap())
        })
        .await
        .unwrap();
        lines.extend(rest);
        assert!(
            out.status.success(),
            "{lines:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines.join("\n")
    }

    pub fn worker_token(&self, job_id: &str) -> String {
        self.workers
            .tokens
            .lock()
            .unwrap()
            .iter()
            .find(|(id, _)| id == job_id)
            .map(|(_, t)| t.clone())
            .unwrap()
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
            self.http.post(format!("{base}/logs")).json(&serde_json::json!({"lines": [
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
                .json(&serde_json::json!({"status": "succeeded", "error": null})),
        )
        .await;
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

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
