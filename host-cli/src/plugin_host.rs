//! Runs a provider plugin component in wasmtime. The plugin gets outbound HTTP to the
//! configured API's origin and nothing else: no filesystem, environment, stdio or sockets.
//! Compiled components are cached on disk, so a command starts in milliseconds after the first.

use std::path::Path;
use std::time::Duration;

use ckrv_wit::types::{
    ApiError, DeviceCodeResponse, Job, JobCreate, LogResponse, TokenResponse, User,
};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
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
/// How often the engine's epoch advances: the granularity of the CPU deadline.
const EPOCH_TICK: Duration = Duration::from_millis(50);

/// Why the host could not run a plugin call (as opposed to the API refusing it).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("loading the provider plugin: {0:#}")]
    Load(wasmtime::Error),
    #[error("the provider plugin crashed: {0:#}")]
    Trap(wasmtime::Error),
    #[error("the provider plugin did not answer within {0:?} and was stopped")]
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

/// A wall-time deadline in epoch ticks (at least one; bounded so the engine's sum cannot
/// overflow).
fn deadline_ticks(deadline: Duration) -> u64 {
    let ticks = deadline.as_millis() / EPOCH_TICK.as_millis();
    u64::try_from(ticks).unwrap_or(u64::MAX).clamp(1, 1 << 40)
}

/// Advances the engine's epoch every tick for as long as the engine lives.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    });
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
    /// How long one call may run, in wall time, waiting included.
    deadline: Duration,
}

impl Provider {
    /// Instantiates `bytes`, allowing HTTP only to `api_url`'s origin. Compiled code is cached
    /// under `cache_dir`.
    pub async fn load(bytes: &[u8], api_url: &str, cache_dir: &Path) -> Result<Self, PluginError> {
        Self::load_with_deadline(bytes, api_url, cache_dir, CALL_TIMEOUT).await
    }

    /// As [`Provider::load`], with each call stopped after `deadline`.
    pub async fn load_with_deadline(
        bytes: &[u8],
        api_url: &str,
        cache_dir: &Path,
        deadline: Duration,
    ) -> Result<Self, PluginError> {
        let mut config = wasmtime::Config::new();
        // A guest loop never yields to the async timeout; an epoch deadline stops it anyway.
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(PluginError::Load)?;
        spawn_epoch_ticker(&engine);
        let component = crate::plugin_cache::load_or_compile(&engine, bytes, cache_dir)
            .map_err(PluginError::Load)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(PluginError::Load)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(PluginError::Load)?;
        let state = PluginState {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .trap_on_grow_failure(true)
                .build(),
            hooks: Allowlist {
                origin: origin_of(api_url),
            },
        };
        let mut store = Store::new(&engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(deadline));
        let instance = bindings::ProviderPlugin::instantiate_async(&mut store, &component, &linker)
            .await
            .map_err(PluginError::Load)?;
        Ok(Self {
            store,
            instance,
            deadline,
        })
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
        self.store.set_epoch_deadline(deadline_ticks(self.deadline));
        match tokio::time::timeout(self.deadline, call(guest, &mut self.store)).await {
            Err(_) => Err(PluginError::Timeout(self.deadline)),
            Ok(Err(trap)) if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Err(PluginError::Timeout(self.deadline))
            }
            Ok(Err(trap)) => Err(PluginError::Trap(trap)),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    pub async fn login_start(&mut self, ctx: &CallContext) -> CallResult<DeviceCodeResponse> {
        self.guarded(async |g, s| g.call_login_start(s, ctx).await)
            .await
    }

    pub async fn login_poll(
        &mut self,
        ctx: &CallContext,
        device_code: &str,
    ) -> CallResult<TokenResponse> {
        self.guarded(async |g, s| g.call_login_poll(s, ctx, device_code).await)
            .await
    }

    pub async fn refresh(
        &mut self,
        ctx: &CallContext,
        refresh_token: &str,
    ) -> CallResult<TokenResponse> {
        self.guarded(async |g, s| g.call_refresh(s, ctx, refresh_token).await)
            .await
    }

    pub async fn logout(&mut self, ctx: &CallContext) -> CallResult<()> {
        self.guarded(async |g, s| g.call_logout(s, ctx).await).await
    }

    pub async fn whoami(&mut self, ctx: &CallContext) -> CallResult<User> {
        self.guarded(async |g, s| g.call_whoami(s, ctx).await).await
    }

    pub async fn dispatch(
        &mut self,
        ctx: &CallContext,
        request: &JobCreate,
        idempotency_key: &str,
    ) -> CallResult<Job> {
        self.guarded(async |g, s| g.call_dispatch(s, ctx, request, idempotency_key).await)
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
    ) -> CallResult<LogResponse> {
        self.guarded(async |g, s| g.call_read_logs(s, ctx, id, after, limit).await)
            .await
    }

    pub async fn fetch_diff(&mut self, ctx: &CallContext, id: &str) -> CallResult<Vec<u8>> {
        self.guarded(async |g, s| g.call_fetch_diff(s, ctx, id).await)
            .await
    }
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
            error.description()
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

    /// A stand-in for another team's service that implements only the contract: its jobs and
    /// logs carry none of our extensions, and it ignores `after` and `limit`.
    async fn contract_only_fake_server() -> String {
        use axum::routing::get;
        let job = serde_json::json!({
            "id": "3f8a9b2c-1234-5678-abcd-ef0123456789", "status": "succeeded",
            "git_repo_url": "https://git.example.com/r.git", "git_base_branch": "main",
            "feature_branch_name": null, "created_at": "2026-11-22T12:00:00Z",
            "completed_at": "2026-11-22T12:05:00Z", "result_status": "succeeded",
            "result_summary": "1 file changed", "error_message": null,
        });
        let entry = |message: &str| {
            serde_json::json!({"timestamp": "2026-11-22T12:00:00Z", "level": "info",
                "source": "orchestrator", "message": message})
        };
        let logs = serde_json::json!({"logs": [entry("one"), entry("two"), entry("three")]});
        let app = axum::Router::new()
            .route("/v1/jobs/{id}", get(move || async move { axum::Json(job) }))
            .route(
                "/v1/jobs/{id}/logs",
                get(move || async move { axum::Json(logs) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn logs_read_on_from_a_contract_only_fake_server() {
        let cache = tempfile::tempdir().unwrap();
        let url = contract_only_fake_server().await;
        let mut provider = Provider::load(CHAKRAVARTI_PLUGIN, &url, cache.path())
            .await
            .unwrap();
        let ctx = context(&url);
        let job = provider.get_job(&ctx, "3f8a9b2c").await.unwrap().unwrap();
        assert_eq!(job.state, None);
        assert_eq!(job.result_summary.as_deref(), Some("1 file changed"));

        let read = async |provider: &mut Provider, after: u64, limit: u32| {
            provider
                .read_logs(&ctx, "3f8a9b2c", after, limit)
                .await
                .unwrap()
                .unwrap()
        };
        let page = read(&mut provider, 0, 2).await;
        let messages: Vec<&str> = page.logs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["one", "two"]);
        assert_eq!(page.next_after, Some(2));
        assert_eq!(page.job_state, Some(ckrv_wit::types::JobState::Succeeded));
        let page = read(&mut provider, 2, 500).await;
        assert_eq!(page.logs.len(), 1);
        assert_eq!(page.logs[0].message, "three");
        assert_eq!(page.logs[0].sequence, Some(3));
        let page = read(&mut provider, 3, 500).await;
        assert!(page.logs.is_empty());
        assert_eq!(page.next_after, Some(3));
    }

    #[tokio::test]
    async fn compiled_plugins_are_cached_privately_and_a_tampered_cache_is_rebuilt() {
        use std::os::unix::fs::PermissionsExt as _;
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("plugins");
        let compiled = || {
            std::fs::read_dir(&dir)
                .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        };
        Provider::load(CHAKRAVARTI_PLUGIN, "http://127.0.0.1:1", cache.path())
            .await
            .unwrap();
        let file = compiled().expect("the compiled plugin is cached");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        let size = std::fs::metadata(&file).unwrap().len();

        // Bytes that do not match the recorded digest are never loaded; the cache is rebuilt.
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let mut provider = Provider::load(CHAKRAVARTI_PLUGIN, "http://127.0.0.1:1", cache.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&file).unwrap().len() as u64, size);
        assert_ne!(std::fs::read(&file).unwrap(), bytes);
        // The reloaded plugin works: it answers (here, that nothing listens on port 1).
        let error = provider
            .whoami(&context("http://127.0.0.1:1"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            error.description().contains("http://127.0.0.1:1"),
            "{}",
            error.description()
        );

        // A cache directory others can write into is not used at all.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(&file, b"planted native code").unwrap();
        Provider::load(CHAKRAVARTI_PLUGIN, "http://127.0.0.1:1", cache.path())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"planted native code");
    }

    /// Built from `plugins/hostile` by build.rs for these tests only.
    const HOSTILE_PLUGIN: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_plugin_hostile.wasm"));

    #[tokio::test]
    async fn a_looping_or_hoarding_plugin_is_stopped_with_a_clear_error() {
        let cache = tempfile::tempdir().unwrap();
        let url = "http://127.0.0.1:1";
        let mut provider = Provider::load_with_deadline(
            HOSTILE_PLUGIN,
            url,
            cache.path(),
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        // `whoami` spins without yielding; only the epoch deadline can stop it.
        let error = provider.whoami(&context(url)).await.unwrap_err();
        assert!(matches!(error, PluginError::Timeout(_)), "{error}");
        assert!(error.to_string().contains("was stopped"), "{error}");
        // `get-job` grows its memory until the limit (a trapped instance is not entered again,
        // so this is a fresh one).
        let mut provider = Provider::load_with_deadline(
            HOSTILE_PLUGIN,
            url,
            cache.path(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let error = provider
            .get_job(&context(url), "x")
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(error, PluginError::Trap(_)) && format!("{error:#}").contains("memory"),
            "{error:#}"
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
