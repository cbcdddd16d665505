//! A scriptable HTTP endpoint on loopback: it records every request and answers with what the
//! test's script says, for a client tested against a stand-in (a fake API, a proxy that loses
//! an answer).

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

/// One request the endpoint received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    /// The path and query, as sent.
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// A header's value as text; `""` when absent or not text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A running endpoint; it stops with the test's runtime.
pub struct FakeEndpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeEndpoint {
    /// Serves `answer` on a free loopback port. Each request is recorded before `answer` sees
    /// it, so a script can look at what came earlier through [`FakeEndpoint::requests`].
    pub async fn start<F, Fut>(answer: F) -> Self
    where
        F: Fn(Recorded) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = Arc::clone(&recorded);
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let request = Recorded {
                method,
                uri,
                headers,
                body,
            };
            log.lock().unwrap().push(request.clone());
            answer(request)
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, recorded }
    }

    /// Every request so far, in the order they came.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }
}
