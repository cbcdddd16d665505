//! The real agent definitions through the real binaries: an operator enables agents and gives
//! them their keys (`--agents`, `--agent-secrets`), and stand-in CLIs of the real programs'
//! names (`--agent-bin`) report how they were called, in the sandbox. The agent calls its model
//! through the API's gateway with its job's model token; only the model API (a stand-in on
//! loopback, `--model-upstream`) gets the key, which appears in no agent, log, response,
//! database or file the service keeps. Bad operator settings stop the server with the problem
//! named.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use ckrv_e2e::{Api, Developer, binary, files_containing, serve_app_repo};
use ckrv_test_support::{FakeEndpoint, Recorded, install_agent_stand_ins};

const CLAUDE_KEY: &str = "sk-ant-api03-e2e-secret-value-0123456789";
const CODEX_KEY: &str = "sk-proj-e2e-codex-secret-value-9876543210";

fn sha256_hex(text: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// `ckrv run --cloud` of `spec`; its output.
fn run_spec(dev: &Developer, repo_url: &str, name: &str, spec: &str) -> std::process::Output {
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    std::fs::write(dev.clone.join("specs").join(name), spec).unwrap();
    let spec_path = format!("specs/{name}");
    dev.cli.run(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            &spec_path,
            "--repo",
            repo_url,
            "--base-branch",
            "main",
            "--json",
        ],
    )
}

#[test]
fn an_enabled_agent_gets_its_key_and_no_log_or_store_ever_shows_it() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_repos, repo_url) = serve_app_repo(root);
    let bin = root.join("agent-bin");
    install_agent_stand_ins(&bin, &["claude", "codex", "gemini", "aider"]);
    let secrets = root.join("agent-secrets.env");
    private_file(
        &secrets,
        &format!("ANTHROPIC_API_KEY={CLAUDE_KEY}\nCODEX_API_KEY={CODEX_KEY}\n"),
    );
    // Anthropic's API, as a stand-in on loopback: it answers with a message and its usage.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vendor = runtime.block_on(FakeEndpoint::start(|_request: Recorded| async {
        axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                r#"{"type":"message","model":"claude-sonnet-4-5","content":[{"type":"text","text":"stand-in says hi"}],"usage":{"input_tokens":2000,"output_tokens":100}}"#,
            ))
            .unwrap()
    }));
    let upstream = format!("anthropic={}", vendor.url);
    let api_log = root.join("api.log");
    let api = Api::start_logging(
        &root.join("api"),
        &[
            "--allow-local-repos",
            "--agents",
            "claude-code,script",
            "--agent-secrets",
            secrets.to_str().unwrap(),
            "--agent-bin",
            bin.to_str().unwrap(),
            "--model-upstream",
            &upstream,
        ],
        &api_log,
    );
    let dev = Developer::new(&api, root, "dev@example.com", &repo_url);

    let spec = "---\nagent: claude-code\nmodel: sonnet\nmax_turns: 5\n---\n# Greeting\n\nAdd a greeting to README.md.\n";
    let out = run_spec(&dev, &repo_url, "greeting.md", spec);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let job = dev.cli.finished(&dev.clone, &id);
    assert_eq!(job["state"], "succeeded", "{job}");

    let log = dev.cli.ok(&dev.clone, &["logs", &id]);
    let argv: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("argv: ").map(|(_, a)| a))
        .collect();
    assert_eq!(
        argv,
        [
            "-p",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Bash",
            "--output-format",
            "stream-json",
            "--verbose",
            "--max-turns",
            "5",
            "--model",
            "sonnet",
        ],
        "{log}"
    );
    // The spec's body is the prompt, on standard input; the output streams line by line under
    // the agent's name, in order.
    let stdin: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("stdin: ").map(|(_, a)| a))
        .collect();
    assert_eq!(
        stdin,
        ["# Greeting", "", "Add a greeting to README.md."],
        "{log}"
    );
    let starting = log.find("claude: starting").unwrap();
    let done = log.find("claude: done").unwrap();
    assert!(starting < done, "{log}");
    // The agent got a placeholder in its key variable (redacted in the log), never the key,
    // and the gateway's address; through them it reached its model, and only the model API
    // got the key.
    assert!(log.contains("env: ANTHROPIC_API_KEY=[redacted]"), "{log}");
    assert!(log.contains("key-sha256: ANTHROPIC_API_KEY="), "{log}");
    assert!(
        !log.contains(&format!(
            "key-sha256: ANTHROPIC_API_KEY={}",
            sha256_hex(CLAUDE_KEY)
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "env: ANTHROPIC_BASE_URL={}/v1/gateway/anthropic",
            api.url
        )),
        "{log}"
    );
    assert!(
        log.contains("model-answer: ") && log.contains("stand-in says hi"),
        "{log}"
    );
    let received = vendor.requests();
    assert_eq!(received.len(), 1, "{log}");
    assert_eq!(received[0].path(), "/v1/messages");
    assert_eq!(received[0].header("x-api-key"), CLAUDE_KEY);
    // What the model reported is the job's usage, in `ckrv status --json`.
    let status: serde_json::Value =
        serde_json::from_str(&dev.cli.ok(&dev.clone, &["status", &id, "--json"])).unwrap();
    assert_eq!(status["usage"]["requests"], 1, "{status}");
    assert_eq!(status["usage"]["input_tokens"], 2000, "{status}");
    assert_eq!(status["usage"]["output_tokens"], 100, "{status}");
    // The host outside the job's policy (what a hostile prompt would ask for) was refused, in
    // the user's log and in the job's count.
    assert!(log.contains("outside: 403"), "{log}");
    assert!(
        log.contains("egress: Connection blocked by network allowlist: localhost:9 (not in the job's allowlist, policy `model`)"),
        "{log}"
    );
    assert_eq!(status["egress_refusals"], 1, "{status}");
    let shown = dev.cli.ok(&dev.clone, &["status", &id]);
    assert!(
        shown.contains("Egress refused: 1 connection outside the job's policy"),
        "{shown}"
    );
    assert!(
        shown.contains("Model usage: 1 request, 2000 input + 100 output tokens, $0.0075"),
        "{shown}"
    );
    // The account's figure for the month, where the account is shown.
    let whoami = dev.cli.ok(&dev.clone, &["cloud", "whoami"]);
    assert!(
        whoami.contains("Model spend this month: $0.0075"),
        "{whoami}"
    );
    assert!(!log.contains("CODEX_API_KEY"), "{log}");
    assert!(log.contains("env: DISABLE_AUTOUPDATER=1"), "{log}");
    // Nothing of the worker's reaches the agent either.
    assert!(!log.contains("CKRV_WORKER"), "{log}");

    let pulled = dev.cli.ok(&dev.clone, &["pull", &id, "--yes"]);
    assert!(!pulled.contains(CLAUDE_KEY));
    let readme = std::fs::read_to_string(dev.clone.join("README.md")).unwrap();
    assert!(readme.contains("edited by claude"), "{readme}");

    // An agent the operator did not enable, and an option no agent has, are refused when the
    // job is submitted, before anything is cloned.
    let out = run_spec(
        &dev,
        &repo_url,
        "codex.md",
        "---\nagent: codex\n---\nDo it.\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "agent `codex` is not enabled on this server; enabled agents: claude-code, script"
        ),
        "{err}"
    );
    let out = run_spec(
        &dev,
        &repo_url,
        "typo.md",
        "---\nagent: claude-code\nmodle: opus\n---\nDo it.\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown front-matter key `modle` for agent `claude-code`"),
        "{err}"
    );

    drop(api);
    for key in [CLAUDE_KEY, CODEX_KEY] {
        assert_eq!(
            files_containing(&root.join("api"), key),
            Vec::<String>::new()
        );
        assert!(!std::fs::read_to_string(&api_log).unwrap().contains(key));
        assert!(!log.contains(key));
    }
    assert_eq!(
        files_containing(&dev.clone, CLAUDE_KEY),
        Vec::<String>::new()
    );
}

/// `ckrv-api serve FLAGS`, which must exit at once; its standard error.
fn refused_serve(data_dir: &Path, flags: &[&str]) -> String {
    let out = Command::new(binary("ckrv-api"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {flags:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_operator_settings_stop_the_server_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(dir.join("lint.wasm"), b"not wasm").unwrap();
    std::fs::write(
        &pipeline,
        "[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\n\n[[stage]]\nagent = true\nphase = \"agent\"\n\n[[stage]]\ncomponent = \"lint.wasm\"\nphase = \"diffing\"\n",
    )
    .unwrap();
    let err = refused_serve(&dir.join("a"), &["--pipeline", pipeline.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "invalid pipeline {}: stage 3 (lint): {} is not a WebAssembly component",
            pipeline.display(),
            dir.join("lint.wasm").display()
        )),
        "{err}"
    );

    std::fs::write(&pipeline, "[[stage]]\nagent = true\nphase = \"agent\"\n[[stage]]\nstep = \"diff\"\nphase = \"diffing\"\ntimeout_s = 0\n").unwrap();
    let err = refused_serve(&dir.join("b"), &["--pipeline", pipeline.to_str().unwrap()]);
    assert!(err.contains("stage 2 (diff): `timeout_s` is 0"), "{err}");

    let secrets = dir.join("secrets.env");
    std::fs::write(&secrets, format!("ANTHROPIC_API_KEY={CLAUDE_KEY}\n")).unwrap();
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let err = refused_serve(
        &dir.join("c"),
        &["--agent-secrets", secrets.to_str().unwrap()],
    );
    assert!(
        err.contains("other users can read it (mode 644); run `chmod 600"),
        "{err}"
    );
    assert!(!err.contains(CLAUDE_KEY));

    let err = refused_serve(&dir.join("d"), &["--agents", "claude-code,clawd"]);
    assert!(
        err.contains("--agents: unknown agent `clawd`; known agents: script, claude-code"),
        "{err}"
    );

    // The agents' egress policy comes from the flag or the pipeline's agent stage, not both.
    std::fs::write(
        &pipeline,
        "[[stage]]\nstep = \"clone\"\nphase = \"cloning\"\n[[stage]]\nagent = true\nphase = \"agent\"\negress = \"registries\"\n",
    )
    .unwrap();
    let err = refused_serve(
        &dir.join("g"),
        &[
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--egress-allow",
            "model",
        ],
    );
    assert!(
        err.contains("--egress-allow `model` and the pipeline's agent stage (egress = \"registries\") both set the agents' egress policy; keep one"),
        "{err}"
    );

    // Model budgets: USD for every tier or TIER=USD, the tier one of the known ones.
    let err = refused_serve(&dir.join("e"), &["--max-job-model-cost-usd", "5,gold=1"]);
    assert!(
        err.contains("`gold` is not a tier; give USD for every tier, or TIER=USD with TIER one of free, pro, enterprise"),
        "{err}"
    );
    let err = refused_serve(&dir.join("f"), &["--max-account-model-cost-usd", "free=-3"]);
    assert!(
        err.contains("`-3` is not a positive number of US dollars"),
        "{err}"
    );
}
