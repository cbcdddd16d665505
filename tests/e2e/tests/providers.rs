//! Swappable providers through the real binaries: a provider built from the template outside
//! the workspace is installed, chosen with `--provider` and runs the quickstart; what the
//! registry refuses (a damaged file, a wrong digest, an unknown name) says what to do.

#![allow(clippy::unwrap_used)]

use ckrv_e2e::{
    Api, Cli, build_outside_workspace, git, repository_root, script_spec, serve_app_repo,
};

#[test]
fn a_provider_from_the_template_installs_and_runs_the_quickstart() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let built = root.join("built");
    std::fs::create_dir_all(&built).unwrap();
    let wasm = build_outside_workspace(
        &repository_root().join("plugins/template"),
        &built,
        Some("ckrv-provider-acme"),
    );

    let (_repos, repo_url) = serve_app_repo(root);
    let api = Api::start(&root.join("api"));
    let cli = Cli::new(api.url.clone(), root.join("home"));
    let work = root.join("work");
    git(root, &["clone", "-q", &repo_url, work.to_str().unwrap()]);

    // Not installed yet: the error lists what is.
    let err = cli.fails(&work, &["--provider", "acme", "cloud", "whoami"]);
    assert!(
        err.contains("unknown provider 'acme': installed are chakravarti")
            && err.contains("ckrv plugin install"),
        "{err}"
    );

    // A wrong digest installs nothing.
    let wasm_path = wasm.to_str().unwrap();
    let err = cli.fails(
        &work,
        &["plugin", "install", wasm_path, "--sha256", &"0".repeat(64)],
    );
    assert!(err.contains("nothing was installed"), "{err}");

    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&wasm).unwrap(),
    ));
    let installed = cli.ok(
        &work,
        &["plugin", "install", wasm_path, "--sha256", &digest],
    );
    assert!(
        installed.contains("Installed plugin acme 0.1.0 (ckrv:cloud@0.5.0)"),
        "{installed}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&cli.ok(&work, &["plugin", "list", "--json"])).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chakravarti", "acme"]);
    assert_eq!(listed[1]["sha256"], digest.as_str());
    assert_eq!(listed[1]["world"], "0.5.0");
    assert_eq!(listed[1]["origins"], serde_json::json!([]));
    let table = cli.ok(&work, &["plugin", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("acme") && l.contains(&digest[..12])),
        "{table}"
    );

    // The quickstart through the installed plugin, chosen by the environment this time.
    api.add_user("dev@example.com", ckrv_test_support::PASSWORD);
    cli.login_to(&work, "acme", &api.token("dev@example.com"));
    let whoami = cli.ok(&work, &["--provider", "acme", "cloud", "whoami"]);
    assert!(whoami.contains("Provider: acme"), "{whoami}");
    // config.toml's `provider` chooses it too.
    std::fs::write(
        root.join("home/config/config.toml"),
        "provider = \"acme\"\n",
    )
    .unwrap();
    let whoami = cli.ok(&work, &["cloud", "whoami"]);
    assert!(whoami.contains("Provider: acme"), "{whoami}");
    std::fs::remove_file(root.join("home/config/config.toml")).unwrap();
    std::fs::create_dir_all(work.join("specs")).unwrap();
    std::fs::write(
        work.join("specs/hello.md"),
        script_spec("Hello", "echo 'hello from acme' > HELLO.md\necho wrote it"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        cli.command(&work, args)
            .env("CKRV_PROVIDER", "acme")
            .output()
            .unwrap()
    };
    let out = run(&["run", "--cloud", "--spec", "specs/hello.md", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = job["id"].as_str().unwrap();
    let out = run(&["wait", id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["logs", id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote it"));
    let out = run(&["pull", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(work.join("HELLO.md")).unwrap(),
        "hello from acme\n"
    );

    // The conformance kit passes for the template's provider and for the built-in one.
    cli.login_to(&work, "chakravarti", &api.token("dev@example.com"));
    for provider in ["acme", "chakravarti"] {
        let out = cli.run(&work, &["plugin", "check", provider, "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["passed"], true, "{provider}: {report:#}");
        assert_eq!(out.status.code(), Some(0));
        let names: Vec<&str> = report["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for point in [
            "dispatch",
            "dispatch: idempotency",
            "logs: cursor",
            "pull: diff",
        ] {
            assert!(names.contains(&point), "{provider}: {names:?}");
        }
    }
    let table = cli.ok(&work, &["plugin", "check", "acme"]);
    assert!(table.contains("PASS  dispatch"), "{table}");
    // A backend whose job fails is reported point by point, with exit status 1.
    std::fs::write(
        work.join("specs/broken.md"),
        script_spec("Broken", "exit 1"),
    )
    .unwrap();
    let out = cli.run(
        &work,
        &["plugin", "check", "acme", "--spec", "specs/broken.md"],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("FAIL  pull: diff") && table.contains("the job ended failed"),
        "{table}"
    );

    // A plugin file changed after install is refused, naming the fix.
    let installed_file = root.join("home/config/plugins/acme/plugin.wasm");
    let mut bytes = std::fs::read(&installed_file).unwrap();
    bytes.push(0);
    std::fs::write(&installed_file, bytes).unwrap();
    let err = cli.fails(&work, &["--provider", "acme", "status", id]);
    assert!(
        err.contains("plugin acme is damaged") && err.contains("--force"),
        "{err}"
    );

    // Removed, it is gone; the built-in one cannot be removed.
    cli.ok(&work, &["plugin", "remove", "acme"]);
    let err = cli.fails(&work, &["--provider", "acme", "status", id]);
    assert!(err.contains("unknown provider 'acme'"), "{err}");
    let err = cli.fails(&work, &["plugin", "remove", "chakravarti"]);
    assert!(err.contains("cannot be removed"), "{err}");

    // Not a component at all.
    let junk = root.join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let err = cli.fails(&work, &["plugin", "install", junk.to_str().unwrap()]);
    assert!(err.contains("is not a WebAssembly component"), "{err}");
}
