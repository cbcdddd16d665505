//! Attempt groups through the real binaries (`ckrv`, `ckrv-api` with local workers,
//! `ckrv-orchestrator`, bubblewrap; docs/attempts.md): `ckrv run --cloud --attempts 3` runs one
//! spec three times side by side; the attempt that makes the project's check pass is ranked
//! best, `ckrv status GROUP` says why, and `ckrv pull GROUP` applies it. Also: showing and
//! pulling another attempt (`ckrv diff GROUP --attempt K`), cancelling a group, stopping the rest once one is verified, and an agent the server
//! cannot run refused at submission with the reason.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ckrv_e2e::{Developer, SandboxedStage};

/// The project's check: passes when `calc.txt` holds the right sum.
const CHECK: &str =
    "grep -q '2+2=4' calc.txt && echo 'sum: ok' || { echo 'sum: FAILED'; exit 1; }\n";

const APP: [(&str, &str); 3] = [
    ("calc.txt", "2+2=5\n"),
    ("check.sh", CHECK),
    (".ckrv/environment.toml", "verify = \"sh check.sh\"\n"),
];

/// A script each attempt runs: attempt 2 fixes the sum, the others add a note and leave the
/// check failing.
const SPEC: &str = "---\nagent: script\nrun: |\n  if [ \"$CKRV_ATTEMPT\" = 2 ]; then sed -i 's/2+2=5/2+2=4/' calc.txt; else echo \"note $CKRV_ATTEMPT\" > notes.txt; fi\n---\n# Fix the sum\n";

fn dispatch(dev: &Developer, repo_url: &str, spec: &str, flags: &[&str]) -> serde_json::Value {
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    std::fs::write(dev.clone.join("specs/fix.md"), spec).unwrap();
    let mut args = vec![
        "run",
        "--cloud",
        "--spec",
        "specs/fix.md",
        "--repo",
        repo_url,
        "--base-branch",
        "main",
        "--json",
    ];
    args.extend_from_slice(flags);
    serde_json::from_str(&dev.cli.ok(&dev.clone, &args)).unwrap()
}

/// The group once every attempt has ended, as `ckrv status GROUP --json` shows it.
fn ended(dev: &Developer, id: &str) -> serde_json::Value {
    dev.cli
        .group_finished(&dev.clone, id, Duration::from_secs(180))
}

#[test]
fn the_attempt_whose_change_passes_the_check_wins_and_pull_group_applies_it() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let stage = SandboxedStage::start(tmp.path(), "calc", &APP, &["--max-running", "3"]);
    let (dev, repo_url) = (&stage.dev, stage.repo_url.as_str());

    let made = dispatch(dev, repo_url, SPEC, &["--attempts", "3"]);
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["attempts"].as_array().unwrap().len(), 3, "{made}");
    let group = ended(dev, &id);
    let best = &group["attempts"][0];
    assert_eq!(best["attempt"], 2, "{group}");
    assert_eq!(best["verified"], true, "{group}");
    assert_eq!(group["winner"], best["id"]);
    assert_eq!(
        group["reason"],
        "verified by the project's check; attempt 1 failed its check"
    );
    for attempt in &group["attempts"].as_array().unwrap()[1..] {
        assert_eq!(attempt["state"], "succeeded", "{attempt}");
        assert_eq!(attempt["verified"], false, "{attempt}");
    }

    // A person sees the ranking and why the best won.
    let shown = dev.cli.ok(&dev.clone, &["status", &id[..8]]);
    for said in [
        "RANK  ATTEMPT  AGENT   STATE      VERIFIED",
        "Best: attempt 2: verified by the project's check; attempt 1 failed its check",
        "Pull the best:   ckrv pull ",
    ] {
        assert!(shown.contains(said), "{said}:\n{shown}");
    }
    let first_row = shown.lines().find(|l| l.contains("▌ 1 ")).unwrap();
    assert!(
        first_row.contains(" 2 ") && first_row.contains("yes"),
        "{shown}"
    );

    // Another attempt, looked at without applying it; then the best, applied.
    let other = dev.cli.ok(
        &dev.clone,
        &["pull", &id[..8], "--attempt", "3", "--check", "--json"],
    );
    assert!(other.contains("notes.txt"), "{other}");
    let shown = dev
        .cli
        .ok(&dev.clone, &["diff", &id[..8], "--attempt", "3"]);
    assert!(
        shown.starts_with("diff --git a/notes.txt b/notes.txt") && shown.contains("+note 3"),
        "{shown}"
    );
    let best = dev.cli.ok(&dev.clone, &["diff", &id[..8]]);
    assert!(best.contains("-2+2=5\n+2+2=4"), "{best}");
    let pulled = dev.cli.ok(&dev.clone, &["pull", &id[..8]]);
    assert!(
        pulled.contains("Pulling attempt 2 of group") && pulled.contains("the best: verified"),
        "{pulled}"
    );
    assert_eq!(
        std::fs::read_to_string(dev.clone.join("calc.txt")).unwrap(),
        "2+2=4\n"
    );
    assert!(!dev.clone.join("notes.txt").exists());
    let missing = dev
        .cli
        .fails(&dev.clone, &["pull", &id[..8], "--attempt", "7"]);
    assert!(missing.contains("has no attempt 7"), "{missing}");

    // An agent this server cannot run (no key for it) is refused before any attempt is made.
    let refused = dev.cli.fails(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            "specs/fix.md",
            "--repo",
            repo_url,
            "--base-branch",
            "main",
            "--agents",
            "script,claude-code",
        ],
    );
    assert!(
        refused.contains("agent claude-code: spec_content: "),
        "{refused}"
    );

    // Cancelling a group cancels every attempt still waiting or running.
    let slow = "---\nagent: script\nrun: sleep 60\n---\n# Slow\n";
    let made = dispatch(dev, repo_url, slow, &["--attempts", "2"]);
    let slow_id = made["id"].as_str().unwrap().to_string();
    let cancelled = dev.cli.ok(&dev.clone, &["cancel", &slow_id]);
    assert!(
        cancelled.contains("2 of 2 attempts cancelled"),
        "{cancelled}"
    );
    let again = dev.cli.fails(&dev.clone, &["cancel", &slow_id]);
    assert!(again.contains("has already ended"), "{again}");

    // With --stop-at-first-verified, the slow attempt stops once the quick one is verified.
    let race = "---\nagent: script\nrun: |\n  if [ \"$CKRV_ATTEMPT\" = 1 ]; then sed -i 's/2+2=5/2+2=4/' calc.txt; else sleep 60; fi\n---\n# Race\n";
    let made = dispatch(
        dev,
        repo_url,
        race,
        &["--attempts", "2", "--stop-at-first-verified"],
    );
    let group = ended(dev, made["id"].as_str().unwrap());
    let slow = group["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["attempt"] == 2)
        .unwrap();
    assert_eq!(slow["state"], "cancelled", "{group}");
    assert!(
        slow["error_message"]
            .as_str()
            .unwrap()
            .contains("was verified first"),
        "{slow}"
    );
    assert_eq!(group["winner"], group["attempts"][0]["id"]);
}
