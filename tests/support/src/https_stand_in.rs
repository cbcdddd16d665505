//! An HTTPS server on loopback as `localhost`, with a certificate from a test authority made
//! for it: what a read-only egress proxy reads through and verifies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::RootCertStore;
use rustls::pki_types::PrivateKeyDer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A test certificate authority: the roots that trust it, its certificate (PEM), and server
/// settings with a certificate for `localhost` it signed.
pub fn localhost_authority() -> (RootCertStore, String, rustls::ServerConfig) {
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let ca_cert = ca.self_signed(&ca_key).expect("a self-signed authority");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|params| params.signed_by(&key, &issuer))
        .expect("a certificate for localhost");
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder.with_no_client_auth().with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
        })
        .expect("server settings");
    (roots, ca_cert.pem(), server)
}

/// A running HTTPS stand-in: every request is answered `200` with its own head as the body,
/// or with a blob of a given size.
pub struct HttpsStandIn {
    pub port: u16,
    /// Requests read (after a completed handshake).
    pub heard: Arc<AtomicUsize>,
    /// The roots that verify its certificate.
    pub roots: RootCertStore,
}

impl HttpsStandIn {
    /// Listens on 127.0.0.1 and answers each request with its head; serves on the current
    /// tokio runtime until it ends.
    pub async fn start() -> Self {
        Self::answering(None).await
    }

    /// As [`HttpsStandIn::start`], answering each request with `bytes` bytes.
    pub async fn serving(bytes: usize) -> Self {
        Self::answering(Some(bytes)).await
    }

    async fn answering(blob: Option<usize>) -> Self {
        let (roots, _, server) = localhost_authority();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let heard = Arc::new(AtomicUsize::new(0));
        let count = heard.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // As a real server does: its handshake's writes go out at once.
                let _ = stream.set_nodelay(true);
                let (acceptor, count) = (acceptor.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = &head[..head.len() - 4];
                    let length = blob.unwrap_or(head.len());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    match blob {
                        Some(mut left) => {
                            // From one chunk, so a large answer costs no memory of its own.
                            let chunk = [b'x'; 64 * 1024];
                            while left > 0 {
                                let n = left.min(chunk.len());
                                if stream.write_all(&chunk[..n]).await.is_err() {
                                    return;
                                }
                                left -= n;
                            }
                        }
                        None => {
                            let _ = stream.write_all(head).await;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { port, heard, roots }
    }

    /// How many requests it has read.
    pub fn heard(&self) -> usize {
        self.heard.load(Ordering::SeqCst)
    }
}
