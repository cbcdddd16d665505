//! A real S3-compatible server on loopback: moto's `moto_server` (PyPI `moto[server]`), one per
//! test. Where it is not installed the tests print why and pass, unless `CKRV_REQUIRE_S3=1`
//! (CI installs it and sets that).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

/// The `moto_server` executable to run, when it is not on `PATH`.
pub const S3_SERVER_ENV: &str = "CKRV_S3_SERVER";

/// Credentials the server accepts (moto takes any); the tests give them to the API through the
/// standard AWS variables.
pub const S3_ACCESS_KEY: &str = "ckrv-test-access-key";
pub const S3_SECRET_KEY: &str = "ckrv-test-secret-key-do-not-leak";

pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, what `--artifacts-endpoint` takes.
    pub endpoint: String,
}

impl S3Server {
    /// Starts a server, or says why it cannot and returns `None`.
    pub fn start() -> Option<Self> {
        let program = std::env::var(S3_SERVER_ENV).unwrap_or_else(|_| "moto_server".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                crate::skip_unless_required(
                    "CKRV_REQUIRE_S3",
                    &format!("no S3 server ({program}: {error})"),
                    &format!("pip install 'moto[server]' and set {S3_SERVER_ENV}"),
                );
                return None;
            }
        };
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while server.request(reqwest::Method::GET, "/moto-api/").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on {}",
                server.endpoint
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self
            .request(reqwest::Method::PUT, &format!("/{bucket}"))
            .expect("the S3 server answers");
        assert_eq!(status, 200, "creating bucket {bucket}: {body}");
    }

    /// Every key in `bucket`, in order (read as the API's credentials read them).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let store = self.client(bucket);
        block_on(async {
            let mut keys: Vec<String> = store
                .list(None)
                .map(|meta| meta.unwrap().location.to_string())
                .collect()
                .await;
            keys.sort();
            keys
        })
    }

    /// The object's bytes as text.
    pub fn object(&self, bucket: &str, key: &str) -> String {
        let store = self.client(bucket);
        block_on(async {
            let bytes = store.get(&key.into()).await.unwrap().bytes().await.unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        })
    }

    fn client(&self, bucket: &str) -> impl ObjectStore {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(S3_ACCESS_KEY)
            .with_secret_access_key(S3_SECRET_KEY)
            .build()
            .unwrap()
    }

    /// One unsigned request (moto lets anyone create a bucket): status and body, `None` when
    /// nothing answers.
    fn request(&self, method: reqwest::Method, path: &str) -> Option<(u16, String)> {
        let url = format!("{}{path}", self.endpoint);
        block_on(async {
            let response = reqwest::Client::new()
                .request(method, url)
                .send()
                .await
                .ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.ok()?))
        })
    }
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
