//! A job's verification through the real binaries (`ckrv`, `ckrv-api` with local workers,
//! `ckrv-orchestrator`, bubblewrap; docs/verification.md): the repository's `verify` runs in
//! the sandbox after the agent, in phase `verifying`, and writes a JUnit report. An agent that
//! fixes the project's check gets `verified: true` with its test counts; one that leaves it
//! broken still succeeds, with `verified: false`, its diff kept and the check's last lines in
//! `ckrv status`. A spec's own `verify` wins over the repository's; one that runs past the
//! operator's `--verify-timeout` is stopped, and cannot reach the network meanwhile.
#![allow(clippy::unwrap_used)]

use ckrv_e2e::{Developer, SandboxedStage, serve_repo};

/// The project's check: passes when `calc.txt` holds the right sum; writes a JUnit report of
/// its two tests either way.
const CHECK: &str = r#"mkdir -p report
if grep -q '2+2=4' calc.txt; then sum='<testcase name="sum"/>'; ok=1
else sum='<testcase name="sum"><failure message="2+2 is not 5"/></testcase>'; ok=0; fi
printf '<testsuites><testsuite name="calc"><testcase name="adds"/>%s<testcase name="later"><skipped/></testcase></testsuite></testsuites>\n' "$sum" > report/junit.xml
echo "check ran in $(pwd)"
if [ "$ok" = 1 ]; then echo "sum: ok"; else echo "sum: FAILED, 2+2 is not 5"; exit 3; fi
"#;

const ENVIRONMENT: &str = "verify = \"sh check.sh\"\nverify_junit = \"report/junit.xml\"\n\n[env]\nCALC_MODE = \"strict\"\n";

const APP: [(&str, &str); 3] = [
    ("calc.txt", "2+2=5\n"),
    ("check.sh", CHECK),
    (".ckrv/environment.toml", ENVIRONMENT),
];

/// Runs `spec` on the repository as `dev`; the finished job (`ckrv status --json`), its log
/// and `ckrv status`.
fn run(dev: &Developer, repo_url: &str, name: &str, spec: &str) -> (serde_json::Value, String) {
    std::fs::create_dir_all(dev.clone.join("specs")).unwrap();
    let path = format!("specs/{name}.md");
    std::fs::write(dev.clone.join(&path), spec).unwrap();
    let out = dev.cli.ok(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            &path,
            "--repo",
            repo_url,
            "--base-branch",
            "main",
            "--json",
        ],
    );
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = dev.cli.finished(&dev.clone, &id);
    let log = dev.cli.ok(&dev.clone, &["logs", &id]);
    let status = dev.cli.ok(&dev.clone, &["status", &id]);
    assert_eq!(job["state"], "succeeded", "{job}\n{log}");
    (job, format!("{log}\n{status}"))
}

fn script(title: &str, run: &str, extra: &str) -> String {
    format!("---\nagent: script\nrun: |\n  {run}\n{extra}---\n# {title}\n")
}

#[test]
fn the_change_that_passes_the_projects_check_is_verified_and_one_that_does_not_is_kept_unverified()
{
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let stage = SandboxedStage::start(root, "calc", &APP, &["--verify-timeout", "3s"]);
    let (api, dev, repo_url) = (&stage.api, &stage.dev, stage.repo_url.as_str());

    // The fix: verified, with the report's counts, and nothing the check wrote in the change.
    let fix = script("Fix the sum", "sed -i 's/2+2=5/2+2=4/' calc.txt", "");
    let (job, said) = run(dev, repo_url, "fix", &fix);
    assert_eq!(job["verified"], true, "{job}\n{said}");
    let found = &job["verification"];
    assert_eq!(found["verdict"], "passed", "{found}");
    assert_eq!(found["command"], "sh check.sh");
    assert_eq!(found["exit_code"], 0);
    assert_eq!(
        found["tests"],
        serde_json::json!({"passed": 2, "failed": 0, "skipped": 1})
    );
    assert!(
        found["last_lines"]
            .as_array()
            .unwrap()
            .contains(&"sum: ok".into()),
        "{found}"
    );
    for line in [
        "Verifying the change: sh check.sh",
        "sum: ok",
        "Verified: yes — `sh check.sh` passed in ",
        "(2 passed, 0 failed, 1 skipped)",
    ] {
        assert!(said.contains(line), "{line}: {said}");
    }
    let changed: Vec<&str> = job["diff_stats"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["calc.txt"], "the report is no part of the change");

    // A change that leaves the check failing: the job succeeds, unverified, its diff kept, and
    // `ckrv status` shows why.
    let other = script("Add notes", "echo 'notes' > notes.txt", "");
    let (job, said) = run(dev, repo_url, "notes", &other);
    assert_eq!(job["verified"], false, "{job}\n{said}");
    let found = &job["verification"];
    assert_eq!(found["verdict"], "failed");
    assert_eq!(found["exit_code"], 3);
    assert_eq!(
        found["tests"],
        serde_json::json!({"passed": 1, "failed": 1, "skipped": 1})
    );
    assert!(
        said.contains("Verified: no — `sh check.sh` failed: exit status 3 in ")
            && said.contains("  Its last lines:")
            && said.contains("    sum: FAILED, 2+2 is not 5"),
        "{said}"
    );
    assert_eq!(job["diff_stats"]["files"][0]["path"], "notes.txt");
    let pulled = dev
        .cli
        .run(&dev.clone, &["pull", job["id"].as_str().unwrap()]);
    assert!(pulled.status.success(), "{pulled:?}");
    assert_eq!(
        std::fs::read_to_string(dev.clone.join("notes.txt")).unwrap(),
        "notes\n"
    );

    // The spec's own check wins over the repository's. Past the operator's limit it is
    // stopped; the job still succeeds. It never reaches the network, not even the API on
    // loopback.
    let slow = script(
        "Slow check",
        "echo more >> calc.txt",
        &format!(
            "verify: curl -s --max-time 1 {}/healthz && echo \"reached-$((40 + 2))\"; sleep 30\n",
            api.url
        ),
    );
    let (job, said) = run(dev, repo_url, "slow", &slow);
    assert_eq!(job["verified"], false, "{job}\n{said}");
    assert_eq!(job["verification"]["verdict"], "timed_out", "{job}");
    assert!(
        job["verification"]["command"]
            .as_str()
            .unwrap()
            .starts_with("curl"),
        "{job}"
    );
    assert!(
        said.contains("timed out after 3.") && said.contains("--verify-timeout"),
        "{said}"
    );
    assert!(!said.contains("reached-42"), "{said}");

    // A bad `verify_junit` is refused when the job is submitted, naming the key.
    std::fs::write(
        dev.clone.join("specs/bad.md"),
        script("Bad", "true", "verify: t\nverify_junit: ../../etc/passwd\n"),
    )
    .unwrap();
    let refused = dev.cli.fails(
        &dev.clone,
        &[
            "run",
            "--cloud",
            "--spec",
            "specs/bad.md",
            "--repo",
            repo_url,
            "--base-branch",
            "main",
        ],
    );
    assert!(
        refused.contains("`verify_junit` `../../etc/passwd` leaves the workspace"),
        "{refused}"
    );

    // A job without a check never enters phase `verifying` and says nothing of it.
    let plain_repo = serve_repo(root, "plain", &[("README.md", "# plain\n")]);
    let plain = Developer::new(api, root, "plain@example.com", &plain_repo.1);
    let (job, said) = run(
        &plain,
        &plain_repo.1,
        "plain",
        &script("Plain", "echo x >> README.md", ""),
    );
    assert!(
        job["verification"].is_null() && job["verified"].is_null(),
        "{job}"
    );
    assert!(!said.contains("Verif"), "{said}");
}
