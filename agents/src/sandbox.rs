//! The agent's sandbox on the local dispatcher: bubblewrap, under an unprivileged user, with
//! resource limits.
//!
//! Inside, the agent sees the job's workspace (read-write, at `/workspace`), a read-only system
//! (`/usr` and its links, `/etc` with password hashes, SSH host keys and TLS private keys
//! masked), its own `/proc`, `/dev` and an empty `/tmp`, and nothing else: not the API's data
//! directory, not other workspaces, not the orchestrator. It has its own PID namespace, so every
//! process it starts dies when it ends, a network namespace of its own with only loopback, no
//! capabilities, a non-root user, and limits on CPU time, memory, processes, file size and open
//! files (per process, from `prlimit`; the Kubernetes dispatcher adds cgroup limits).
//!
//! It never shares the host's network. When its job allows egress, the only way out is the
//! worker's egress proxy ([`crate::egress`]), on a Unix socket bound into the sandbox: the
//! `ckrv-egress-bridge` program starts the agent with `HTTP(S)_PROXY` pointing at a port on the
//! sandbox's loopback, relayed to that socket, and every refusal is a [`Stream::Egress`] line.
//!
//! What bubblewrap builds in memory (tmpfs: the sandbox's root, `/dev`, the masks) is the
//! host's memory, and the agent owns it: all of it is read-only but `/tmp` (its HOME) and
//! `/dev/shm`, each a tmpfs of at most [`SandboxLimits::tmp_bytes`], so a write past that fails
//! with "No space left on device" and the host keeps its memory.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use crate::egress::{Allowlist, BRIDGE_PROGRAM, EgressProxy, Refusal};
use crate::output::{OutputLine, Stream};
use crate::runtime::{AgentRuntime, ExitStatus, RunRequest, run_streaming};

/// Resource limits of one agent run (each applies per process, but `tmp_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    pub cpu_seconds: u64,
    /// The private writable memory a process may map (`RLIMIT_DATA`): its heap and what it
    /// writes, not the address space it only reserves. Node's WebAssembly reserves about
    /// 10 GiB per instance, so an address-space limit (`RLIMIT_AS`) stops Gemini CLI, and
    /// V8, Bun and Go runtimes reserve far more than they use.
    pub memory_bytes: u64,
    pub processes: u64,
    pub file_bytes: u64,
    pub open_files: u64,
    /// The size of the sandbox's `/tmp`, and of its `/dev/shm`: each is memory of the host's
    /// (tmpfs), for the whole run. Never 0, which tmpfs takes for no bound at all.
    pub tmp_bytes: u64,
}

/// [`SandboxLimits::tmp_bytes`] unless the operator says otherwise: room for an agent's
/// settings, caches and scratch files, while a few jobs at once still fit in a worker's memory.
pub const DEFAULT_TMP_BYTES: u64 = 1024 * 1024 * 1024;
/// The largest agent `/tmp` a worker's `--agent-tmp-mb` takes, in MiB: its bytes fit in 64 bits.
pub const MAX_TMP_MIB: u64 = u64::MAX / (1024 * 1024);

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            cpu_seconds: 60 * 60,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            processes: 512,
            file_bytes: 1024 * 1024 * 1024,
            open_files: 4096,
            tmp_bytes: DEFAULT_TMP_BYTES,
        }
    }
}

/// Runs agents in bubblewrap.
#[derive(Debug, Clone)]
pub struct SandboxRuntime {
    pub limits: SandboxLimits,
    /// The bubblewrap program.
    pub bwrap: PathBuf,
    /// The `ckrv-egress-bridge` program, bound into a sandbox whose job allows egress; by
    /// default the one beside this process's own program, if there is one. A run with an
    /// allowlist and no bridge fails with [`NoEgressBridge`].
    pub bridge: Option<PathBuf>,
    /// The roots a read-only policy's proxy verifies real hosts against; the system's when
    /// `None` (a test sets its own stand-in's).
    pub egress_roots: Option<rustls::RootCertStore>,
}

impl Default for SandboxRuntime {
    fn default() -> Self {
        Self::new(SandboxLimits::default())
    }
}

/// Why the sandbox could not be made.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create the agent's sandbox ({0}); install bubblewrap (`apt-get install bubblewrap`), or start ckrv-api with --insecure-no-sandbox, which runs agents with the worker's rights"
)]
pub struct SandboxUnavailable(pub String);

/// A job allows egress, but its sandbox cannot have it: there is no bridge program.
#[derive(Debug, thiserror::Error)]
#[error(
    "the job's egress allowlist needs the {BRIDGE_PROGRAM} program, and there is none {}: install it beside the worker's program",
    match .0 { Some(path) => format!("at {}", path.display()), None => "beside the worker's program".into() }
)]
pub struct NoEgressBridge(pub Option<PathBuf>);

/// Where the host's system directories live, to bind or link them the same way inside.
const SYSTEM_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib64", "/lib32"];
/// Secrets under `/etc` the agent never reads.
const MASKED_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/krb5.keytab",
];
const MASKED_DIRS: &[&str] = &["/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d"];

impl SandboxRuntime {
    pub fn new(limits: SandboxLimits) -> Self {
        Self {
            limits,
            bwrap: "bwrap".into(),
            bridge: bridge_beside_this_program(),
            egress_roots: None,
        }
    }

    /// The bridge program a job that allows egress needs: a worker can check it when it starts,
    /// rather than fail its first such job.
    pub fn egress_bridge(&self) -> Result<&Path, NoEgressBridge> {
        self.bridge
            .as_deref()
            .filter(|bridge| bridge.is_file())
            .ok_or_else(|| NoEgressBridge(self.bridge.clone()))
    }

    /// Checks that a sandbox can be created here, by creating one that runs `true`.
    pub async fn probe(&self) -> Result<(), SandboxUnavailable> {
        let dir = std::env::temp_dir();
        let probe = RunRequest::new(vec!["true".into()], dir.clone(), dir, "probe");
        let output = tokio::time::timeout(
            PROBE_TIMEOUT,
            self.command(&probe, None, None, None, &[])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| SandboxUnavailable("bwrap did not start in time".into()))?
        .map_err(|e| SandboxUnavailable(format!("bwrap: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = stderr.lines().last().unwrap_or("bwrap failed").trim();
        // `--size` (bubblewrap 0.8.0) bounds the agent's /tmp; an older one does not know it.
        if said.contains("--size") {
            return Err(SandboxUnavailable(format!(
                "{said}: bubblewrap 0.8.0 or later is needed to bound the agent's /tmp"
            )));
        }
        Err(SandboxUnavailable(said.to_string()))
    }

    /// The full command: limits, then (as root) an unprivileged user, then bubblewrap, then the
    /// agent. `uid` is the user to run as when the worker is root; `prompt_file` is bound
    /// read-only at [`PROMPT_PATH`]; with `egress`, the agent runs under the bridge, its proxy
    /// variables pointing at it; `home_binds` are bound at their places under its home. The
    /// environment passes through each program's own environment, never its arguments, where
    /// any process could read the secrets in it.
    fn command(
        &self,
        request: &RunRequest,
        uid: Option<u32>,
        prompt_file: Option<&Path>,
        egress: Option<&EgressMounts<'_>>,
        home_binds: &[(PathBuf, String)],
    ) -> Command {
        let l = self.limits;
        let mut command = Command::new("prlimit");
        command.args([
            format!("--cpu={}", l.cpu_seconds),
            format!("--data={}", l.memory_bytes),
            format!("--nproc={}", l.processes),
            format!("--fsize={}", l.file_bytes),
            format!("--nofile={}", l.open_files),
            "--".into(),
        ]);
        if let Some(uid) = uid {
            command.args([
                "setpriv".to_string(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        let path = match &request.agent_bin {
            Some(_) => format!("{AGENT_BIN}:{SYSTEM_PATH}"),
            None => SYSTEM_PATH.to_string(),
        };
        command
            .arg(&self.bwrap)
            .args(bwrap_args(
                request,
                prompt_file,
                egress,
                home_binds,
                l.tmp_bytes,
            ))
            .arg("--");
        if egress.is_some() {
            command.args([
                BRIDGE_PATH,
                "--listen",
                BRIDGE_LISTEN,
                "--socket",
                EGRESS_SOCKET_PATH,
            ]);
            // The gateway's URL on the worker's loopback works inside too.
            let forwards = request.egress.iter().flat_map(Allowlist::loopback_forwards);
            for forward in forwards.filter(|f| f.to_string() != BRIDGE_LISTEN) {
                command.arg(format!("--forward={forward}"));
            }
            command.arg("--");
        }
        command
            .args(request.command_with_prompt_file(PROMPT_PATH))
            .env_clear()
            .env("PATH", path)
            .env("HOME", SANDBOX_HOME)
            .env("TMPDIR", "/tmp")
            .env("CKRV_JOB_ID", &request.job_id)
            .envs(request.environment())
            .current_dir("/");
        if let Some(egress) = egress {
            // After the definition's environment, so it cannot point the agent elsewhere.
            if egress.ca_bundle.is_some() {
                for name in CA_BUNDLE_VARIABLES {
                    command.env(name, CA_BUNDLE_PATH);
                }
            }
            let proxy = format!("http://{BRIDGE_LISTEN}");
            for name in crate::egress::PROXY_VARIABLES {
                command.env(name, &proxy);
            }
            for name in crate::egress::NO_PROXY_VARIABLES {
                command.env(name, "");
            }
        }
        command
    }

    /// Starts the egress proxy of a run: its socket in the scratch directory, connectable by
    /// the sandbox's user only, its refusals sent to `lines` as [`Stream::Egress`].
    fn start_egress(
        &self,
        request: &RunRequest,
        allowlist: Allowlist,
        uid: Option<u32>,
        lines: &mpsc::Sender<OutputLine>,
    ) -> std::io::Result<Egress> {
        let bridge = self
            .egress_bridge()
            .map_err(std::io::Error::other)?
            .to_path_buf();
        std::fs::create_dir_all(&request.scratch)?;
        let (refused, mut refusals) = mpsc::channel::<Refusal>(64);
        let socket = request.scratch.join("egress.sock");
        let proxy = match &self.egress_roots {
            Some(roots) => EgressProxy::start_trusting(socket, allowlist, refused, roots.clone())?,
            None => EgressProxy::start(socket, allowlist, refused)?,
        };
        if let Some(uid) = uid {
            std::os::unix::fs::chown(proxy.path(), Some(uid), Some(uid))?;
        }
        let ca_bundle = match proxy.ca_pem() {
            Some(pem) => Some(write_ca_bundle(&request.scratch, pem)?),
            None => None,
        };
        let lines = lines.clone();
        let job = request.job_id.clone();
        let reports = tokio::spawn(async move {
            while let Some(refusal) = refusals.recv().await {
                tracing::debug!(%job, %refusal, "egress refused");
                let line = OutputLine {
                    stream: Stream::Egress,
                    line: refusal.to_string(),
                };
                if lines.send(line).await.is_err() {
                    return;
                }
            }
        });
        Ok(Egress {
            bridge,
            proxy,
            ca_bundle,
            reports,
        })
    }
}

/// The system's root certificates, where Debian, Fedora and Alpine keep them.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Writes the certificates the agent's clients trust under a read-only policy: the system's
/// and the proxy's authority (the gateway's tunnel is not read, and may need the former).
/// World-readable: it holds no secret, and the agent may run as another user.
fn write_ca_bundle(scratch: &Path, ca_pem: &str) -> std::io::Result<PathBuf> {
    let mut bundle = SYSTEM_CA_BUNDLES
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    let path = scratch.join("egress-ca.pem");
    std::fs::write(&path, bundle)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(path)
}

/// The bridge beside this process's program, if it is there.
fn bridge_beside_this_program() -> Option<PathBuf> {
    let bridge = std::env::current_exe().ok()?.parent()?.join(BRIDGE_PROGRAM);
    bridge.is_file().then_some(bridge)
}

/// A run's egress: its proxy, and the task passing the proxy's refusals on.
struct Egress {
    bridge: PathBuf,
    proxy: EgressProxy,
    /// Under a read-only policy: the certificates the agent's clients must trust.
    ca_bundle: Option<PathBuf>,
    reports: tokio::task::JoinHandle<()>,
}

/// What a sandbox with egress binds in.
struct EgressMounts<'a> {
    bridge: &'a Path,
    socket: &'a Path,
    ca_bundle: Option<&'a Path>,
}

impl Egress {
    fn mounts(&self) -> EgressMounts<'_> {
        EgressMounts {
            bridge: &self.bridge,
            socket: self.proxy.path(),
            ca_bundle: self.ca_bundle.as_deref(),
        }
    }

    /// Stops the proxy once the agent has ended, and waits until every refusal it reported
    /// is passed on.
    async fn stop(self) {
        drop(self.proxy);
        let _ = self.reports.await;
    }
}

/// The agent's home: the sandbox's own `/tmp`, so what it writes there is the run's alone,
/// but for the directories a job keeps ([`RunRequest::home_cache`]), bound over it.
const SANDBOX_HOME: &str = "/tmp";
/// Where the agent finds a file prompt.
const PROMPT_PATH: &str = "/run/ckrv/prompt.md";
/// Where `--agent-bin` appears inside the sandbox, read-only, first on `PATH`.
const AGENT_BIN: &str = "/opt/ckrv/bin";
/// The system's programs, inside the sandbox as outside.
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Where the bridge program and the egress proxy's socket appear inside the sandbox.
const BRIDGE_PATH: &str = "/run/ckrv/egress-bridge";
const EGRESS_SOCKET_PATH: &str = "/run/ckrv/egress.sock";
/// Where the certificates a read-only policy's clients trust appear, and the variables that
/// point curl, OpenSSL, Node, Python (requests, pip), git and cargo at them.
const CA_BUNDLE_PATH: &str = "/run/ckrv/egress-ca.pem";
pub(crate) const CA_BUNDLE_VARIABLES: [&str; 7] = [
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
];
/// The agent's proxy address, on the sandbox's own loopback (its network namespace has
/// nothing else, so any port is free).
const BRIDGE_LISTEN: &str = "127.0.0.1:3128";

/// bubblewrap's arguments for `request`, its `/tmp` and `/dev/shm` `tmp_bytes` each. The
/// sandbox's network is always its own (`--unshare-all`, loopback only): with `egress`, the
/// bridge and the proxy's socket are bound in, read-only. Each of `home_binds` (a directory of
/// the worker's, its place inside) is bound read-write over the home's tmpfs.
fn bwrap_args(
    request: &RunRequest,
    prompt_file: Option<&Path>,
    egress: Option<&EgressMounts<'_>>,
    home_binds: &[(PathBuf, String)],
    tmp_bytes: u64,
) -> Vec<String> {
    // tmpfs takes a size of 0 for no bound at all.
    let tmp_size = tmp_bytes.max(1).to_string();
    let mut args: Vec<String> = [
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "ckrv-agent",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    .map(String::from)
    .to_vec();
    for dir in SYSTEM_LINKS {
        let path = Path::new(dir);
        match std::fs::read_link(path) {
            Ok(target) => args.extend([
                "--symlink".into(),
                target.display().to_string(),
                (*dir).into(),
            ]),
            Err(_) if path.is_dir() => {
                args.extend(["--ro-bind".into(), (*dir).into(), (*dir).into()])
            }
            Err(_) => {}
        }
    }
    args.extend(["--ro-bind", "/etc", "/etc"].map(String::from));
    for file in MASKED_FILES {
        if Path::new(file).exists() {
            args.extend(["--ro-bind".into(), "/dev/null".into(), (*file).into()]);
        }
    }
    // Each mask is an empty tmpfs the agent would own: read-only.
    for dir in MASKED_DIRS {
        if Path::new(dir).is_dir() {
            args.extend([
                "--tmpfs".into(),
                (*dir).into(),
                "--remount-ro".into(),
                (*dir).into(),
            ]);
        }
    }
    // /dev is a tmpfs too: read-only, its device nodes (bound in) still work, and /dev/shm is
    // a bounded tmpfs of its own, as /tmp is.
    args.extend(["--proc", "/proc", "--dev", "/dev", "--size"].map(String::from));
    args.extend([tmp_size.clone(), "--tmpfs".into(), "/dev/shm".into()]);
    args.extend(["--remount-ro", "/dev", "--size"].map(String::from));
    args.extend([tmp_size, "--tmpfs".into(), "/tmp".into(), "--bind".into()]);
    args.push(request.workspace.display().to_string());
    args.push("/workspace".into());
    for (host, inside) in home_binds {
        args.extend(["--bind".into(), host.display().to_string(), inside.clone()]);
    }
    if let Some(bin) = &request.agent_bin {
        args.extend([
            "--ro-bind".into(),
            bin.display().to_string(),
            AGENT_BIN.into(),
        ]);
    }
    if let Some(file) = prompt_file {
        args.extend([
            "--ro-bind".into(),
            file.display().to_string(),
            PROMPT_PATH.into(),
        ]);
    }
    if let Some(egress) = egress {
        args.extend([
            "--ro-bind".into(),
            egress.bridge.display().to_string(),
            BRIDGE_PATH.into(),
            "--ro-bind".into(),
            egress.socket.display().to_string(),
            EGRESS_SOCKET_PATH.into(),
        ]);
        if let Some(bundle) = egress.ca_bundle {
            args.extend([
                "--ro-bind".into(),
                bundle.display().to_string(),
                CA_BUNDLE_PATH.into(),
            ]);
        }
    }
    // The root bubblewrap builds (a tmpfs with the mount points) is read-only once all is
    // mounted: the agent writes only its workspace and its bounded /tmp and /dev/shm.
    // The agent's home is the sandbox's own /tmp, so what it writes there (settings, caches)
    // never becomes part of the change.
    args.extend(
        [
            "--remount-ro",
            "/",
            "--chdir",
            "/workspace",
            "--uid",
            "1000",
            "--gid",
            "1000",
        ]
        .map(String::from),
    );
    args
}

/// The directories of the agent's home that outlive the run (`cache`, from
/// [`RunRequest::home_cache`]): made in `home` ([`RunRequest::home_dir`]) where missing, handed
/// to the agent's user (`uid`, as root), each with its place under [`SANDBOX_HOME`].
fn home_binds(
    home: &Path,
    cache: &[PathBuf],
    uid: Option<u32>,
) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut binds = Vec::new();
    for relative in cache {
        let host = real_dir(home, relative)?;
        if let Some(uid) = uid {
            hand_over(&host, uid)?;
        }
        binds.push((host, format!("{SANDBOX_HOME}/{}", relative.display())));
    }
    Ok(binds)
}

/// `root/relative` as a directory, made where missing, `root` and every part of the way a real
/// directory. An earlier run could have left a symbolic link on the way, pointing anywhere on
/// the worker; bubblewrap would follow it and bind that into the sandbox, so it is refused.
fn real_dir(root: &Path, relative: &Path) -> std::io::Result<PathBuf> {
    let mut path = root.to_path_buf();
    made_real_dir(&path)?;
    for part in relative.components() {
        let std::path::Component::Normal(name) = part else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("home cache path {} leaves the home", relative.display()),
            ));
        };
        // The agent's user passes through the worker's directories on the way (as it does
        // through the job's directory to its workspace) but lists none of them.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        path.push(name);
        made_real_dir(&path)?;
    }
    Ok(path)
}

/// `path` as a directory: made where missing; a link or a file there is an error.
fn made_real_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not a directory (a link or a file left there): the agent's home cache is not bound",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(path),
        Err(e) => Err(e),
    }
}

/// As root, the unprivileged user a job's agent runs as: one per job (so one job's processes
/// cannot use up another's process limit), never root.
fn job_uid(job_id: &str) -> u32 {
    // FNV-1a: stable across runs and platforms.
    let hash = job_id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    100_000 + hash % 60_000
}

/// Gives `dir` and everything in it to `uid`, so the unprivileged agent can edit its workspace.
fn hand_over(dir: &Path, uid: u32) -> std::io::Result<()> {
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.uid() != uid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

impl AgentRuntime for SandboxRuntime {
    fn run<'a>(
        &'a self,
        request: &'a RunRequest,
        lines: tokio::sync::mpsc::Sender<OutputLine>,
    ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<ExitStatus>> + Send + 'a>> {
        Box::pin(async move {
            if request.command.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "empty agent command",
                ));
            }
            let uid = (rustix::process::geteuid().is_root()).then(|| job_uid(&request.job_id));
            if let Some(uid) = uid {
                let workspace = request.workspace.clone();
                tokio::task::spawn_blocking(move || hand_over(&workspace, uid))
                    .await
                    .map_err(std::io::Error::other)??;
            }
            let home_binds = {
                let (home, cache) = (request.home_dir(), request.home_cache.clone());
                tokio::task::spawn_blocking(move || home_binds(&home, &cache, uid))
                    .await
                    .map_err(std::io::Error::other)??
            };
            let prompt_file = request.write_prompt_file()?;
            let egress = match &request.egress {
                Some(allowlist) => {
                    Some(self.start_egress(request, allowlist.clone(), uid, &lines)?)
                }
                None => None,
            };
            let mounts = egress.as_ref().map(Egress::mounts);
            let command = self.command(
                request,
                uid,
                prompt_file.as_deref(),
                mounts.as_ref(),
                &home_binds,
            );
            let status = run_streaming(command, request.stdin(), lines).await;
            if let Some(egress) = egress {
                egress.stop().await;
            }
            status
        })
    }
}

/// How long a probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_users_are_unprivileged_and_stable() {
        let a = job_uid("3f8a9b2c-1234");
        assert_eq!(a, job_uid("3f8a9b2c-1234"));
        assert!((100_000..160_000).contains(&a));
        assert_ne!(a, job_uid("3f8a9b2c-1235"));
    }

    #[test]
    fn the_agent_sees_its_workspace_and_a_masked_system_only() {
        let mut request = RunRequest::new(
            vec!["sh".into()],
            "/tmp/ckrv-job-x/workspace".into(),
            "/tmp/ckrv-job-x/scratch".into(),
            "job-1",
        );
        request.secrets = vec![("API_KEY".into(), "sk-secret-value".into())];
        let args = bwrap_args(&request, None, None, &[], 1 << 20).join(" ");
        assert!(!args.contains("sk-secret-value"), "{args}");
        assert!(
            args.contains("--bind /tmp/ckrv-job-x/workspace /workspace"),
            "{args}"
        );
        assert!(
            args.contains("--unshare-all") && !args.contains("--share-net"),
            "{args}"
        );
        assert!(args.contains("--cap-drop ALL") && args.contains("--die-with-parent"));
        assert!(args.contains("--ro-bind /etc /etc"));
        assert!(
            args.contains("--size 1048576 --tmpfs /tmp")
                && args.contains("--size 1048576 --tmpfs /dev/shm")
                && args.contains("--remount-ro /dev ")
                && args.contains("--remount-ro / "),
            "{args}"
        );
        assert!(
            bwrap_args(&request, None, None, &[], 0)
                .join(" ")
                .contains("--size 1 --tmpfs /tmp"),
            "a size of 0 is no bound to tmpfs"
        );
        let egress = EgressMounts {
            bridge: Path::new("/opt/ckrv/ckrv-egress-bridge"),
            socket: Path::new("/tmp/ckrv-job-x/scratch/egress.sock"),
            ca_bundle: None,
        };
        let home = [(
            PathBuf::from("/tmp/ckrv-job-x/scratch/home/.npm"),
            "/tmp/.npm".to_string(),
        )];
        let with_egress = bwrap_args(
            &request,
            Some(Path::new("/tmp/p.md")),
            Some(&egress),
            &home,
            1 << 20,
        )
        .join(" ");
        assert!(!with_egress.contains("--share-net"), "{with_egress}");
        // A kept home directory is bound over the home's tmpfs, after it.
        let bound = with_egress
            .find("--bind /tmp/ckrv-job-x/scratch/home/.npm /tmp/.npm")
            .unwrap();
        assert!(
            with_egress.find("--tmpfs /tmp").unwrap() < bound,
            "{with_egress}"
        );
        assert!(with_egress.contains("--ro-bind /tmp/p.md /run/ckrv/prompt.md"));
        assert!(
            with_egress.contains("--ro-bind /opt/ckrv/ckrv-egress-bridge /run/ckrv/egress-bridge")
                && with_egress.contains(
                    "--ro-bind /tmp/ckrv-job-x/scratch/egress.sock /run/ckrv/egress.sock"
                ),
            "{with_egress}"
        );
    }

    #[test]
    fn with_egress_the_agent_runs_under_the_bridge_with_its_proxy_set() {
        let mut request = RunRequest::new(
            vec!["agent".into(), "--flag".into()],
            "/tmp/ckrv-job-x/workspace".into(),
            "/tmp/ckrv-job-x/scratch".into(),
            "job-1",
        );
        // The definition cannot point the agent past the proxy.
        request.env = vec![("HTTPS_PROXY".into(), "http://elsewhere:1".into())];
        let runtime = SandboxRuntime::default();
        let egress = EgressMounts {
            bridge: Path::new("/b"),
            socket: Path::new("/s"),
            ca_bundle: None,
        };
        let gateway = "http://127.0.0.1:4000/v1/gateway/anthropic";
        request.egress =
            crate::Policy::Model.allowlist(Some(crate::Entry::origin_of(gateway).unwrap()));
        let command = runtime.command(&request, None, None, Some(&egress), &[]);
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let tail = args.join(" ");
        assert!(
            tail.ends_with(
                "-- /run/ckrv/egress-bridge --listen 127.0.0.1:3128 --socket /run/ckrv/egress.sock --forward=127.0.0.1:4000 -- agent --flag"
            ),
            "{tail}"
        );
        let env = |command: &Command, name: &str| {
            command
                .as_std()
                .get_envs()
                .filter(|(k, _)| *k == name)
                .last()
                .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
        };
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert_eq!(
                env(&command, name).as_deref(),
                Some("http://127.0.0.1:3128"),
                "{name}"
            );
        }
        assert_eq!(env(&command, "NO_PROXY").as_deref(), Some(""));
        assert_eq!(env(&command, "no_proxy").as_deref(), Some(""));
        assert_eq!(
            env(&command, "SSL_CERT_FILE"),
            None,
            "not read-only: no bundle"
        );
        // Read-only: every client is pointed at the bundle with the proxy's authority, over
        // what the definition says.
        request
            .env
            .push(("SSL_CERT_FILE".into(), "/elsewhere.pem".into()));
        let read_only = EgressMounts {
            ca_bundle: Some(Path::new("/tmp/ckrv-job-x/scratch/egress-ca.pem")),
            ..egress
        };
        let command = runtime.command(&request, None, None, Some(&read_only), &[]);
        for name in CA_BUNDLE_VARIABLES {
            assert_eq!(
                env(&command, name).as_deref(),
                Some(CA_BUNDLE_PATH),
                "{name}"
            );
        }
        let args: Vec<String> = command
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.join(" ").contains(
                "--ro-bind /tmp/ckrv-job-x/scratch/egress-ca.pem /run/ckrv/egress-ca.pem"
            )
        );
        request.env.clear();
        let without = runtime.command(&request, None, None, None, &[]);
        assert_eq!(env(&without, "HTTPS_PROXY"), None);
        assert!(
            !without
                .as_std()
                .get_args()
                .any(|a| a.to_string_lossy().contains("egress")),
        );
    }
}
