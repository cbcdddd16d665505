//! A test that runs third-party programs (the real agent CLIs) runs in a network namespace of
//! its own, with loopback and nothing else: whatever those programs try, and even if the
//! egress policy under test fails, nothing leaves the machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::requirement::skip_unless_required;

/// Set in the test's second run, inside the namespace: a file that run creates, so the first
/// knows the test did run there (a name that matched no test would run nothing, and pass).
const INSIDE_ENV: &str = "CKRV_TEST_LOOPBACK_ONLY";

/// Whether the calling test, `name` (its path within its test binary), should go on: it is
/// running in its loopback-only namespace. Otherwise this runs it again in one (`unshare
/// --net`, loopback brought up) and panics if that run fails, or skips it as
/// [`skip_unless_required`] says when namespaces cannot be made here (not root, no `unshare`
/// or `ip`); either way the caller returns.
pub fn in_loopback_only_network(name: &str, required_env: &str) -> bool {
    if let Some(marker) = std::env::var_os(INSIDE_ENV) {
        std::fs::write(marker, name).unwrap();
        return true;
    }
    let Some(ip) = program(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]) else {
        skip_unless_required(
            required_env,
            "no `ip` program to bring up a namespace's loopback",
            "install iproute2",
        );
        return false;
    };
    let probe = Command::new("unshare").args(["--net", "true"]).output();
    if !probe.as_ref().is_ok_and(|out| out.status.success()) {
        skip_unless_required(
            required_env,
            "cannot make a network namespace here (`unshare --net` needs root and util-linux)",
            "run the tests as root",
        );
        return false;
    }
    let test_binary = std::env::current_exe().unwrap();
    let marker = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::remove_file(&marker).unwrap();
    let status = Command::new("unshare")
        .args([
            "--net",
            "--",
            "/bin/sh",
            "-c",
            "\"$0\" link set lo up && exec \"$@\"",
        ])
        .arg(ip)
        .arg(test_binary)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(INSIDE_ENV, &marker)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{name} failed in its loopback-only network namespace ({status}); its output is above"
    );
    assert!(
        std::fs::read_to_string(&marker).is_ok_and(|ran| ran == name),
        "{name} did not run in its namespace: is it the test's path in its binary?"
    );
    false
}

fn program(candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(Path::new)
        .find(|path| path.exists())
        .map(Path::to_path_buf)
}
