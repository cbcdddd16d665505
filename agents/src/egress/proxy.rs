//! The egress proxy: an HTTP proxy on a Unix socket, the only way out of a sandbox that allows
//! egress. It is the worker's: the agent reaches it through the socket bound into its sandbox.
//!
//! It takes `CONNECT host:port` (HTTPS and anything else in a tunnel) and plain absolute-form
//! requests (`GET http://host/path HTTP/1.1`), one task per connection. Each destination is
//! checked against the job's [`Allowlist`] by name, then by every address the name resolves
//! to, and the connection goes to the address that was checked (so DNS cannot change it in
//! between). A refusal is answered `403 Forbidden`, and reported on the proxy's channel, one
//! [`Refusal`] per refused request, before the answer is written.
//!
//! The same proxy also runs shared, on TCP ([`SharedEgressProxy`]): the control plane's, for
//! job pods on Kubernetes, whose agents cannot have a socket of their own. There each
//! connection names its job in `Proxy-Authorization`, and an [`Admission`] gives it that job's
//! allowlist and refusal channel, or answers `407`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::intercept::Interceptor;
use super::policy::{Allowlist, Refusal, Rule, split_host_port, strip_prefix_ignore_case};

/// The longest request head the proxy reads (request line and headers); a longer one is
/// answered `431` and closed.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long resolving a name, and connecting to one address, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections one proxy relays at once; more wait to be accepted. The proxy runs in
/// the worker, so an agent opening connections without end must not use up its descriptors.
pub const MAX_CONNECTIONS: usize = 256;

/// A running proxy. Dropping it stops it: its listener and every connection it relays end, and
/// its socket file is removed.
#[derive(Debug)]
pub struct EgressProxy {
    path: PathBuf,
    task: JoinHandle<()>,
    /// Under a read-only allowlist: the certificate authority the sandbox must trust.
    ca_pem: Option<String>,
}

impl EgressProxy {
    /// Listens on a Unix socket at `path` (replacing a stale one; mode 0600, so only this user
    /// can connect until the caller hands it over), checking every request against
    /// `allowlist` and sending each refusal to `refusals`. Must be called in a tokio runtime.
    pub fn start(
        path: impl Into<PathBuf>,
        allowlist: Allowlist,
        refusals: mpsc::Sender<Refusal>,
    ) -> io::Result<Self> {
        Self::start_with(path, allowlist, refusals, MAX_CONNECTIONS, None)
    }

    /// [`EgressProxy::start`], verifying the hosts of HTTPS it reads (under a read-only
    /// allowlist) against `roots` instead of the system's.
    pub fn start_trusting(
        path: impl Into<PathBuf>,
        allowlist: Allowlist,
        refusals: mpsc::Sender<Refusal>,
        roots: rustls::RootCertStore,
    ) -> io::Result<Self> {
        Self::start_with(path, allowlist, refusals, MAX_CONNECTIONS, Some(roots))
    }

    /// [`EgressProxy::start`], relaying at most `limit` connections at once. A read-only
    /// allowlist gets an [`Interceptor`], so HTTPS requests can be checked too.
    pub(crate) fn start_with(
        path: impl Into<PathBuf>,
        allowlist: Allowlist,
        refusals: mpsc::Sender<Refusal>,
        limit: usize,
        roots: Option<rustls::RootCertStore>,
    ) -> io::Result<Self> {
        let interceptor = match allowlist.is_read_only() {
            true => Some(Arc::new(
                Interceptor::new(roots.unwrap_or_else(Interceptor::system_roots))
                    .map_err(io::Error::other)?,
            )),
            false => None,
        };
        let ca_pem = interceptor.as_ref().map(|i| i.ca_pem().to_string());
        let path = path.into();
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let limit = Arc::new(tokio::sync::Semaphore::new(limit));
        let checks = Arc::new(Checks {
            allowlist,
            interceptor,
        });
        let task = tokio::spawn(serve(listener, limit, move |stream| {
            connection(stream, checks.clone(), refusals.clone())
        }));
        Ok(Self { path, task, ca_pem })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The certificate authority (PEM) of the HTTPS this proxy reads, under a read-only
    /// allowlist: the sandbox's clients must trust it.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What each connection is checked against.
struct Checks {
    allowlist: Allowlist,
    /// Reads HTTPS requests, under a read-only allowlist.
    interceptor: Option<Arc<Interceptor>>,
}

/// Who a connection of a [`SharedEgressProxy`] is for, from what it sent in
/// `Proxy-Authorization`.
pub trait Admission: Send + Sync + 'static {
    /// The allowlist and refusal channel of the job whose credentials `authorization` holds
    /// (`None`: the client sent none), or why the connection is refused (answered `407`).
    fn admit(
        &self,
        authorization: Option<&str>,
    ) -> impl Future<Output = Result<Admitted, String>> + Send;
}

/// What an admitted connection is checked against, and where its refusals go.
#[derive(Debug)]
pub struct Admitted {
    pub allowlist: Allowlist,
    pub refusals: mpsc::Sender<Refusal>,
}

/// A proxy on TCP that many jobs share, each connection admitted by an [`Admission`]. HTTPS
/// under a read-only allowlist cannot be read here (no sandbox trusts this proxy's authority),
/// so such tunnels are answered `502`. Dropping it stops it and every connection it relays.
#[derive(Debug)]
pub struct SharedEgressProxy {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl SharedEgressProxy {
    /// Serves on `listener`. Must be called in a tokio runtime.
    pub fn start<A: Admission>(listener: TcpListener, admission: A) -> io::Result<Self> {
        let address = listener.local_addr()?;
        let admission = Arc::new(admission);
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_SHARED_CONNECTIONS));
        let task = tokio::spawn(serve(listener, limit, move |stream: TcpStream| {
            let _ = stream.set_nodelay(true);
            shared_connection(stream, admission.clone())
        }));
        Ok(Self { address, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for SharedEgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most connections a [`SharedEgressProxy`] relays at once, for all jobs together.
pub const MAX_SHARED_CONNECTIONS: usize = 4096;

/// A listener of the proxy's: a Unix socket, or TCP for the shared proxy.
trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Accepts connections until aborted, each handled by `handle`; the connections are its
/// tasks, so they end with it.
async fn serve<L, F, C>(listener: L, limit: Arc<tokio::sync::Semaphore>, handle: F)
where
    L: Listener,
    F: Fn(L::Stream) -> C + Send + 'static,
    C: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        // A connection is accepted only when it may be relayed; until then it waits in the
        // listener's backlog.
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let connection = handle(stream);
                    connections.spawn(async move {
                        connection.await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Out of file descriptors, most likely: wait for connections to end.
                    tracing::warn!(%error, "egress proxy cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => drop(permit),
        }
    }
}

/// Why a request got no tunnel or response from its destination: answered with a status.
#[derive(Debug)]
enum Failure {
    BadRequest(&'static str),
    TooLarge,
    Timeout,
    Refused(Refusal),
    /// A shared proxy's client named no job it may act for.
    Unauthorized(String),
    Unreachable(String),
    /// The client went away, or a relay failed part way: nothing to answer.
    Io(io::Error),
}

/// A client's side of a connection.
trait Client: Drain + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: Drain + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Client for S {}

async fn read_head_in_time<S: Client>(client: &mut S) -> Result<Head, Failure> {
    match tokio::time::timeout(HEAD_TIMEOUT, read_head(client)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(head) => head,
    }
}

async fn connection(mut client: UnixStream, checks: Arc<Checks>, refusals: mpsc::Sender<Refusal>) {
    let outcome = match read_head_in_time(&mut client).await {
        Ok(head) => relay(&mut client, head, &checks, &refusals).await,
        Err(failure) => Err(failure),
    };
    answer(&mut client, outcome, Some(&refusals)).await;
}

/// A connection of the shared proxy: admitted by its `Proxy-Authorization` first.
async fn shared_connection<A: Admission>(mut client: TcpStream, admission: Arc<A>) {
    let head = match read_head_in_time(&mut client).await {
        Ok(head) => head,
        Err(failure) => return answer(&mut client, Err(failure), None).await,
    };
    let authorization = match parse(&head.text) {
        Ok(request) => request
            .header("proxy-authorization")
            .first()
            .map(|value| value.to_string()),
        Err(failure) => return answer(&mut client, Err(failure), None).await,
    };
    let admitted = match admission.admit(authorization.as_deref()).await {
        Ok(admitted) => admitted,
        Err(why) => return answer(&mut client, Err(Failure::Unauthorized(why)), None).await,
    };
    let checks = Checks {
        allowlist: admitted.allowlist,
        interceptor: None,
    };
    let outcome = relay(&mut client, head, &checks, &admitted.refusals).await;
    answer(&mut client, outcome, Some(&admitted.refusals)).await;
}

/// Answers a request that got no response from its destination; reports a refusal first
/// (a connection not yet admitted has no `refusals`, and nothing of it is refused).
async fn answer<S>(
    client: &mut S,
    outcome: Result<(), Failure>,
    refusals: Option<&mpsc::Sender<Refusal>>,
) where
    S: Drain + tokio::io::AsyncWrite + Unpin,
{
    let answered = match outcome {
        Ok(()) => Ok(()),
        Err(Failure::Io(error)) => Err(error),
        Err(Failure::Refused(refusal)) => {
            tracing::debug!(%refusal, "egress refused");
            // Reported before it is answered, so the report is out by the time the agent
            // knows (and perhaps ends).
            if let Some(refusals) = refusals {
                let _ = refusals.send(refusal.clone()).await;
            }
            respond(client, "403 Forbidden", &refusal.to_string()).await
        }
        Err(Failure::Unauthorized(why)) => {
            respond(client, "407 Proxy Authentication Required", &why).await
        }
        Err(Failure::BadRequest(why)) => respond(client, "400 Bad Request", why).await,
        Err(Failure::TooLarge) => {
            let why = format!("the request head is larger than {MAX_HEAD_BYTES} bytes");
            respond(client, "431 Request Header Fields Too Large", &why).await
        }
        Err(Failure::Timeout) => {
            respond(client, "408 Request Timeout", "no request head in time").await
        }
        Err(Failure::Unreachable(why)) => respond(client, "502 Bad Gateway", &why).await,
    };
    if let Err(error) = answered {
        tracing::debug!(%error, "egress connection ended");
    }
}

/// A client connection whose unread input can be dropped without waiting.
trait Drain {
    /// Reads what is already there, up to a bound, without waiting.
    fn drain(&mut self);
}

/// Reads, with `try_read`, what is already there, up to a bound, and drops it.
fn drain_ready(mut try_read: impl FnMut(&mut [u8]) -> io::Result<usize>) {
    let mut unread = [0u8; 4096];
    for _ in 0..64 {
        match try_read(&mut unread) {
            Ok(read) if read > 0 => {}
            _ => break,
        }
    }
}

impl Drain for UnixStream {
    fn drain(&mut self) {
        drain_ready(|unread| self.try_read(unread));
    }
}

impl Drain for TcpStream {
    fn drain(&mut self) {
        drain_ready(|unread| self.try_read(unread));
    }
}

impl<S> Drain for tokio_rustls::server::TlsStream<S> {
    /// Inside TLS, nothing can be read without waiting; the answer is sent all the same.
    fn drain(&mut self) {}
}

async fn respond<S>(client: &mut S, status: &str, body: &str) -> io::Result<()>
where
    S: Drain + tokio::io::AsyncWrite + Unpin,
{
    // A client that sent no credentials, or wrong ones, is told how to send them.
    let challenge = match status.starts_with("407") {
        true => "Proxy-Authenticate: Basic realm=\"ckrv egress\"\r\n",
        false => "",
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{challenge}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await?;
    // What the client sent and the proxy did not read (an oversized head, a refused body)
    // would make closing reset the connection, and the client might never read the answer.
    client.drain();
    Ok(())
}

/// A request head (without its blank line) and what the client sent after it.
struct Head {
    text: String,
    rest: Vec<u8>,
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(client: &mut S) -> Result<Head, Failure> {
    let mut buffer = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let read = client.read(&mut chunk).await.map_err(Failure::Io)?;
        if read == 0 {
            return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let from = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + at;
            if end + 4 > MAX_HEAD_BYTES {
                return Err(Failure::TooLarge);
            }
            let rest = buffer.split_off(end + 4);
            buffer.truncate(end);
            let text = String::from_utf8(buffer)
                .map_err(|_| Failure::BadRequest("the request head is not UTF-8"))?;
            return Ok(Head { text, rest });
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(Failure::TooLarge);
        }
    }
}

/// A parsed request head.
struct Request<'a> {
    method: &'a str,
    target: &'a str,
    version: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

fn parse(text: &str) -> Result<Request<'_>, Failure> {
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::BadRequest("malformed request line"));
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
    {
        return Err(Failure::BadRequest("malformed request line"));
    }
    let headers = lines
        .map(|line| {
            line.split_once(':')
                .filter(|(name, _)| !name.is_empty() && !name.contains([' ', '\t']))
                .map(|(name, value)| (name, value.trim()))
                .ok_or(Failure::BadRequest("malformed header"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Request {
        method,
        target,
        version,
        headers,
    })
}

impl Request<'_> {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    }
}

/// Headers for this hop only, never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// A host as a client may name it: letters, digits and `.-_:` (no spaces or controls to reach
/// a log line).
fn check_host(host: &str) -> Result<(), Failure> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Failure::BadRequest("bad host"))
    }
}

async fn relay<S: Client>(
    client: &mut S,
    head: Head,
    checks: &Checks,
    refusals: &mpsc::Sender<Refusal>,
) -> Result<(), Failure> {
    let allowlist = &checks.allowlist;
    let request = parse(&head.text)?;
    if request.method == "CONNECT" {
        let (host, port) = split_host_port(request.target)
            .and_then(|(host, port)| Some((host, port?)))
            .ok_or(Failure::BadRequest("CONNECT needs host:port"))?;
        check_host(host)?;
        let rule = allowlist.rule(host, port).map_err(Failure::Refused)?;
        if allowlist.reads_tunnel(rule) {
            let Some(interceptor) = &checks.interceptor else {
                return Err(Failure::Unreachable(
                    "a read-only allowlist's tunnels must be read, and this proxy cannot".into(),
                ));
            };
            if !head.rest.is_empty() {
                return Err(Failure::BadRequest(
                    "data sent before the tunnel was established",
                ));
            }
            let target = Target { host, port, rule };
            return intercept(client, target, allowlist, interceptor, refusals).await;
        }
        let mut upstream = open(rule, host, port).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .map_err(Failure::Io)?;
        upstream.write_all(&head.rest).await.map_err(Failure::Io)?;
        tokio::io::copy_bidirectional(client, &mut upstream)
            .await
            .map_err(Failure::Io)?;
        return Ok(());
    }
    let (authority, host, port, path) = absolute_target(request.target)?;
    check_host(host)?;
    let rule = allowlist.rule(host, port).map_err(Failure::Refused)?;
    let target = Target { host, port, rule };
    let body = check_request(&request, &target, allowlist)?;
    let upstream = open(rule, host, port).await?;
    forward(
        client, &request, authority, &path, &head.rest, body, upstream,
    )
    .await
}

/// Where a request goes, and the rule that allows it.
struct Target<'a> {
    host: &'a str,
    port: u16,
    rule: &'a Rule,
}

/// Checks a request's method and body against the allowlist; returns the body's length.
fn check_request(
    request: &Request<'_>,
    target: &Target<'_>,
    allowlist: &Allowlist,
) -> Result<Option<u64>, Failure> {
    let body = body_length(request)?;
    allowlist
        .check_request(target.rule, request.method, body, target.host, target.port)
        .map_err(Failure::Refused)?;
    Ok(body)
}

/// A tunnel under a read-only allowlist: ends the client's TLS as the host, reads its
/// request, checks it like a plain one, and forwards it over TLS to the real host.
async fn intercept<S: Client>(
    client: &mut S,
    target: Target<'_>,
    allowlist: &Allowlist,
    interceptor: &Interceptor,
    refusals: &mpsc::Sender<Refusal>,
) -> Result<(), Failure> {
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .map_err(Failure::Io)?;
    let accepted = tokio::time::timeout(HEAD_TIMEOUT, interceptor.accept(target.host, client));
    let mut tls = match accepted.await {
        Ok(Ok(tls)) => tls,
        // The client gave up, or does not trust the proxy's authority: nothing to answer.
        Ok(Err(error)) => return Err(Failure::Io(error)),
        Err(_) => return Err(Failure::Io(io::ErrorKind::TimedOut.into())),
    };
    let outcome = async {
        let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut tls))
            .await
            .map_err(|_| Failure::Timeout)??;
        let request = parse(&head.text)?;
        if !request.target.starts_with('/') {
            return Err(Failure::BadRequest(
                "inside a tunnel, name the path (/path), not a URL",
            ));
        }
        let body = check_request(&request, &target, allowlist)?;
        let tcp = open(target.rule, target.host, target.port).await?;
        let upstream = interceptor.connect(target.host, tcp).await.map_err(|e| {
            Failure::Unreachable(format!("TLS to {}:{}: {e}", target.host, target.port))
        })?;
        let authority = format!("{}:{}", target.host, target.port);
        forward(
            &mut tls,
            &request,
            &authority,
            request.target,
            &head.rest,
            body,
            upstream,
        )
        .await
    }
    .await;
    answer(&mut tls, outcome, Some(refusals)).await;
    Ok(())
}

/// Sends one request on to `upstream` (its head in origin form, hop-by-hop headers dropped,
/// `Connection: close`), then its body, and the response back to the client.
async fn forward<C, U>(
    client: &mut C,
    request: &Request<'_>,
    authority: &str,
    path: &str,
    rest: &[u8],
    body: Option<u64>,
    mut upstream: U,
) -> Result<(), Failure>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut out = format!("{} {path} {}\r\n", request.method, request.version);
    if request.header("host").is_empty() {
        // HTTP/1.0 clients may send none; the origin-form line no longer names the host.
        out.push_str(&format!("Host: {authority}\r\n"));
    }
    for (name, value) in &request.headers {
        if !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    // One request per connection: what the client sends after this request's body is not
    // passed on, so each request is checked.
    out.push_str("Connection: close\r\n\r\n");
    upstream
        .write_all(out.as_bytes())
        .await
        .map_err(Failure::Io)?;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let send = async {
        match body {
            Some(length) => {
                let sent = rest
                    .len()
                    .min(usize::try_from(length).unwrap_or(usize::MAX));
                upstream_write.write_all(&rest[..sent]).await?;
                let left = length.saturating_sub(sent as u64);
                tokio::io::copy(&mut (&mut client_read).take(left), &mut upstream_write).await?;
            }
            None => {
                upstream_write.write_all(rest).await?;
                tokio::io::copy(&mut client_read, &mut upstream_write).await?;
            }
        }
        Ok::<_, io::Error>(())
    };
    let receive = async {
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    let (sent, received) = tokio::join!(send, receive);
    sent.and(received).map_err(Failure::Io)
}

/// The request body's length: from `Content-Length`, 0 without one, `None` when it is
/// chunked (passed on as it comes).
fn body_length(request: &Request<'_>) -> Result<Option<u64>, Failure> {
    let lengths = request.header("content-length");
    let chunked = !request.header("transfer-encoding").is_empty();
    match (lengths.as_slice(), chunked) {
        ([], false) => Ok(Some(0)),
        ([], true) => Ok(None),
        ([length], false) => length
            .parse()
            .map(Some)
            .map_err(|_| Failure::BadRequest("bad Content-Length")),
        _ => Err(Failure::BadRequest(
            "ambiguous body length (Content-Length with Transfer-Encoding, or twice)",
        )),
    }
}

/// `http://host[:port][/path]` as its authority, host, port (80 by default) and origin-form
/// path.
fn absolute_target(target: &str) -> Result<(&str, &str, u16, String), Failure> {
    let Some(rest) = strip_prefix_ignore_case(target, "http://") else {
        return Err(Failure::BadRequest(if target.starts_with('/') {
            "this is a proxy: name the absolute URL (http://host/path), or CONNECT host:port"
        } else {
            "only http:// URLs are proxied as requests; use CONNECT for others"
        }));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(Failure::BadRequest("credentials in the URL"));
    }
    let (host, port) = split_host_port(authority).ok_or(Failure::BadRequest("bad host or port"))?;
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((authority, host, port.unwrap_or(80), path))
}

/// A connection to `host:port`, which `rule` allows, at an address the rule allows too.
async fn open(rule: &Rule, host: &str, port: u16) -> Result<TcpStream, Failure> {
    let addresses: Vec<SocketAddr> =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Failure::Unreachable(format!("resolving {host} timed out")))?
            .map_err(|e| Failure::Unreachable(format!("cannot resolve {host}: {e}")))?
            .collect();
    let mut refused = None;
    let mut failed = None;
    for address in addresses {
        if let Err(refusal) = rule.check_address(host, port, address.ip()) {
            refused.get_or_insert(refusal);
            continue;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                // A relay: each write goes on at once (a TLS handshake's small writes would
                // otherwise wait for delayed ACKs).
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(error)) => failed = Some(error.to_string()),
            Err(_) => failed = Some("timed out".to_string()),
        }
    }
    Err(match (failed, refused) {
        (Some(error), _) => {
            Failure::Unreachable(format!("cannot connect to {host}:{port}: {error}"))
        }
        (None, Some(refusal)) => Failure::Refused(refusal),
        (None, None) => Failure::Unreachable(format!("{host} has no address")),
    })
}

#[cfg(test)]
mod tests {
    //! Over real sockets on loopback only: every destination, allowed or not, is 127.0.0.1 or
    //! a name resolving to loopback, so a broken proxy still sends nothing off this machine.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::egress::policy::{Entry, Policy, RefusalReason};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in HTTP server on 127.0.0.1: each connection's request head is answered with
    /// the head itself as the body; `heard` counts connections.
    struct Upstream {
        port: u16,
        heard: Arc<AtomicUsize>,
    }

    async fn upstream() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heard = Arc::new(AtomicUsize::new(0));
        let count = heard.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap() == 1
                    {
                        head.push(byte[0]);
                    }
                    let mut body = vec![0u8; content_length(&head)];
                    stream.read_exact(&mut body).await.unwrap();
                    head.extend_from_slice(&body);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        head.len()
                    );
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    stream.write_all(&head).await.unwrap();
                });
            }
        });
        Upstream { port, heard }
    }

    fn content_length(head: &[u8]) -> usize {
        String::from_utf8_lossy(head)
            .lines()
            .find_map(|l| {
                l.strip_prefix("Content-Length: ")
                    .map(|n| n.trim().parse().unwrap())
            })
            .unwrap_or(0)
    }

    struct Proxy {
        _dir: tempfile::TempDir,
        proxy: EgressProxy,
        refusals: mpsc::Receiver<Refusal>,
    }

    fn start_proxy(allowlist: Allowlist) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let (tx, refusals) = mpsc::channel(16);
        let proxy = EgressProxy::start(dir.path().join("egress.sock"), allowlist, tx).unwrap();
        Proxy {
            _dir: dir,
            proxy,
            refusals,
        }
    }

    /// An allowlist of `policy` with the stand-in on 127.0.0.1:`port` marked local.
    fn allowing(policy: &str, port: u16) -> Allowlist {
        let policy: Policy = policy.parse().unwrap();
        policy
            .allowlist(None)
            .unwrap()
            .allow_local(format!("127.0.0.1:{port}").parse::<Entry>().unwrap())
    }

    /// Sends `request` through the proxy and reads until it closes (a proxy that lets
    /// through what it should not may leave the stand-in waiting: that fails, not hangs).
    async fn exchange(proxy: &Proxy, request: &[u8]) -> String {
        let client = UnixStream::connect(proxy.proxy.path()).await.unwrap();
        exchange_on(client, request).await
    }

    /// [`exchange`] on a connection to any proxy.
    async fn exchange_on<S>(mut client: S, request: &[u8]) -> String
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        client.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("the proxy answers and closes in time")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn connect_to_an_allowed_host_tunnels_bytes_both_ways() {
        let up = upstream().await;
        let proxy = start_proxy(allowing("example.com", up.port));
        let request = format!(
            "CONNECT 127.0.0.1:{0} HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n\r\nPOST /in-the-tunnel HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            up.port
        );
        let answer = exchange(&proxy, request.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK"),
            "{answer}"
        );
        assert!(
            answer.ends_with("POST /in-the-tunnel HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            "{answer}"
        );
        assert_eq!(up.heard.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn connect_to_a_host_outside_the_list_is_refused_and_reported_once() {
        let up = upstream().await;
        let other = upstream().await;
        let mut proxy = start_proxy(allowing("example.com", up.port));
        let answer = exchange(
            &proxy,
            format!("CONNECT localhost:{} HTTP/1.1\r\n\r\n", other.port).as_bytes(),
        )
        .await;
        let line = format!(
            "Connection blocked by network allowlist: localhost:{} (not in the job's allowlist, policy `example.com`)",
            other.port
        );
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.ends_with(&format!("\r\n\r\n{line}\n")), "{answer}");
        let refusal = proxy.refusals.try_recv().unwrap();
        assert_eq!(
            (refusal.host.as_str(), refusal.port),
            ("localhost", other.port)
        );
        assert_eq!(refusal.to_string(), line);
        assert!(proxy.refusals.try_recv().is_err(), "one event per refusal");
        assert_eq!(other.heard.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_allowed_name_on_a_loopback_address_is_refused_unless_marked_local() {
        let up = upstream().await;
        let mut proxy = start_proxy(
            format!("localhost:{}", up.port)
                .parse::<Policy>()
                .unwrap()
                .allowlist(None)
                .unwrap(),
        );
        let answer = exchange(
            &proxy,
            format!("CONNECT localhost:{} HTTP/1.1\r\n\r\n", up.port).as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        let refusal = proxy.refusals.try_recv().unwrap();
        assert!(
            matches!(
                refusal.reason,
                RefusalReason::Address {
                    range: "loopback",
                    ..
                }
            ),
            "{refusal}"
        );
        assert!(answer.contains("refused: loopback"), "{answer}");
        assert_eq!(
            up.heard.load(Ordering::SeqCst),
            0,
            "nothing reached the host's service"
        );
    }

    #[tokio::test]
    async fn a_plain_get_is_forwarded_in_origin_form_one_request_per_connection() {
        let up = upstream().await;
        let proxy = start_proxy(allowing("example.com", up.port).read_only(true));
        let request = format!(
            "GET http://127.0.0.1:{0}/path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\nGET http://127.0.0.1:{0}/second HTTP/1.1\r\n\r\n",
            up.port
        );
        let answer = exchange(&proxy, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with(&format!(
                "\r\n\r\nGET /path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                up.port
            )),
            "{answer}"
        );
        assert!(!answer.contains("/second") && !answer.contains("Proxy-Connection"));
        assert_eq!(up.heard.load(Ordering::SeqCst), 1);
        let answer = exchange(
            &proxy,
            format!("HEAD http://127.0.0.1:{}/ HTTP/1.0\r\n\r\n", up.port).as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with(&format!(
                "\r\n\r\nHEAD / HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                up.port
            )),
            "a request without Host gets one: {answer}"
        );
        assert_eq!(up.heard.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_that_writes_is_refused_under_read_only() {
        let up = upstream().await;
        let mut proxy = start_proxy(allowing("example.com", up.port).read_only(true));
        let request = format!(
            "POST http://127.0.0.1:{}/upload HTTP/1.1\r\nContent-Length: 6\r\n\r\nsecret",
            up.port
        );
        let answer = exchange(&proxy, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.contains("method POST not allowed"), "{answer}");
        let refusal = proxy.refusals.try_recv().unwrap();
        assert_eq!(
            refusal.reason,
            RefusalReason::Method {
                method: "POST".into()
            }
        );
        assert_eq!(up.heard.load(Ordering::SeqCst), 0);
        // Nor does a tunnel pass it unseen: the proxy expects TLS it can read, and bytes that
        // are not reach nobody.
        let connect = format!(
            "CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\nPOST /in-the-tunnel HTTP/1.1\r\nContent-Length: 6\r\n\r\nsecret",
            up.port
        );
        let answer = exchange(&proxy, connect.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert_eq!(up.heard.load(Ordering::SeqCst), 0);
        // Without read_only, the same request goes through, body and all.
        let proxy = start_proxy(allowing("example.com", up.port));
        let answer = exchange(&proxy, request.as_bytes()).await;
        assert!(
            answer.ends_with("Connection: close\r\n\r\nsecret"),
            "{answer}"
        );
        // The gateway takes the agent's POSTs, plain or tunnelled (not read), under read-only.
        let gateway = Entry::origin_of(&format!("http://127.0.0.1:{}", up.port)).unwrap();
        let read_only: Policy = "example.com;read-only".parse().unwrap();
        let proxy = start_proxy(read_only.allowlist(Some(gateway)).unwrap());
        let answer = exchange(&proxy, request.as_bytes()).await;
        assert!(
            answer.ends_with("Connection: close\r\n\r\nsecret"),
            "{answer}"
        );
        let answer = exchange(&proxy, connect.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK")
                && answer.ends_with("secret"),
            "{answer}"
        );
    }

    /// `request` to `https://localhost:PORT` through the proxy, trusting `ca_pem`: the answer,
    /// or the error that ended it.
    async fn https_exchange(
        proxy: &Proxy,
        ca_pem: &str,
        port: u16,
        request: &str,
    ) -> io::Result<String> {
        use rustls::pki_types::pem::PemObject as _;
        let mut client = UnixStream::connect(proxy.proxy.path()).await?;
        client
            .write_all(format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .await?;
        let Ok(head) = read_head(&mut client).await else {
            return Err(io::ErrorKind::InvalidData.into());
        };
        assert_eq!(head.text, "HTTP/1.1 200 Connection Established");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, client)
            .await?;
        tls.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
            .await
            .expect("the proxy answers and closes in time")?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    fn start_proxy_trusting(allowlist: Allowlist, roots: rustls::RootCertStore) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let (tx, refusals) = mpsc::channel(16);
        let path = dir.path().join("egress.sock");
        let proxy = EgressProxy::start_trusting(path, allowlist, tx, roots).unwrap();
        Proxy {
            _dir: dir,
            proxy,
            refusals,
        }
    }

    /// `model;read-only`, and the stand-in at `localhost:PORT` (marked local).
    fn read_only_to(port: u16) -> Allowlist {
        "model;read-only"
            .parse::<Policy>()
            .unwrap()
            .allowlist(None)
            .unwrap()
            .allow_local(format!("localhost:{port}").parse().unwrap())
    }

    #[tokio::test]
    async fn under_read_only_https_is_read_so_reads_go_through_and_writes_are_refused() {
        let up = ckrv_test_support::HttpsStandIn::start().await;
        let mut proxy = start_proxy_trusting(read_only_to(up.port), up.roots.clone());
        let ca = proxy.proxy.ca_pem().expect("an authority").to_string();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");

        let get = "GET /simple/pkg/ HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n";
        let answer = https_exchange(&proxy, &ca, up.port, get).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with("GET /simple/pkg/ HTTP/1.1\r\nHost: localhost\r\nConnection: close"),
            "the real host got the request, its hop-by-hop headers replaced: {answer}"
        );
        assert_eq!(up.heard(), 1);

        let post = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n\r\nsecret";
        let answer = https_exchange(&proxy, &ca, up.port, post).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.contains("method POST not allowed"), "{answer}");
        let refusal = proxy.refusals.try_recv().unwrap();
        assert_eq!(
            refusal.reason,
            RefusalReason::Method {
                method: "POST".into()
            }
        );
        assert_eq!(
            (refusal.host.as_str(), refusal.port),
            ("localhost", up.port)
        );
        assert_eq!(up.heard(), 1, "the POST never left");
        // Nor does a GET that carries a body.
        let carrying =
            "GET /simple/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 6\r\n\r\nsecret";
        let answer = https_exchange(&proxy, &ca, up.port, carrying)
            .await
            .unwrap();
        assert!(answer.contains("a GET with a body not allowed"), "{answer}");
        assert!(matches!(
            proxy.refusals.try_recv().unwrap().reason,
            RefusalReason::Body { .. }
        ));
        assert_eq!(up.heard(), 1);

        // A client that does not trust the proxy's authority gets no request through.
        let (_, stranger, _) = ckrv_test_support::localhost_authority();
        let refused = https_exchange(&proxy, &stranger, up.port, get).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(up.heard(), 1);
    }

    #[tokio::test]
    async fn under_read_only_a_host_whose_certificate_fails_is_answered_502() {
        let up = ckrv_test_support::HttpsStandIn::start().await;
        // The system's roots do not know the stand-in's authority.
        let proxy = start_proxy(read_only_to(up.port));
        let ca = proxy.proxy.ca_pem().unwrap().to_string();
        let get = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let answer = https_exchange(&proxy, &ca, up.port, get).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains(&format!("TLS to localhost:{}", up.port)),
            "{answer}"
        );
        assert_eq!(up.heard(), 0);
        // Not read-only: no authority, and tunnels are passed through unread.
        let plain = start_proxy(allowing("example.com", up.port));
        assert!(plain.proxy.ca_pem().is_none());
    }

    #[tokio::test]
    async fn bad_and_oversized_heads_are_answered_and_the_proxy_keeps_serving() {
        let up = upstream().await;
        let mut proxy = start_proxy(allowing("example.com", up.port));
        let huge = format!(
            "GET http://127.0.0.1:{}/ HTTP/1.1\r\nX: {}",
            up.port,
            "a".repeat(2 * MAX_HEAD_BYTES)
        );
        let answer = exchange(&proxy, huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        for (request, status) in [
            ("GET / HTTP/1.1\r\n\r\n", "400"),
            ("GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", "400"),
            ("CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", "400"),
            ("CONNECT [::1 HTTP/1.1\r\n\r\n", "400"),
            ("GET http://a\u{7}b/ HTTP/1.1\r\n\r\n", "400"),
            ("BREW\r\n\r\n", "400"),
            ("GET http://user@127.0.0.1/ HTTP/1.1\r\n\r\n", "400"),
            (
                "GET http://127.0.0.1:PORT/ HTTP/1.1\r\nbad header\r\n\r\n",
                "400",
            ),
            (
                "GET http://127.0.0.1:PORT/ HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                "400",
            ),
            (
                "POST http://127.0.0.1:PORT/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "400",
            ),
            ("GET http://127.0.0.1:99999/ HTTP/1.1\r\n\r\n", "400"),
        ] {
            let request = request.replace("PORT", &up.port.to_string());
            let answer = exchange(&proxy, request.as_bytes()).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{request:?}: {answer}"
            );
        }
        let mut client = UnixStream::connect(proxy.proxy.path()).await.unwrap();
        client
            .write_all(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n'])
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(
            proxy.refusals.try_recv().is_err(),
            "malformed requests are not refusals"
        );
        assert_eq!(up.heard.load(Ordering::SeqCst), 0);
        let answer = exchange(
            &proxy,
            format!("GET http://127.0.0.1:{}/ok HTTP/1.1\r\n\r\n", up.port).as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_for_one_to_end() {
        let up = upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let (tx, _refusals) = mpsc::channel(16);
        let path = dir.path().join("egress.sock");
        let _proxy =
            EgressProxy::start_with(&path, allowing("example.com", up.port), tx, 1, None).unwrap();
        let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", up.port);
        let mut first = UnixStream::connect(&path).await.unwrap();
        first.write_all(connect.as_bytes()).await.unwrap();
        let mut established = [0u8; 39];
        first.read_exact(&mut established).await.unwrap();
        let mut second = UnixStream::connect(&path).await.unwrap();
        second.write_all(connect.as_bytes()).await.unwrap();
        let waited =
            tokio::time::timeout(Duration::from_millis(300), second.read(&mut [0u8; 1])).await;
        assert!(
            waited.is_err(),
            "the second connection was served past the limit"
        );
        drop(first);
        let served =
            tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut established)).await;
        assert!(matches!(served, Ok(Ok(_))), "{served:?}");
        assert_eq!(&established, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    }

    #[tokio::test]
    async fn dropping_the_proxy_removes_its_socket_and_ends_its_tunnels() {
        let up = upstream().await;
        let proxy = start_proxy(allowing("example.com", up.port));
        let path = proxy.proxy.path().to_path_buf();
        let mut client = UnixStream::connect(&path).await.unwrap();
        client
            .write_all(format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", up.port).as_bytes())
            .await
            .unwrap();
        let mut established = [0u8; 39];
        client.read_exact(&mut established).await.unwrap();
        assert_eq!(&established, b"HTTP/1.1 200 Connection Established\r\n\r\n");
        drop(proxy);
        assert!(!path.exists());
        let mut rest = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
        assert!(
            matches!(ended, Ok(Ok(0))),
            "the tunnel ends with the proxy: {ended:?}"
        );
    }

    /// Admits `Basic am9iOnRva2Vu` (`job:token`) with its allowlist; nothing else.
    struct OneJob {
        allowlist: Allowlist,
        refusals: mpsc::Sender<Refusal>,
        asked: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    }

    impl Admission for OneJob {
        async fn admit(&self, authorization: Option<&str>) -> Result<Admitted, String> {
            self.asked
                .lock()
                .unwrap()
                .push(authorization.map(str::to_string));
            match authorization {
                Some("Basic am9iOnRva2Vu") => Ok(Admitted {
                    allowlist: self.allowlist.clone(),
                    refusals: self.refusals.clone(),
                }),
                _ => Err("name your job: its model token as the proxy password".into()),
            }
        }
    }

    async fn shared_exchange(proxy: &SharedEgressProxy, request: &str) -> String {
        let client = TcpStream::connect(proxy.local_addr()).await.unwrap();
        exchange_on(client, request.as_bytes()).await
    }

    #[tokio::test]
    async fn the_shared_proxy_admits_only_named_jobs_and_checks_each_against_its_allowlist() {
        let up = upstream().await;
        let other = upstream().await;
        let (tx, mut refusals) = mpsc::channel(16);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let admission = OneJob {
            allowlist: allowing("registries", up.port),
            refusals: tx,
            asked: asked.clone(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = SharedEgressProxy::start(listener, admission).unwrap();

        let anonymous = format!("CONNECT 127.0.0.1:{0} HTTP/1.1\r\n\r\n", up.port);
        let answer = shared_exchange(&proxy, &anonymous).await;
        assert!(
            answer.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"ckrv egress\"\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\nname your job: its model token as the proxy password\n"),
            "{answer}"
        );
        let wrong = format!(
            "GET http://127.0.0.1:{0}/ HTTP/1.1\r\nProxy-Authorization: Basic d3Jvbmc=\r\n\r\n",
            up.port
        );
        assert!(
            shared_exchange(&proxy, &wrong)
                .await
                .starts_with("HTTP/1.1 407 ")
        );
        assert_eq!(
            up.heard.load(Ordering::SeqCst),
            0,
            "nothing passes unadmitted"
        );

        // Admitted: the credentials stay with the proxy, and the request goes on.
        let get = format!(
            "GET http://127.0.0.1:{0}/x HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nProxy-Authorization: Basic am9iOnRva2Vu\r\n\r\n",
            up.port
        );
        let answer = shared_exchange(&proxy, &get).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.contains("GET /x HTTP/1.1"), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("proxy-authorization"),
            "{answer}"
        );
        assert_eq!(up.heard.load(Ordering::SeqCst), 1);

        // Outside the job's allowlist: refused, and reported on the job's channel.
        let outside = format!(
            "CONNECT localhost:{0} HTTP/1.1\r\nProxy-Authorization: Basic am9iOnRva2Vu\r\n\r\n",
            other.port
        );
        let answer = shared_exchange(&proxy, &outside).await;
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        let refusal = refusals.try_recv().unwrap();
        assert_eq!(
            (refusal.host.as_str(), refusal.port),
            ("localhost", other.port)
        );
        assert!(refusals.try_recv().is_err());
        assert_eq!(other.heard.load(Ordering::SeqCst), 0);
        let asked = asked.lock().unwrap().clone();
        assert_eq!(
            asked,
            [
                None,
                Some("Basic d3Jvbmc=".into()),
                Some("Basic am9iOnRva2Vu".into()),
                Some("Basic am9iOnRva2Vu".into())
            ]
        );
    }

    #[tokio::test]
    async fn the_shared_proxy_cannot_read_https_so_a_read_only_tunnel_is_answered_502() {
        let up = upstream().await;
        let (tx, _refusals) = mpsc::channel(16);
        let admission = OneJob {
            allowlist: read_only_to(up.port),
            refusals: tx,
            asked: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = SharedEgressProxy::start(listener, admission).unwrap();
        let connect = format!(
            "CONNECT localhost:{0} HTTP/1.1\r\nProxy-Authorization: Basic am9iOnRva2Vu\r\n\r\n",
            up.port
        );
        let answer = shared_exchange(&proxy, &connect).await;
        assert!(
            answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
            "{answer}"
        );
        assert_eq!(up.heard.load(Ordering::SeqCst), 0);
    }
}
