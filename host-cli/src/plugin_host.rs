//! Runs a provider plugin component in wasmtime. The plugin gets outbound HTTP to the
//! configured API's origin and nothing else: no filesystem, environment, stdio or sockets.
//! Compiled components are cached on disk, so a command starts in milliseconds after the first.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ckrv_wit::types::{ApiError, DeviceAuthorization, Job, JobRequest, LogPage, TokenSet, User};
use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ckrv:cloud/provider-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "ckrv:cloud/types": ckrv_wit::types,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use bindings::exports::ckrv::cloud::provider::CallContext;

/// The default provider plugin, built from `plugins/chakravarti` by build.rs.
pub const CHAKRAVARTI_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_plugin_chakravarti.wasm"));

/// Memory a plugin instance may use.
const MEMORY_LIMIT: usize = 256 * 1024 * 1024;
/// Longest a single plugin call may take (it includes the HTTP round trip).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the host could not run a plugin call (as opposed to the API refusing it).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("loading the provider plugin: {0:#}")]
    Load(wasmtime::Error),
    #[error("the provider plugin crashed: {0:#}")]
    Trap(wasmtime::Error),
    #[error("the provider plugin did not answer within {0:?}")]
    Timeout(Duration),
}

/// A plugin call's outcome: the host failed, or the plugin answered (the API's `Ok` or error).
pub type CallResult<T> = Result<Result<T, ApiError>, PluginError>;

/// (scheme, lower-case host, port with the scheme's default filled in).
type Origin = (String, String, u16);

/// The only origin a plugin may call.
fn origin_of(url: &str) -> Option<Origin> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    Some((
        scheme,
        uri.host()?.to_ascii_lowercase(),
        uri.port_u16().unwrap_or(default_port),
    ))
}

/// Denies every request outside the allowed origin.
struct Allowlist {
    origin: Option<Origin>,
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for Allowlist {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let url = request.uri().to_string();
        if self.origin.is_none() || origin_of(&url) != self.origin {
            tracing::warn!(url, "denied a plugin request outside the configured API");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    hooks: Allowlist,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl ckrv_wit::types::Host for PluginState {}

/// One instantiated provider plugin.
pub struct Provider {
    store: Store<PluginState>,
    instance: bindings::ProviderPlugin,
}

impl Provider {
    /// Instantiates `bytes`, allowing HTTP only to `api_url`'s origin. Compiled code is cached
    /// under `cache_dir`.
    pub async fn load(bytes: &[u8], api_url: &str, cache_dir: &Path) -> Result<Self, PluginError> {
        let engine = Engine::new(&wasmtime::Config::new()).map_err(PluginError::Load)?;
        let component = cached_component(&engine, bytes, cache_dir)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(PluginError::Load)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(PluginError::Load)?;
        let state = PluginState {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build(),
            hooks: Allowlist {
                origin: origin_of(api_url),
            },
        };
        let mut store = Store::new(&engine, state);
        store.limiter(|s| &mut s.limits);
        let instance = bindings::ProviderPlugin::instantiate_async(&mut store, &component, &linker)
            .await
            .map_err(PluginError::Load)?;
        Ok(Self { store, instance })
    }

    /// Runs one export call under the call timeout.
    async fn guarded<T>(
        &mut self,
        call: impl AsyncFnOnce(
            &bindings::exports::ckrv::cloud::provider::Guest,
            &mut Store<PluginState>,
        ) -> wasmtime::Result<Result<T, ApiError>>,
    ) -> CallResult<T> {
        let guest = self.instance.ckrv_cloud_provider();
        match tokio::time::timeout(CALL_TIMEOUT, call(guest, &mut self.store)).await {
            Err(_) => Err(PluginError::Timeout(CALL_TIMEOUT)),
            Ok(Err(trap)) => Err(PluginError::Trap(trap)),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    pub async fn login_start(&mut self, ctx: &CallContext) -> CallResult<DeviceAuthorization> {
        self.guarded(async |g, s| g.call_login_start(s, ctx).await)
            .await
    }

    pub async fn login_poll(
        &mut self,
        ctx: &CallContext,
        device_code: &str,
    ) -> CallResult<TokenSet> {
        self.guarded(async |g, s| g.call_login_poll(s, ctx, device_code).await)
            .await
    }

    pub async fn refresh(
        &mut self,
        ctx: &CallContext,
        refresh_token: &str,
    ) -> CallResult<TokenSet> {
        self.guarded(async |g, s| g.call_refresh(s, ctx, refresh_token).await)
            .await
    }

    pub async fn logout(&mut self, ctx: &CallContext) -> CallResult<()> {
        self.guarded(async |g, s| g.call_logout(s, ctx).await).await
    }

    pub async fn whoami(&mut self, ctx: &CallContext) -> CallResult<User> {
        self.guarded(async |g, s| g.call_whoami(s, ctx).await).await
    }

    pub async fn dispatch(&mut self, ctx: &CallContext, request: &JobRequest) -> CallResult<Job> {
        self.guarded(async |g, s| g.call_dispatch(s, ctx, request).await)
            .await
    }

    pub async fn get_job(&mut self, ctx: &CallContext, id: &str) -> CallResult<Job> {
        self.guarded(async |g, s| g.call_get_job(s, ctx, id).await)
            .await
    }

    pub async fn read_logs(
        &mut self,
        ctx: &CallContext,
        id: &str,
        after: u64,
        limit: u32,
    ) -> CallResult<LogPage> {
        self.guarded(async |g, s| g.call_read_logs(s, ctx, id, after, limit).await)
            .await
    }

    pub async fn fetch_diff(&mut self, ctx: &CallContext, id: &str) -> CallResult<Vec<u8>> {
        self.guarded(async |g, s| g.call_fetch_diff(s, ctx, id).await)
            .await
    }
}

/// Loads the compiled component from the cache, compiling and caching it on a miss.
fn cached_component(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: &Path,
) -> Result<Component, PluginError> {
    let path = cache_path(engine, bytes, cache_dir);
    if path.exists() {
        // SAFETY: the file is one this program wrote with `Component::serialize` from the same
        // component bytes (the name is their hash) and for an engine with the same
        // compatibility hash; wasmtime checks its header and version before using it.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "recompiling the plugin"),
        }
    }
    let component = Component::new(engine, bytes).map_err(PluginError::Load)?;
    if let Err(e) = write_cache(&component, &path) {
        // A cache that cannot be written only costs time.
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled plugin");
    }
    Ok(component)
}

/// `<cache>/plugins/<sha256 of the component>-<engine compatibility hash>.cwasm`
pub fn cache_path(engine: &Engine, bytes: &[u8], cache_dir: &Path) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let name = format!(
        "{}-{:016x}.cwasm",
        hex::encode(Sha256::digest(bytes)),
        hasher.finish()
    );
    cache_dir.join("plugins").join(name)
}

fn write_cache(component: &Component, path: &Path) -> anyhow::Result<()> {
    let serialized = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a concurrent `ckrv` never reads a half-written file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serialized)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckrv_wit::types::ErrorKind;
    use std::io::{Read as _, Write as _};

    fn context(api_url: &str) -> CallContext {
        CallContext {
            api_url: api_url.to_string(),
            access_token: Some("ckrv_at_test".into()),
        }
    }

    /// Answers one request with 401 and returns what it received.
    fn one_shot_api(listener: std::net::TcpListener) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap();
            let body = r#"{"error":"not_authenticated","error_description":"nope"}"#;
            write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
    }

    #[tokio::test]
    async fn the_plugin_reaches_the_configured_api_and_nothing_else() {
        let cache = tempfile::tempdir().unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        other.set_nonblocking(true).unwrap();
        let other_url = format!("http://{}", other.local_addr().unwrap());

        // Configured for another origin: the call never leaves the sandbox.
        let mut provider = Provider::load(CHAKRAVARTI_PLUGIN, "http://127.0.0.1:1", cache.path())
            .await
            .unwrap();
        let error = provider
            .whoami(&context(&other_url))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            error.error,
            ErrorKind::Unavailable,
            "{}",
            error.error_description
        );
        assert_eq!(
            other.accept().map_err(|e| e.kind()).unwrap_err(),
            std::io::ErrorKind::WouldBlock,
            "the denied request must not connect"
        );

        // Configured for that origin: the request arrives, with the session's token.
        other.set_nonblocking(false).unwrap();
        let server = one_shot_api(other);
        let mut provider = Provider::load(CHAKRAVARTI_PLUGIN, &other_url, cache.path())
            .await
            .unwrap();
        let error = provider
            .whoami(&context(&other_url))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.error, ErrorKind::NotAuthenticated);
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /v1/users/me "), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer ckrv_at_test")
        );
    }

    #[tokio::test]
    async fn compiled_plugins_are_cached_and_a_damaged_cache_is_rebuilt() {
        let cache = tempfile::tempdir().unwrap();
        let cached = || {
            std::fs::read_dir(cache.path().join("plugins"))
                .map(|dir| dir.map(|e| e.unwrap().path()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        assert!(cached().is_empty());
        Provider::load(CHAKRAVARTI_PLUGIN, "http://127.0.0.1:1", cache.path())
            .await
            .unwrap();
        let files = cached();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
        let size = std::fs::metadata(&files[0]).unwrap().len();

        std::fs::write(&files[0], b"not a compiled component").unwrap();
        let mut provider = Provider::load(CHAKRAVARTI_PLUGIN, "http://127.0.0.1:1", cache.path())
            .await
            .unwrap();
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), size);
        // The reloaded plugin works: it answers (here, that nothing listens on port 1).
        let error = provider
            .whoami(&context("http://127.0.0.1:1"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            error.error_description.contains("http://127.0.0.1:1"),
            "{}",
            error.error_description
        );
    }

    #[test]
    fn origins_fill_in_default_ports_and_ignore_case() {
        assert_eq!(
            origin_of("http://API.example.com/v1/jobs"),
            Some(("http".into(), "api.example.com".into(), 80))
        );
        assert_eq!(
            origin_of("https://api.example.com:443/x"),
            origin_of("https://api.example.com")
        );
        assert_ne!(
            origin_of("http://127.0.0.1:8080"),
            origin_of("http://127.0.0.1:8081")
        );
        assert_ne!(origin_of("http://h"), origin_of("https://h"));
        assert_eq!(origin_of("ftp://h"), None);
        assert_eq!(origin_of("not a url"), None);
    }
}
