//! Webhooks through the real binaries (docs/webhooks.md): `ckrv cloud webhooks add` gives a
//! secret, and every transition of the developer's jobs reaches a receiver on loopback whose
//! signatures are checked by the reference `standardwebhooks` library from PyPI
//! (tests/e2e/webhooks/receiver.py), never by our own code. A receiver that answers 500 and
//! then recovers gets every event once more, in order; `ckrv-api serve` killed with SIGKILL
//! while deliveries are on their way loses none of them; a rotated secret and the old one both
//! verify; the operator's webhook (`ckrv-api webhooks add`) hears every account's jobs.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use ckrv_e2e::{Api, Developer, repository_root, serve_app_repo, wait_for};
use serde_json::Value;

/// The Python with `standardwebhooks` installed (`.ci/run` makes one).
const PYTHON_ENV: &str = "CKRV_WEBHOOKS_PYTHON";
const REQUIRED_ENV: &str = "CKRV_REQUIRE_WEBHOOKS_PYTHON";

fn python() -> Option<PathBuf> {
    let python = std::env::var_os(PYTHON_ENV).map(PathBuf::from);
    let works = python.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import standardwebhooks"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if works {
        return python;
    }
    ckrv_test_support::skip_unless_required(
        REQUIRED_ENV,
        &format!("{PYTHON_ENV} names no Python with standardwebhooks"),
        "python3 -m venv V && V/bin/pip install standardwebhooks==1.3.0, then set CKRV_WEBHOOKS_PYTHON=V/bin/python",
    );
    None
}

/// The receiver script, its files, and what it recorded.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(python: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = repository_root().join("tests/e2e/webhooks/receiver.py");
        let file = |name: &str| dir.path().join(name);
        let child = Command::new(python)
            .arg(script)
            .args([
                file("port"),
                file("secrets"),
                file("mode"),
                file("received"),
            ])
            .spawn()
            .unwrap();
        let port = wait_for("the receiver's port", Duration::from_secs(20), || {
            std::fs::read_to_string(file("port")).ok()
        });
        Self {
            child,
            url: format!("http://127.0.0.1:{}/hook", port.trim()),
            dir,
        }
    }

    /// The secrets it verifies with, in this order.
    fn trust(&self, secrets: &[&str]) {
        std::fs::write(self.dir.path().join("secrets"), secrets.join("\n")).unwrap();
    }

    /// `ok`, `fail` or `slow SECONDS`.
    fn answer(&self, mode: &str) {
        std::fs::write(self.dir.path().join("mode"), mode).unwrap();
    }

    /// What it accepted, verified, in the order it came.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("received"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The events of `job` it accepted, once one of them is `last`.
    fn events_of_until(&self, job: &str, last: &str) -> Vec<Value> {
        wait_for(
            &format!("{last} of {job} at the receiver"),
            Duration::from_secs(120),
            || {
                let events: Vec<Value> = self
                    .received()
                    .into_iter()
                    .filter(|e| e["job"] == job)
                    .collect();
                events.iter().any(|e| e["type"] == last).then_some(events)
            },
        )
    }
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The events of one job that ended, in the order they must come: queued, started, its
/// phases, its end.
fn assert_in_order(events: &[Value], end: &str) {
    let names = types(events);
    assert_eq!(names.first(), Some(&"job.queued"), "{names:?}");
    assert_eq!(names.get(1), Some(&"job.started"), "{names:?}");
    assert_eq!(names.last(), Some(&end), "{names:?}");
    assert!(
        names[2..names.len() - 1].iter().all(|n| *n == "job.phase"),
        "{names:?}"
    );
    assert!(names.len() >= 5, "too few phases: {names:?}");
}

const SCRIPT: &str = "echo more >> README.md";

#[test]
fn every_transition_arrives_verified_in_order_through_failures_and_a_kill() {
    let Some(python) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let (_server, repo_url) = serve_app_repo(root.path());
    let data = root.path().join("api");
    let mut api = Api::start(&data);
    let dev = Developer::new(&api, root.path(), "dev@example.com", &repo_url);
    let receiver = Receiver::start(&python);

    // Bad input first: the CLI names what was wrong (a usage error, status 2), and so does
    // the API for a URL its policy refuses.
    let out = dev
        .cli
        .command(
            &dev.clone,
            &[
                "cloud",
                "webhooks",
                "add",
                &receiver.url,
                "--events",
                "job.done",
            ],
        )
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{error}");
    assert!(error.contains("job.done"), "{error}");
    let error = dev.cli.fails(
        &dev.clone,
        &["cloud", "webhooks", "add", "https://u:p@hooks.localhost/"],
    );
    assert!(error.contains("credentials"), "{error}");

    let added: Value = serde_json::from_str(&dev.cli.ok(
        &dev.clone,
        &[
            "cloud",
            "webhooks",
            "add",
            &receiver.url,
            "--events",
            "*",
            "--json",
        ],
    ))
    .unwrap();
    let hook = added["id"].as_str().unwrap().to_owned();
    let secret = added["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{added}");
    receiver.trust(&[&secret]);
    let listed = dev.cli.ok(&dev.clone, &["cloud", "webhooks", "list"]);
    assert!(
        listed.contains(&hook) && !listed.contains(&secret),
        "{listed}"
    );

    // 1. A job: each transition once, in order, verified by the reference library.
    let first = dev.dispatch(&repo_url, SCRIPT);
    dev.cli.finished(&dev.clone, &first);
    let events = receiver.events_of_until(&first, "job.succeeded");
    assert_in_order(&events, "job.succeeded");
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "a repeat without a failure");

    // 2. The receiver fails, then recovers: every event comes once more, in order.
    receiver.answer("fail");
    let second = dev.dispatch(&repo_url, SCRIPT);
    dev.cli.finished(&dev.clone, &second);
    let deliveries = dev.cli.ok(
        &dev.clone,
        &[
            "cloud",
            "webhooks",
            "deliveries",
            "--job",
            &second,
            "--json",
        ],
    );
    assert!(deliveries.contains("500"), "{deliveries}");
    assert!(
        receiver
            .received()
            .iter()
            .all(|e| e["job"] != second.as_str()),
        "a failed answer was recorded as received"
    );
    receiver.answer("ok");
    let events = receiver.events_of_until(&second, "job.succeeded");
    assert_in_order(&events, "job.succeeded");

    // 3. The API is killed while deliveries are under way: after a restart, none is lost.
    receiver.answer("slow 1");
    let third = dev.dispatch(&repo_url, SCRIPT);
    wait_for("the first event to arrive", Duration::from_secs(60), || {
        receiver
            .received()
            .iter()
            .any(|e| e["job"] == third.as_str())
            .then_some(())
    });
    api.kill();
    let port = api.port();
    drop(api);
    receiver.answer("ok");
    let api = Api::start_on(
        &data,
        &format!("127.0.0.1:{port}"),
        &["--allow-local-repos"],
    );
    let job = dev.cli.finished(&dev.clone, &third);
    let end = format!("job.{}", job["status"].as_str().unwrap());
    let events = receiver.events_of_until(&third, &end);
    let names = types(&events);
    assert_eq!(names.first(), Some(&"job.queued"), "{names:?}");
    // Every delivery the API wrote for the job reached the receiver.
    let (status, list) = api.call(
        "GET",
        &dev.token,
        &format!("/v1/webhooks/deliveries?job={third}&limit=100"),
    );
    assert_eq!(status, 200, "{list}");
    let written = list["deliveries"].as_array().unwrap();
    wait_for(
        "every delivery to be delivered",
        Duration::from_secs(60),
        || {
            let (_, list) = api.call(
                "GET",
                &dev.token,
                &format!("/v1/webhooks/deliveries?job={third}&limit=100"),
            );
            list["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["status"] == "delivered")
                .then_some(())
        },
    );
    let received: Vec<Value> = receiver
        .received()
        .into_iter()
        .filter(|e| e["job"] == third.as_str())
        .collect();
    for delivery in written {
        assert!(
            received.iter().any(|e| e["id"] == delivery["id"]),
            "lost {delivery}"
        );
    }

    // 4. Rotation: the receiver still trusting only the old secret verifies, and so does
    // one trusting only the new.
    let rotated: Value = serde_json::from_str(&dev.cli.ok(
        &dev.clone,
        &["cloud", "webhooks", "rotate", &hook, "--json"],
    ))
    .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let fourth = dev.dispatch(&repo_url, SCRIPT);
    receiver.events_of_until(&fourth, "job.started");
    receiver.trust(&[&new_secret]);
    let events = receiver.events_of_until(&fourth, "job.succeeded");
    assert_in_order(&events, "job.succeeded");

    // 5. The operator's webhook hears every account's jobs.
    let operator = Receiver::start(&python);
    let out = api.admin(&[
        "webhooks",
        "add",
        &operator.url,
        "--events",
        "job.succeeded",
        "--allow-local-repos",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let operator_secret = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    operator.trust(&[&operator_secret]);
    let fifth = dev.dispatch(&repo_url, SCRIPT);
    let events = operator.events_of_until(&fifth, "job.succeeded");
    assert_eq!(types(&events), ["job.succeeded"]);
    // The account does not see it.
    let listed = dev
        .cli
        .ok(&dev.clone, &["cloud", "webhooks", "list", "--json"]);
    assert!(!listed.contains(&operator.url), "{listed}");
}
