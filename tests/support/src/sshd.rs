//! A real OpenSSH server on loopback for deploy-key tests: Debian's `sshd`, started with a
//! configuration of the test's own (a fresh host key, one authorized key, keys only), stopped
//! when dropped. Where it cannot run (not installed, not root) the test is skipped with the
//! reason, unless `CKRV_REQUIRE_SSHD=1` (as in CI) makes that a failure.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to fail, rather than skip, when sshd cannot be started.
pub const SSHD_REQUIRED_ENV: &str = "CKRV_REQUIRE_SSHD";
const SSHD: &str = "/usr/sbin/sshd";

pub struct SshServer {
    pub port: u16,
    /// The user that logs in (root: sshd's own user switching needs it).
    pub user: &'static str,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new ed25519 key pair at `path` and `path.pub`, without a passphrase.
pub fn ssh_keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed");
}

impl SshServer {
    /// An sshd that lets in only the holder of the private half of `authorized_key` (a
    /// `.pub` line); `None` (with the reason printed) where it cannot run.
    pub fn start(authorized_key: &str) -> Option<Self> {
        let skip = |reason: String| {
            crate::skip_unless_required(
                SSHD_REQUIRED_ENV,
                &reason,
                "install openssh-server and run as root",
            );
        };
        if !Path::new(SSHD).exists() {
            skip(format!("{SSHD} is not installed"));
            return None;
        }
        if !is_root() {
            skip("sshd needs root here".into());
            return None;
        }
        let dir = tempfile::tempdir().expect("a directory for sshd");
        let host_key = dir.path().join("host_key");
        ssh_keygen(&host_key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", authorized_key.trim()))
            .expect("authorized keys");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {}\n",
                host_key.display(),
                authorized.display(),
                dir.path().join("sshd.pid").display()
            ),
        )
        .expect("sshd config");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let server = Self {
            port,
            user: "root",
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// The `ssh://` URL of the repository at `path` on this server.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
