//! A real Secret Service for keyring tests: a private D-Bus session bus (`dbus-daemon`) with
//! GNOME Keyring's secrets component on it, unlocked, its keyrings in a temporary home; both
//! stopped when dropped. Where they are not installed the test is skipped with the reason,
//! unless `CKRV_REQUIRE_KEYRING=1` (as in CI) makes that a failure.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Set to `1` to fail, rather than skip, when the Secret Service cannot be started.
pub const KEYRING_REQUIRED_ENV: &str = "CKRV_REQUIRE_KEYRING";

pub struct SecretService {
    /// What `DBUS_SESSION_BUS_ADDRESS` must say to reach it.
    pub bus_address: String,
    bus_pid: String,
    dir: tempfile::TempDir,
}

impl Drop for SecretService {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args([
                "-f",
                &format!("gnome-keyring-daemon.*{}", self.dir.path().display()),
            ])
            .status();
        let _ = Command::new("kill").arg(&self.bus_pid).status();
    }
}

impl SecretService {
    pub fn start() -> Option<Self> {
        for program in ["dbus-daemon", "gnome-keyring-daemon"] {
            if Command::new("which")
                .arg(program)
                .output()
                .map_or(true, |o| !o.status.success())
            {
                crate::skip_unless_required(
                    KEYRING_REQUIRED_ENV,
                    &format!("{program} is not installed"),
                    "apt-get install dbus-daemon gnome-keyring libsecret-tools",
                );
                return None;
            }
        }
        let dir = tempfile::tempdir().expect("a home for the keyring");
        let runtime_dir = dir.path().join("run");
        std::fs::create_dir_all(&runtime_dir).expect("runtime dir");
        std::fs::set_permissions(
            &runtime_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("runtime dir mode");
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .expect("dbus-daemon runs");
        assert!(
            bus.status.success(),
            "dbus-daemon: {}",
            String::from_utf8_lossy(&bus.stderr)
        );
        let printed = String::from_utf8_lossy(&bus.stdout).into_owned();
        let mut lines = printed.lines();
        let bus_address = lines.next().expect("the bus address").trim().to_string();
        let bus_pid = lines.next().expect("the bus pid").trim().to_string();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--control-directory"])
            .arg(&runtime_dir)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
            .env("HOME", dir.path())
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon starts");
        // The password that creates and unlocks the login keyring.
        keyring
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(b"ckrv-test-keyring")
            .expect("unlocking the keyring");
        let _ = keyring.wait();
        Some(Self {
            bus_address,
            bus_pid,
            dir,
        })
    }
}
