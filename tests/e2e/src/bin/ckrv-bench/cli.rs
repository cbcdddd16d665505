//! Issue #11's figures, through the real `ckrv`: how soon a line the agent writes reaches
//! `ckrv logs --follow`'s output, and `ckrv status` against `curl` of the same endpoint, with
//! the built-in provider and with an installed one.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use super::Stage;
use super::table::Table;

/// Agent lines → `ckrv logs --follow` output: each probe line carries the wall-clock time the
/// agent wrote it; the latency is when the follower printed it, less that.
pub fn log_latency(stage: &Stage, repo_url: &str, probes: usize, table: &mut Table) -> Result<()> {
    let script =
        format!("for i in $(seq {probes}); do echo \"probe $(date +%s%N)\"; sleep 0.2; done");
    std::fs::write(
        stage.work.join("specs/probe.md"),
        ckrv_e2e::script_spec("Probe", &script),
    )?;
    let out = stage.cli.run(
        &stage.work,
        &[
            "run",
            "--cloud",
            "--spec",
            "specs/probe.md",
            "--repo",
            repo_url,
            "--base-branch",
            "main",
            "--json",
        ],
    );
    if !out.status.success() {
        bail!("ckrv run: {}", String::from_utf8_lossy(&out.stderr));
    }
    let job: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = job["id"].as_str().context("a job id")?.to_string();
    let mut follower = stage
        .cli
        .command(&stage.work, &["logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = follower.stdout.take().context("piped stdout")?;
    let mut latencies = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let Some(written) = line
            .split("probe ")
            .nth(1)
            .and_then(|t| t.trim().parse::<u64>().ok())
        else {
            continue;
        };
        latencies.push(now.saturating_sub(Duration::from_nanos(written)));
    }
    follower.wait()?;
    if latencies.len() != probes {
        bail!(
            "the follower printed {} of {probes} probe lines",
            latencies.len()
        );
    }
    table.row("agent line → `ckrv logs --follow` output", &latencies);
    Ok(())
}

/// `ckrv status ID --json` and `curl` of `GET /v1/jobs/{id}`, as processes, alternately; then
/// `ckrv status` through an installed copy of the built-in plugin.
pub fn status_against_curl(stage: &Stage, id: &str, runs: usize, table: &mut Table) -> Result<()> {
    let headers = stage.cli.home.join("curl-headers");
    std::fs::write(&headers, format!("Authorization: Bearer {}\n", stage.token))?;
    let url = format!("{}/v1/jobs/{id}", stage.api.url);
    let timed = |mut command: Command| -> Result<Duration> {
        let start = Instant::now();
        let out = command.output()?;
        let elapsed = start.elapsed();
        if !out.status.success() {
            bail!("{command:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(elapsed)
    };
    // Third-party plugins installed first: the built-in provider must not pay for them.
    let installed = install_builtin_copies(stage)?;
    // Warm the plugin cache first.
    timed(stage.cli.command(&stage.work, &["status", id, "--json"]))?;
    let mut ckrv = Vec::new();
    let mut curl = Vec::new();
    for _ in 0..runs {
        ckrv.push(timed(
            stage.cli.command(&stage.work, &["status", id, "--json"]),
        )?);
        let mut command = Command::new("curl");
        command
            .args(["-sf", "-o", "/dev/null", "-H"])
            .arg(format!("@{}", headers.display()))
            .arg(&url);
        curl.push(timed(command)?);
    }
    let provider = ["--provider", installed.as_str()];
    let mut login = stage
        .cli
        .command(
            &stage.work,
            &[&provider[..], &["cloud", "login", "--with-token"]].concat(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    std::io::Write::write_all(
        &mut login.stdin.take().context("piped stdin")?,
        stage.token.as_bytes(),
    )?;
    login.wait()?;
    let args = [&provider[..], &["status", id, "--json"]].concat();
    timed(stage.cli.command(&stage.work, &args))?;
    let plugin = (0..runs)
        .map(|_| timed(stage.cli.command(&stage.work, &args)))
        .collect::<Result<Vec<_>>>()?;
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1000.0
    };
    let (c, k, p) = (
        median(&mut curl),
        median(&mut ckrv),
        median(&mut plugin.clone()),
    );
    table.row("`curl` of `GET /v1/jobs/{id}`", &curl);
    table.row(
        &format!(
            "`ckrv status`, built-in provider, 3 others installed ({:.2}× curl)",
            k / c
        ),
        &ckrv,
    );
    table.row(
        &format!(
            "`ckrv status`, through an installed provider ({:.2}× curl)",
            p / c
        ),
        &plugin,
    );
    Ok(())
}

/// Installs three copies of the built-in plugin's component (built next to the binaries) under
/// other names, as third-party plugins; returns one of the names.
fn install_builtin_copies(stage: &Stage) -> Result<String> {
    let exe = std::env::current_exe()?;
    let build = exe.parent().context("target dir")?.join("build");
    let wasm = std::fs::read_dir(&build)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("out/ckrv_plugin_chakravarti.wasm"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        // The newest: an older build of the plugin may still lie in another build directory.
        .max()
        .map(|(_, p)| p)
        .context("the built-in plugin's component under target/<profile>/build")?;
    for name in ["third-a", "third-b", "third-c"] {
        let out = stage.cli.run(
            &stage.work,
            &[
                "plugin",
                "install",
                &wasm.to_string_lossy(),
                "--name",
                name,
                "--force",
            ],
        );
        if !out.status.success() {
            bail!(
                "ckrv plugin install: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok("third-b".to_string())
}
