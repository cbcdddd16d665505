//! HTTPS seen from inside, for read-only allowlists: the proxy ends the agent's TLS with a
//! certificate of the host it asked for, signed by a certificate authority made for this one
//! proxy (and trusted only inside its sandbox), checks each request's method, and sends the
//! request on over a TLS connection of its own that verifies the real host's certificate.
//!
//! The authority's key lives in the proxy's memory only and dies with it; the sandbox gets its
//! certificate, never its key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The most host certificates kept at once.
const MAX_CACHED_HOSTS: usize = 256;

/// Why the interceptor could not be made, or could not speak TLS for a host.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    #[error("`{0}` is not a host name TLS can verify")]
    Name(String),
}

/// One proxy's certificate authority, the host certificates it has made, and how it verifies
/// the real hosts.
pub struct Interceptor {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    /// Per host: the TLS settings with its certificate, made once.
    hosts: Mutex<HashMap<String, Arc<ServerConfig>>>,
    upstream: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").finish_non_exhaustive()
    }
}

/// The crypto every TLS setting here uses: ring, as the rest of the workspace does.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Interceptor {
    /// A new authority; real hosts are verified against `roots` (the system's, or a test's).
    pub fn new(roots: RootCertStore) -> Result<Self, InterceptError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "ckrv egress proxy (one job, read-only)");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let ca_pem = params.self_signed(&key)?.pem();
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            issuer: Issuer::new(params, key),
            ca_pem,
            hosts: Mutex::default(),
            upstream: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// The system's roots: what the agent itself would trust without the proxy.
    pub fn system_roots() -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "a system root certificate could not be read");
        }
        roots.add_parsable_certificates(found.certs);
        roots
    }

    /// The authority's certificate (PEM), for the sandbox to trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Ends the agent's TLS on `stream` as `host`.
    pub(crate) async fn accept<S>(
        &self,
        host: &str,
        stream: S,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.server_config(host).map_err(std::io::Error::other)?;
        tokio_rustls::TlsAcceptor::from(config).accept(stream).await
    }

    /// TLS to the real `host` over `tcp`, its certificate verified.
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| std::io::Error::other(InterceptError::Name(host.to_string())))?;
        self.upstream.connect(name, tcp).await
    }

    fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, InterceptError> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = hosts.get(host) {
            return Ok(config.clone());
        }
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)?;
        // The proxy reads HTTP/1.1 requests: offer nothing else.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        // An agent may name many hosts under an allowed `*.domain`: the cache stays bounded.
        if hosts.len() >= MAX_CACHED_HOSTS {
            hosts.clear();
        }
        hosts.insert(host.to_string(), config.clone());
        Ok(config)
    }
}
