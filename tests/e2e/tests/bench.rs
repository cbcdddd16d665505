//! The benchmark harness (`ckrv-bench`) keeps working: a tiny run prints every measurement.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use ckrv_e2e::binary;

/// What a run of `bench` printed, and its table's rows; the run must succeed.
fn table_of(bench: &mut Command) -> (String, Vec<String>) {
    let out = bench.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("| "))
        .map(str::to_string)
        .collect();
    (stdout, rows)
}

#[test]
fn the_benchmark_measures_every_path_and_says_so_in_a_table() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let (stdout, rows) = table_of(
        Command::new(binary("ckrv-bench"))
            .args(["--jobs", "1", "--requests", "8", "--clients", "2"])
            .args([
                "--followers",
                "20",
                "--follow-lines",
                "3",
                "--log-lines",
                "1000",
            ])
            .args(["--creates", "20", "--stored", "50,500"])
            .args([
                "--diff-files",
                "200",
                "--diff-changed",
                "20",
                "--diffs",
                "2",
                "--sandboxes",
                "3",
            ])
            .args([
                "--model-requests",
                "5",
                "--download-mib",
                "1",
                "--downloads",
                "2",
                "--small-requests",
                "3",
            ])
            .args([
                "--snapshot-files",
                "300",
                "--snapshot-mib",
                "1",
                "--snapshot-restores",
                "2",
            ])
            .args(["--webhook-jobs", "5", "--webhook-queued", "20"]),
    );
    // The header, eight measurements of the job's path, four of the worker, seven of
    // snapshots (four of them jobs on a hit, with and without the worker's copy), five of
    // egress, four of webhooks, and eleven of the engine (four of them the model gateway's),
    // each with a sample count and four figures.
    assert_eq!(rows.len(), 40, "{stdout}");
    for measured in [
        "through the model gateway",
        "egress proxy, CONNECT",
        "read-only HTTPS, read and re-encrypted by the proxy",
        "1 KiB GET in the sandbox, one curl, a new connection each, read-only HTTPS, read by the proxy",
        "with egress proxy and bridge",
        "| snapshot: pack, 300 files, 1 MiB",
        "| snapshot: restore (digest checked), 300 files, 1 MiB",
        "| `tar -I zstd -x` of the same archive, 300 files, 1 MiB",
        "| job on a snapshot hit, the worker holding its unpacked copy: clone's end (phase setup) → agent starts, 300 files, 1 MiB",
        "| job on a snapshot hit, no copy on the worker: clone's end (phase setup) → agent starts, 300 files, 1 MiB",
        "| of which the worker's restore (fetch, digest, unpack), 300 files, 1 MiB",
        "| job created → its `job.queued` at a receiver on loopback | 5 |",
        "| `POST /v1/jobs`, a webhook whose receiver is down, none queued at the start |",
        "| `POST /v1/jobs`, the same with 20 more deliveries queued at the start |",
    ] {
        assert!(stdout.contains(measured), "{measured}: {stdout}");
    }
    for row in &rows[1..] {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[2].parse::<usize>().unwrap() >= 1, "{row}");
        for figure in &cells[3..7] {
            assert!(figure.parse::<f64>().unwrap() > 0.0, "{row}");
        }
    }

    let bad = Command::new(binary("ckrv-bench"))
        .args(["--jobs", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--jobs"));
    // Every follower got every probe line, and reads were measured at each table size.
    assert!(
        stdout.contains("| log line to each of 20 SSE followers of one job | 60 |"),
        "{stdout}"
    );
    assert!(stdout.contains("with 500 jobs stored | 8 |"), "{stdout}");
    assert!(
        stdout.contains("diff step (WASM), 200 files, 20 changed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| agent sandbox: create, run `true`, tear down | 3 |"),
        "{stdout}"
    );
}

#[test]
fn the_cli_benchmark_measures_log_latency_and_status_against_curl() {
    if !ckrv_test_support::sandbox_available() {
        return;
    }
    let (stdout, rows) = table_of(Command::new(binary("ckrv-bench")).args([
        "--cli-only",
        "--jobs",
        "1",
        "--log-probes",
        "3",
        "--status-runs",
        "2",
    ]));
    // The header, the job path's two rows, the log latency, curl and two of `ckrv status`.
    assert_eq!(rows.len(), 7, "{stdout}");
    assert!(
        stdout.contains("| agent line → `ckrv logs --follow` output | 3 |"),
        "every probe line was printed: {stdout}"
    );
    assert!(stdout.contains("× curl)"), "{stdout}");
}

#[test]
fn the_console_benchmark_times_its_pages_in_chromium() {
    if !ckrv_test_support::chromium_installed() {
        ckrv_test_support::skip_unless_required(
            "CKRV_REQUIRE_BROWSER",
            "chromium and chromedriver are not installed",
            "apt-get install chromium chromium-driver",
        );
        return;
    }
    let (stdout, rows) = table_of(Command::new(binary("ckrv-bench")).args([
        "--console-only",
        "--console-jobs",
        "5",
        "--console-loads",
        "2",
        "--console-probes",
        "3",
        "--console-log-lines",
        "300",
    ]));
    // The header, the log line's latency, the long log's three rows and the jobs page's four.
    assert_eq!(rows.len(), 9, "{stdout}");
    for row in [
        "| console: a log line, worker's POST to its row in the open page | 3 |",
        "| console: job page with a 300-line log, to every line loaded | 2 |",
        "| console: jobs page, 7 of 7 jobs shown, to DOMContentLoaded | 2 |",
        "| console: jobs page, 5 of 7 jobs shown, the server's answer | 2 |",
    ] {
        assert!(stdout.contains(row), "{row} in {stdout}");
    }
}
