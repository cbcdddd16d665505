//! What a running agent can read, seen from outside its sandbox (as root, through `/proc`):
//! the environment and arguments of each of its processes, and every file in the places it can
//! write or was given (its home and `/tmp`, the workspace, `/run`, `/dev/shm`). A test holds
//! that a secret is in none of them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A job's model token starts so: an agent's processes are the ones holding one.
const MODEL_TOKEN_PREFIX: &str = "ckrv_mt_";
/// The sandbox's own places; the rest of its tree is the host's system, bound read-only.
const AGENT_PLACES: [&str; 4] = ["tmp", "workspace", "run", "dev/shm"];
/// Files larger than this are skipped (none of an agent's settings or caches is).
const LARGEST_FILE: u64 = 8 * 1024 * 1024;

/// One look at the running agents.
#[derive(Clone, Debug, Default)]
pub struct AgentView {
    /// The agent processes seen (each holds a model token in its environment), and how many
    /// of them are inside a sandbox.
    pub processes: usize,
    pub sandboxes: usize,
    /// The files read in the agents' own places.
    pub files: usize,
    /// Where the secret was found: `pid N environ`, `pid N cmdline`, or a file's path.
    pub leaks: Vec<String>,
}

impl AgentView {
    /// Looks through every process holding a model token, and through its sandbox's files,
    /// for `secret`.
    pub fn look_for(secret: &str) -> Self {
        let mut view = Self::default();
        // The launchers (prlimit, setpriv, bubblewrap's outer process) hold the agent's
        // environment too, but live in the host's mount namespace: their files are the host's.
        let host = std::fs::read_link("/proc/self/ns/mnt")
            .map(|ns| ns.display().to_string())
            .unwrap_or_default();
        let mut roots: HashSet<String> = HashSet::from([host]);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return view;
        };
        for entry in entries.flatten() {
            let proc_dir = entry.path();
            let Some(pid) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(environ) = std::fs::read(proc_dir.join("environ")) else {
                continue;
            };
            let environ = String::from_utf8_lossy(&environ);
            if !environ.split('\0').any(|var| {
                var.split_once('=')
                    .is_some_and(|(_, value)| value.starts_with(MODEL_TOKEN_PREFIX))
            }) {
                continue;
            }
            view.processes += 1;
            if environ.contains(secret) {
                view.leaks.push(format!("pid {pid} environ"));
            }
            let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(secret) {
                view.leaks.push(format!("pid {pid} cmdline"));
            }
            // One walk per sandbox: its processes share a mount namespace of their own.
            let namespace = std::fs::read_link(proc_dir.join("ns/mnt"))
                .map(|ns| ns.display().to_string())
                .unwrap_or_else(|_| pid.clone());
            if roots.insert(namespace) {
                view.sandboxes += 1;
                for place in AGENT_PLACES {
                    view.walk(&proc_dir.join("root").join(place), secret);
                }
            }
        }
        view
    }

    fn walk(&mut self, dir: &Path, secret: &str) {
        let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    pending.extend(entries.flatten().map(|e| e.path()));
                }
            } else if meta.is_file() && meta.len() <= LARGEST_FILE {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                self.files += 1;
                if bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes())
                {
                    self.leaks.push(path.display().to_string());
                }
            }
        }
    }
}
