//! A Python package index on loopback (PEP 503 "simple" pages and one wheel), served by
//! `python3 -m http.server`: what a repository's setup installs from with a real `pip`, as it
//! would from PyPI or a company's mirror, without leaving the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The package the index serves: `import ckrv_demo; ckrv_demo.GREETING`.
pub const PACKAGE: &str = "ckrv-demo";
pub const VERSION: &str = "1.0";
/// What `ckrv_demo.GREETING` says once installed.
pub const GREETING: &str = "hello from ckrv-demo 1.0";

/// Builds the wheel and its index page: the wheel is a zip with the module, its metadata and
/// a RECORD of SHA-256s, as pip checks it.
const BUILD: &str = r#"
import base64, hashlib, os, sys, zipfile
root, name, version, greeting = sys.argv[1:5]
module = name.replace("-", "_")
wheel = f"{module}-{version}-py3-none-any.whl"
info = f"{module}-{version}.dist-info"
files = {
    f"{module}/__init__.py": f"GREETING = {greeting!r}\n",
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: ckrv-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = "".join(f"{path},{digest(text.encode())},{len(text.encode())}\n" for path, text in files.items())
files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
os.makedirs(f"{root}/packages", exist_ok=True)
with zipfile.ZipFile(f"{root}/packages/{wheel}", "w") as z:
    for path, text in files.items():
        z.writestr(path, text)
sha = hashlib.sha256(open(f"{root}/packages/{wheel}", "rb").read()).hexdigest()
os.makedirs(f"{root}/simple/{name}", exist_ok=True)
with open(f"{root}/simple/index.html", "w") as f:
    f.write(f'<!DOCTYPE html><html><body><a href="{name}/">{name}</a></body></html>\n')
with open(f"{root}/simple/{name}/index.html", "w") as f:
    f.write(f'<!DOCTYPE html><html><body><a href="../../packages/{wheel}#sha256={sha}">{wheel}</a></body></html>\n')
"#;

/// The served index; the server stops when it is dropped.
pub struct PackageIndex {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl PackageIndex {
    /// Builds the index under `dir` and serves it on 127.0.0.1; `None` (the caller skips)
    /// without python3.
    pub fn start(dir: &Path) -> Option<Self> {
        let root = dir.join("index");
        let built = Command::new("python3")
            .args(["-c", BUILD])
            .arg(&root)
            .args([PACKAGE, VERSION, GREETING])
            .status()
            .ok()?;
        assert!(built.success(), "building the test wheel failed");
        let log = dir.join("index.log");
        let child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&root)
            .stdout(Stdio::from(
                std::fs::File::create(&log).expect("creating the index's log"),
            ))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("opening the index's log"),
            ))
            .spawn()
            .expect("starting python3 -m http.server");
        let mut index = Self {
            child,
            port: 0,
            log,
        };
        // It says "Serving HTTP on 127.0.0.1 port N ..." once it listens.
        let started = Instant::now();
        while index.port == 0 {
            let text = std::fs::read_to_string(&index.log).unwrap_or_default();
            if let Some(port) = text
                .split("port ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|port| port.parse().ok())
            {
                index.port = port;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "python3 -m http.server did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(index)
    }

    /// The index URL `pip install --index-url` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/simple/", self.port)
    }

    /// How many times the wheel was downloaded.
    pub fn downloads(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("GET /packages/") && line.contains(" 200 "))
            .count()
    }
}

impl Drop for PackageIndex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
