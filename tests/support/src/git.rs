//! Real git repositories for tests: a `git` that fails loudly, and bare repositories served
//! over git's "dumb" HTTP protocol on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Runs git in `dir` as a test author, with the defaults tests expect (branch `main`); panics
/// with git's stderr when it fails, and returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Serves `root` as static files on loopback: git's "dumb" HTTP protocol needs nothing more.
/// A runtime of `workers` threads, owned by a test server, and a listener on a free loopback
/// port with its address.
pub(crate) fn loopback_server(
    workers: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (runtime, listener, addr)
}

pub struct StaticServer {
    pub addr: SocketAddr,
    /// Every `Authorization` header a private server was sent, in order.
    pub authorizations: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl StaticServer {
    pub fn start(root: &Path) -> Self {
        Self::serve(root, None)
    }

    /// As [`StaticServer::start`], answering only requests with HTTP basic authentication as
    /// `user` and `password` (401 with a challenge otherwise, as git hosts do).
    pub fn start_private(root: &Path, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        Self::serve(root, Some(expected))
    }

    fn serve(root: &Path, expected: Option<String>) -> Self {
        let (runtime, listener, addr) = loopback_server(1);
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&authorizations);
        let app = axum::Router::new()
            .fallback_service(tower_http::services::ServeDir::new(root))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let (expected, seen) = (expected.clone(), Arc::clone(&seen));
                    async move {
                        let Some(expected) = expected else {
                            return next.run(request).await;
                        };
                        let given = request
                            .headers()
                            .get(axum::http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        if let Some(given) = &given {
                            seen.lock().expect("not poisoned").push(given.clone());
                        }
                        if given.as_deref() == Some(expected.as_str()) {
                            return next.run(request).await;
                        }
                        axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            [(axum::http::header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
                            "authentication required",
                        ))
                    }
                },
            ));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            authorizations,
            _runtime: runtime,
        }
    }
}

/// A bare repository at `<root>/<name>.git` with one commit on `main`, ready for dumb HTTP.
pub fn create_served_repo(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let src = root.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).expect("mkdir");
    git(&src, &["init", "-q", "-b", "main"]);
    for (path, content) in files {
        let file = src.join(path);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, content).expect("write");
    }
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "initial"]);
    let bare = root.join(format!("{name}.git"));
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().expect("utf8"),
            bare.to_str().expect("utf8"),
        ],
    );
    git(&bare, &["update-server-info"]);
    bare
}
