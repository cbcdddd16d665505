//! What a test needs from the machine beyond Rust: bubblewrap for sandboxed agents, an S3
//! server, sshd, a Secret Service, Chromium, Node.js, Python tools. Where one is missing the test
//! prints one line saying what it skipped and what to install, and passes, so `cargo test` works
//! on a fresh machine; CI installs everything and sets the matching `CKRV_REQUIRE_…=1`, which
//! turns the skip into a failure. Only absence skips: a tool that is there but fails, fails the
//! test.

use std::io::Write as _;
use std::path::Path;

/// Set to `1` to fail, rather than skip, when the agent sandbox's programs are missing.
pub const SANDBOX_REQUIRED_ENV: &str = "CKRV_REQUIRE_SANDBOX";

/// Where local workers look for the sandbox's programs: the `PATH` they are given.
const WORKER_PATH: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

/// Whether `required_env` is set to `1`.
pub fn required(required_env: &str) -> bool {
    std::env::var(required_env).is_ok_and(|v| v == "1")
}

/// `missing` (what is not here) means the running test cannot run: print that it is skipped and
/// how to `install` what it needs (empty when `missing` says it), or panic when `required_env`
/// demands it.
pub fn skip_unless_required(required_env: &str, missing: &str, install: &str) {
    report(required_env, required(required_env), missing, install);
}

fn report(required_env: &str, required: bool, missing: &str, install: &str) {
    assert!(!required, "{required_env}=1 but {missing}");
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    let install = if install.is_empty() {
        String::new()
    } else {
        format!("; {install}")
    };
    // Straight to stderr, past the test harness's capture: the person running `cargo test`
    // must see what did not run.
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: {missing}{install} (set {required_env}=1 to make this fail)"
    );
}

/// Whether the agent sandbox's programs (bubblewrap, and util-linux's `prlimit` and `setpriv`)
/// are installed where local workers find them. When they are not, the test is skipped as
/// [`skip_unless_required`] says. It does not try them: a sandbox that is there but does not
/// work must fail the test.
pub fn sandbox_available() -> bool {
    let missing: Vec<&str> = ["bwrap", "prlimit", "setpriv"]
        .into_iter()
        .filter(|program| {
            !WORKER_PATH
                .iter()
                .any(|dir| Path::new(dir).join(program).exists())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip_unless_required(
        SANDBOX_REQUIRED_ENV,
        &format!(
            "the agent sandbox needs {}, not installed",
            missing.join(", ")
        ),
        "install bubblewrap and util-linux (`bash examples/requirements.sh` does it)",
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_skips_when_not_required() {
        report("CKRV_REQUIRE_X", false, "x is not installed", "install x");
    }

    #[test]
    #[should_panic(expected = "CKRV_REQUIRE_X=1 but x is not installed")]
    fn a_missing_tool_fails_when_required() {
        report("CKRV_REQUIRE_X", true, "x is not installed", "install x");
    }
}
