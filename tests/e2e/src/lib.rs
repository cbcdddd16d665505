//! The stage for end-to-end tests and benchmarks: the real `ckrv`, `ckrv-api` and
//! `ckrv-orchestrator` binaries, a git repository served over HTTP on loopback, a running API.
//! It panics with a message on anything unexpected, as a test harness should.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use ckrv_test_support::{StaticServer, create_served_repo, git};

/// A built binary of this workspace, from the same `target/<profile>` as the running executable
/// (a test in `target/<profile>/deps`, or the benchmark next to the binaries). `cargo test`
/// builds every default member's binaries before running tests.
pub fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build` (or `cargo test` for the whole workspace) first",
        path.display()
    );
    path
}

/// `target/<profile>`, where this workspace's binaries are.
fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let mut dir = exe.parent().expect("executable lives in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps lives in target/<profile>");
    }
    dir.to_path_buf()
}

/// A spec for the `script` agent that runs `script` in the workspace.
pub fn script_spec(title: &str, script: &str) -> String {
    let indented: String = script.lines().map(|l| format!("  {l}\n")).collect();
    format!("---\nagent: script\nrun: |\n{indented}---\n# {title}\n")
}

/// A running `ckrv-api serve` on an ephemeral loopback port; killed on drop.
pub struct Api {
    pub url: String,
    pub data_dir: PathBuf,
    /// The server's `DATABASE_URL`, when it was given one: the operator's commands against
    /// its data need it too.
    database_url: Option<std::ffi::OsString>,
    child: Child,
}

impl Api {
    /// `ckrv-api users token EMAIL`: a personal access token, printed alone on stdout.
    pub fn token(&self, email: &str) -> String {
        let out = self
            .operator()
            .args(["users", "token", email, "--data-dir"])
            .arg(&self.data_dir)
            .output()
            .expect("ckrv-api users token runs");
        assert!(
            out.status.success(),
            "users token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `ckrv-api`, as the operator runs it against this API's data (on its database).
    fn operator(&self) -> Command {
        let mut command = Command::new(binary("ckrv-api"));
        if let Some(url) = &self.database_url {
            command.env("DATABASE_URL", url);
        }
        command
    }

    /// `ckrv-api ARGS --data-dir DIR`, an operator's command against this API's data.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.operator()
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("ckrv-api runs")
    }

    /// `POST /v1/jobs/{id}/cancel` as the holder of `token`; returns the HTTP status.
    pub fn cancel(&self, token: &str, id: &str) -> u16 {
        self.call("POST", token, &format!("/v1/jobs/{id}/cancel")).0
    }

    /// One request to the API as the holder of `token`: the status and the JSON body (`Null`
    /// when there is none).
    pub fn call(&self, method: &str, token: &str, path: &str) -> (u16, serde_json::Value) {
        self.send(method, token, path, None)
    }

    /// As [`Api::call`], with a JSON body.
    pub fn send(
        &self,
        method: &str,
        token: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for one request");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        runtime.block_on(async {
            let mut request = reqwest::Client::new()
                .request(method, format!("{}{path}", self.url))
                .bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("the API answers");
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(serde_json::Value::Null);
            (status, body)
        })
    }

    /// Kills the API at once (SIGKILL): nothing of it gets to clean up.
    pub fn kill(&mut self) {
        self.child.kill().expect("ckrv-api can be killed");
        self.child.wait().expect("ckrv-api can be waited for");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("the API's URL ends in its port")
    }

    /// Sends `signal` (`TERM`, `INT`) to the API and waits (at most 60 s) for it to exit.
    pub fn stop_with(&mut self, signal: &str) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -s {signal}");
        wait_for("ckrv-api to exit", Duration::from_secs(60), || {
            self.child.try_wait().expect("ckrv-api can be waited for")
        })
    }

    /// `ckrv-api users add EMAIL --password-stdin`, as an administrator runs it.
    pub fn add_user(&self, email: &str, password: &str) {
        let mut child = self
            .operator()
            .args(["users", "add", email, "--password-stdin", "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ckrv-api users add starts");
        let mut stdin = child.stdin.take().expect("piped stdin");
        std::io::Write::write_all(&mut stdin, password.as_bytes()).expect("password sent");
        drop(stdin);
        let out = child.wait_with_output().expect("ckrv-api users add ends");
        assert!(
            out.status.success(),
            "users add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The API as a developer runs it on one machine: the test's repositories are served on
    /// loopback, so local repositories are allowed.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &["--allow-local-repos"])
    }

    /// The API as a shared service runs it: only public repositories.
    pub fn start_strict(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// `ckrv-api serve` with extra flags.
    pub fn start_with(data_dir: &Path, flags: &[&str]) -> Self {
        Self::start_on(data_dir, "127.0.0.1:0", flags)
    }

    /// `ckrv-api serve --listen LISTEN` with extra flags: how a restart comes back on the port
    /// its workers know.
    pub fn start_on(data_dir: &Path, listen: &str, flags: &[&str]) -> Self {
        Self::start_in_env(data_dir, listen, flags, &[])
    }

    /// `ckrv-api serve` with extra flags and environment variables (e.g. `AWS_*`).
    pub fn start_in_env(
        data_dir: &Path,
        listen: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(data_dir, listen, flags, env, Stdio::inherit())
    }

    /// `ckrv-api serve` with extra flags, its log (standard error) written to `log`, for tests
    /// that read what the operator would see.
    pub fn start_logging(data_dir: &Path, flags: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("creating the API's log file");
        Self::spawn(data_dir, "127.0.0.1:0", flags, &[], Stdio::from(file))
    }

    /// `ckrv-api serve` as installed: the program `ckrv_api` with nothing but `flags` (no
    /// `--orchestrator`: it finds its worker itself) and `PATH` set to `path`.
    pub fn start_installed(ckrv_api: &Path, data_dir: &Path, flags: &[&str], path: &str) -> Self {
        let mut command = Command::new(ckrv_api);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(flags)
            .env("PATH", path);
        Self::run(command, data_dir, Stdio::inherit())
    }

    fn spawn(
        data_dir: &Path,
        listen: &str,
        flags: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let mut command = Command::new(binary("ckrv-api"));
        command.envs(env.iter().copied());
        command
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir);
        // Local workers unless the test runs its own.
        if !flags.contains(&"--external-workers") {
            command
                .arg("--orchestrator")
                .arg(binary("ckrv-orchestrator"));
        }
        command.args(flags);
        Self::run(command, data_dir, stderr)
    }

    /// Starts `command` (a `ckrv-api serve`) and waits for the URL it prints.
    fn run(mut command: Command, data_dir: &Path, stderr: Stdio) -> Self {
        let database_url = command
            .get_envs()
            .find(|(name, _)| *name == "DATABASE_URL")
            .and_then(|(_, value)| value.map(std::ffi::OsStr::to_os_string));
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("ckrv-api starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        break url.to_string();
                    }
                }
                _ => panic!("ckrv-api exited before printing `listening on <url>`"),
            }
        };
        // Keep draining stdout so the API never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self {
            url,
            data_dir: data_dir.to_path_buf(),
            database_url,
            child,
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ckrv` with its own config and cache directories, pointed at `api_url`.
pub struct Cli {
    pub api_url: String,
    pub home: PathBuf,
    /// The `ckrv` that runs: this workspace's build, or an installed copy.
    program: PathBuf,
}

impl Cli {
    /// This workspace's `ckrv`, at home in `home`.
    pub fn new(api_url: impl Into<String>, home: impl Into<PathBuf>) -> Self {
        Self {
            api_url: api_url.into(),
            home: home.into(),
            program: binary("ckrv"),
        }
    }

    /// The same, running the `ckrv` at `program` (an installed one).
    pub fn using(self, program: PathBuf) -> Self {
        Self { program, ..self }
    }

    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.current_dir(cwd)
            .args(args)
            .env("CKRV_API_URL", &self.api_url)
            .env("CKRV_CONFIG_DIR", self.home.join("config"))
            .env("CKRV_CACHE_DIR", self.home.join("cache"))
            // No keyring: the session goes to the test's own config directory, never into
            // the keyring of the person running the tests.
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                "unix:path=/nonexistent/ckrv-test-bus",
            )
            .env_remove("CKRV_TOKEN");
        // No desktop: `ckrv cloud login` never opens the browser of the person running tests.
        for name in ["DISPLAY", "WAYLAND_DISPLAY", "BROWSER"] {
            cmd.env_remove(name);
        }
        cmd
    }

    pub fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd, args).output().expect("ckrv runs")
    }

    /// `ckrv cloud login --with-token`, the token on standard input.
    /// `ckrv cloud credentials add --name NAME --host HOST` with `secret` piped to it, as typed
    /// at its prompt; its output.
    pub fn add_credential(&self, cwd: &Path, name: &str, host: &str, secret: &str) -> Output {
        let mut add = self
            .command(
                cwd,
                &[
                    "cloud",
                    "credentials",
                    "add",
                    "--name",
                    name,
                    "--host",
                    host,
                ],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ckrv starts");
        if let Some(mut stdin) = add.stdin.take() {
            std::io::Write::write_all(&mut stdin, format!("{secret}\n").as_bytes())
                .expect("the secret is written");
        }
        add.wait_with_output().expect("ckrv ends")
    }

    pub fn login_with_token(&self, cwd: &Path, token: &str) {
        self.login_to(cwd, "chakravarti", token);
    }

    /// As [`Cli::login_with_token`], with the provider plugin `provider`.
    pub fn login_to(&self, cwd: &Path, provider: &str, token: &str) {
        let mut child = self
            .command(
                cwd,
                &["--provider", provider, "cloud", "login", "--with-token"],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ckrv runs");
        let mut stdin = child.stdin.take().expect("piped stdin");
        std::io::Write::write_all(&mut stdin, token.as_bytes()).expect("token sent");
        drop(stdin);
        let out = child.wait_with_output().expect("ckrv ends");
        assert!(
            out.status.success(),
            "login --with-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs and insists on failure, returning stderr.
    pub fn fails(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "ckrv {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Waits until the job has ended and returns it as `ckrv status --json` shows it.
    pub fn finished(&self, cwd: &Path, id: &str) -> serde_json::Value {
        wait_for(
            &format!("job {id} to end"),
            Duration::from_secs(120),
            || {
                let job: serde_json::Value =
                    serde_json::from_str(&self.ok(cwd, &["status", id, "--json"])).ok()?;
                let state = job["state"].as_str()?.to_string();
                (!matches!(state.as_str(), "pending" | "running")).then_some(job)
            },
        )
    }

    /// Waits until every attempt of group `id` has ended (at most `limit`) and returns the
    /// group as `ckrv status GROUP --json` shows it (docs/attempts.md).
    pub fn group_finished(&self, cwd: &Path, id: &str, limit: Duration) -> serde_json::Value {
        wait_for(&format!("group {id} to end"), limit, || {
            let group: serde_json::Value =
                serde_json::from_str(&self.ok(cwd, &["status", id, "--json"])).ok()?;
            group["attempts"]
                .as_array()?
                .iter()
                .all(|j| !matches!(j["state"].as_str(), Some("pending" | "running")))
                .then_some(group)
        })
    }

    /// Runs and insists on success, returning stdout.
    pub fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.run(cwd, args);
        assert!(
            out.status.success(),
            "ckrv {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Someone with an account on the API, a clone of the repository, and `ckrv` logged in with a
/// personal access token.
pub struct Developer {
    pub cli: Cli,
    pub clone: PathBuf,
    pub token: String,
}

impl Developer {
    /// Adds `email`'s account and sets up its `ckrv` under `root/<local part>`.
    pub fn new(api: &Api, root: &Path, email: &str, repo_url: &str) -> Self {
        let name = email.split('@').next().unwrap_or(email);
        api.add_user(email, ckrv_test_support::PASSWORD);
        let token = api.token(email);
        let cli = Cli::new(api.url.clone(), root.join(name));
        let clone = root.join(format!("{name}-clone"));
        git(root, &["clone", "-q", repo_url, &clone.to_string_lossy()]);
        cli.login_with_token(&clone, &token);
        Self { cli, clone, token }
    }

    /// Dispatches a job running `script` on `repo_url`; returns its id.
    pub fn dispatch(&self, repo_url: &str, script: &str) -> String {
        dispatch_script(&self.cli, &self.clone, repo_url, script)
    }
}

/// Writes a spec running `script` into the developer's clone `work` and dispatches it with
/// `ckrv run --cloud` against `repo_url`; returns the job id.
pub fn dispatch_script(cli: &Cli, work: &Path, repo_url: &str, script: &str) -> String {
    std::fs::create_dir_all(work.join("specs")).expect("specs directory");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("specs/{}.md", std::process::id() ^ nanos);
    std::fs::write(work.join(&name), script_spec("Task", script)).expect("spec written");
    let out = cli.ok(
        work,
        &[
            "run",
            "--cloud",
            "--spec",
            &name,
            "--repo",
            repo_url,
            "--base-branch",
            "main",
            "--json",
        ],
    );
    let job: serde_json::Value = serde_json::from_str(&out).expect("run --json prints the job");
    job["id"].as_str().expect("the job has an id").to_string()
}

/// The command lines of this machine's processes that contain `needle`.
pub fn processes_matching(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

/// Polls `check` until it returns `Some`, failing after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Builds the standalone step crate at `source` (a directory of this repository, such as the
/// step template) as its author would: copied outside this workspace with `cp -rL`, then plain
/// `cargo build --release --target wasm32-wasip2`. Returns the component's path. The build
/// directory is kept under `target/standalone-steps`, so later runs are quick.
pub fn build_step_outside_workspace(source: &Path, into: &Path) -> PathBuf {
    build_outside_workspace(source, into, None)
}

/// Copies the crate at `source` into `into` as an author would (`cp -rL`), renames its package
/// to `rename` when given, builds it there with plain cargo for wasm32-wasip2, and returns the
/// component it made.
pub fn build_outside_workspace(source: &Path, into: &Path, rename: Option<&str>) -> PathBuf {
    let copy = into.join(source.file_name().expect("a named directory"));
    let status = Command::new("cp")
        .arg("-rL")
        .arg(source)
        .arg(&copy)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying {}", source.display());
    if let Some(name) = rename {
        let manifest = copy.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("its manifest");
        let old = text
            .lines()
            .find(|l| l.starts_with("name = \""))
            .expect("a package name")
            .to_string();
        let renamed = text.replacen(&old, &format!("name = \"{name}\""), 1);
        std::fs::write(&manifest, renamed).expect("manifest written");
        // The lock file names the package too: let cargo update that one entry.
        let lock = copy.join("Cargo.lock");
        let text = std::fs::read_to_string(&lock).expect("its lock file");
        let old_name = old.trim_start_matches("name = ");
        std::fs::write(
            &lock,
            text.replace(&format!("name = {old_name}"), &format!("name = \"{name}\"")),
        )
        .expect("lock file written");
    }
    let target = binary_dir()
        .parent()
        .expect("target/<profile> lives in target")
        .join("standalone-steps");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&copy)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .env("CARGO_TARGET_DIR", &target)
        // Plain cargo, as an author runs it: not the lints CI builds the workspace with.
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building {} outside the workspace failed:\n{}",
        copy.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let package = std::fs::read_to_string(copy.join("Cargo.toml")).expect("its manifest");
    let name = package
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a package name")
        .replace('-', "_");
    let wasm = target.join(format!("wasm32-wasip2/release/{name}.wasm"));
    assert!(wasm.exists(), "{} was not built", wasm.display());
    wasm
}

/// The repository's root, for tests that use its files (templates, examples).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/e2e lives two levels down")
        .to_path_buf()
}

/// A repository `app` (one commit: `README.md` "# App") served over HTTP on loopback from
/// `root/served`; the server, and the URL to clone.
pub fn serve_app_repo(root: &Path) -> (StaticServer, String) {
    serve_repo(root, "app", &[("README.md", "# App\n")])
}

/// A repository `name` of `files`, served over HTTP on loopback from `root/served`: the server
/// (keep it alive) and the clone URL.
pub fn serve_repo(root: &Path, name: &str, files: &[(&str, &str)]) -> (StaticServer, String) {
    let served = root.join("served");
    std::fs::create_dir_all(&served).expect("creating the served directory");
    create_served_repo(&served, name, files);
    let repos = StaticServer::start(&served);
    let url = format!("http://{}/{name}.git", repos.addr);
    (repos, url)
}

/// What a test of jobs run by local sandboxed workers stands on: `files` served as repository
/// `name`, an API with `--allow-local-repos`, its work directory under `root` and `flags`, and a
/// developer signed in to it. `root` is opened for the sandboxed agent's user to pass through.
pub struct SandboxedStage {
    pub repos: StaticServer,
    pub repo_url: String,
    pub api: Api,
    pub dev: Developer,
}

impl SandboxedStage {
    pub fn start(root: &Path, name: &str, files: &[(&str, &str)], flags: &[&str]) -> Self {
        let pass_through = std::os::unix::fs::PermissionsExt::from_mode(0o711);
        std::fs::set_permissions(root, pass_through)
            .expect("opening the test root to the sandbox's user");
        let (repos, repo_url) = serve_repo(root, name, files);
        let work = root.join("work");
        let mut serve = vec!["--allow-local-repos", "--work-dir"];
        let work = work.to_string_lossy().into_owned();
        serve.push(&work);
        serve.extend_from_slice(flags);
        let api = Api::start_with(&root.join("api"), &serve);
        let dev = Developer::new(&api, root, "dev@example.com", &repo_url);
        Self {
            repos,
            repo_url,
            api,
            dev,
        }
    }
}

/// Every file under `dir` whose bytes contain `needle`: where a secret must not be.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
