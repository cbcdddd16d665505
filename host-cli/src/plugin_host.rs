//! Runs a provider plugin component in wasmtime. The plugin gets outbound HTTP to the
//! configured API's origin and nothing else: no filesystem, environment, stdio or sockets.
//! Compiled components are cached on disk, so a command starts in milliseconds after the first.

use std::path::Path;
use std::time::Duration;

use ckrv_wasm_host::{
    CompileCache, HostError, HostState, Limits, Origin, OriginPolicy, WasmHost, run_limited,
};
use ckrv_wit::WIT_VERSION;
use ckrv_wit::types::{
    ApiError, CredentialCreate, CredentialSummary, DeviceCodeResponse, Group, GroupCreate, Job,
    JobCreate, JobListResponse, JobStatus, LogQuery, LogResponse, SnapshotSummary, TokenResponse,
    User, Webhook, WebhookCreate, WebhookDelivery,
};
use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime_wasi::WasiCtx;

mod bindings {
    ckrv_wasm_host::host_bindings!("../wit", "ckrv:cloud/provider-plugin");
}

pub use bindings::exports::ckrv::cloud::provider::{CallContext, PluginInfo};

/// The default provider plugin, built from `plugins/chakravarti` by build.rs.
pub const CHAKRAVARTI_PLUGIN: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_plugin_chakravarti.wasm"));

/// The built-in plugin's SHA-256 (hex), computed by build.rs.
pub const CHAKRAVARTI_SHA256: &str = env!("CKRV_CHAKRAVARTI_SHA256");

/// Memory a plugin instance may use.
const MEMORY_LIMIT: usize = 256 * 1024 * 1024;
/// Longest a single plugin call may take (it includes the HTTP round trip).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The interface a provider plugin exports, at the version this build loads.
const PROVIDER_INTERFACE: &str = "ckrv:cloud/provider";

/// Why the host could not run a plugin call (as opposed to the API refusing it).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("the provider plugin {0}")]
    Host(#[from] HostError),
    #[error(
        "the plugin was built for {found}, and this ckrv loads plugins built for \
         {PROVIDER_INTERFACE}@{WIT_VERSION}: install a release of the plugin built for it, or \
         rebuild it against this release's wit/"
    )]
    Incompatible { found: String },
    #[error(
        "the file is a WebAssembly component but not a provider plugin: it exports no \
         {PROVIDER_INTERFACE} interface"
    )]
    NotAProvider,
}

/// A plugin call's outcome: the host failed, or the plugin answered (the API's `Ok` or error).
pub type CallResult<T> = Result<Result<T, ApiError>, PluginError>;

/// The plugin's store holds nothing of the CLI's own: it imports only HTTP.
type PluginState = HostState<()>;

/// Where a plugin may send requests: the API the user configured, plus the origins the user
/// approved when installing it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub api_url: String,
    pub origins: Vec<Origin>,
}

impl Access {
    /// Only `api_url`'s origin.
    #[cfg(test)]
    pub fn api(api_url: &str) -> Self {
        Self {
            api_url: api_url.to_string(),
            origins: Vec::new(),
        }
    }

    fn policy(&self) -> OriginPolicy {
        // A URL that is not one allows nothing: every call then says the API is unreachable.
        let api = Origin::of_url(&self.api_url).ok();
        api.into_iter()
            .chain(self.origins.iter().cloned())
            .fold(OriginPolicy::deny_all(), OriginPolicy::allow)
    }
}

/// One instantiated provider plugin.
pub struct Provider {
    store: Store<PluginState>,
    instance: bindings::ProviderPlugin,
    limits: Limits,
}

impl Provider {
    /// Instantiates `bytes`, allowing HTTP only as `access` says. Compiled code is cached
    /// under `cache_dir`.
    pub async fn load(
        bytes: &[u8],
        access: &Access,
        cache_dir: &Path,
    ) -> Result<Self, PluginError> {
        Self::load_with_deadline(bytes, None, access, cache_dir, CALL_TIMEOUT).await
    }

    /// As [`Provider::load`] for bytes checked against `sha256` (hex) already: the built-in
    /// plugin, or an installed one against its manifest. They are not hashed again.
    pub async fn load_verified(
        bytes: &[u8],
        sha256: &str,
        access: &Access,
        cache_dir: &Path,
    ) -> Result<Self, PluginError> {
        let mut digest = [0u8; 32];
        let digest = hex::decode_to_slice(sha256, &mut digest)
            .ok()
            .map(|()| digest);
        Self::load_with_deadline(bytes, digest, access, cache_dir, CALL_TIMEOUT).await
    }

    /// As [`Provider::load`], with each call stopped after `deadline`.
    pub async fn load_with_deadline(
        bytes: &[u8],
        sha256: Option<[u8; 32]>,
        access: &Access,
        cache_dir: &Path,
        deadline: Duration,
    ) -> Result<Self, PluginError> {
        let host = WasmHost::new(CompileCache::disk(cache_dir.join("plugins")))?;
        let component = match sha256 {
            Some(digest) => host.verified_component(bytes, digest)?,
            None => host.component(bytes)?,
        };
        check_world(&host, &component)?;
        let linker = host.linker::<()>()?;
        let limits = Limits {
            memory_bytes: MEMORY_LIMIT,
            timeout: deadline,
        };
        let mut store = host.store(
            HostState::new(WasiCtx::builder().build(), access.policy(), ()),
            limits,
        );
        let instance = run_limited(&mut store, limits, async |store| {
            bindings::ProviderPlugin::instantiate_async(store, &component, &linker).await
        })
        .await?;
        Ok(Self {
            store,
            instance,
            limits,
        })
    }

    /// What the plugin says it is (no request is made).
    pub async fn describe(&mut self) -> Result<PluginInfo, PluginError> {
        let guest = self.instance.ckrv_cloud_provider();
        Ok(run_limited(&mut self.store, self.limits, async |store| {
            guest.call_describe(store).await
        })
        .await?)
    }

    /// Runs one export call under the plugin's limits.
    async fn guarded<T>(
        &mut self,
        call: impl AsyncFnOnce(
            &bindings::exports::ckrv::cloud::provider::Guest,
            &mut Store<PluginState>,
        ) -> wasmtime::Result<Result<T, ApiError>>,
    ) -> CallResult<T> {
        let guest = self.instance.ckrv_cloud_provider();
        Ok(run_limited(&mut self.store, self.limits, async |store| {
            call(guest, store).await
        })
        .await?)
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

    pub async fn credentials_add(
        &mut self,
        ctx: &CallContext,
        credential: &CredentialCreate,
    ) -> CallResult<CredentialSummary> {
        self.guarded(async |g, s| g.call_credentials_add(s, ctx, credential).await)
            .await
    }

    pub async fn credentials_list(
        &mut self,
        ctx: &CallContext,
    ) -> CallResult<Vec<CredentialSummary>> {
        self.guarded(async |g, s| g.call_credentials_list(s, ctx).await)
            .await
    }

    pub async fn credentials_remove(&mut self, ctx: &CallContext, name: &str) -> CallResult<()> {
        self.guarded(async |g, s| g.call_credentials_remove(s, ctx, name).await)
            .await
    }

    pub async fn snapshots_list(&mut self, ctx: &CallContext) -> CallResult<Vec<SnapshotSummary>> {
        self.guarded(async |g, s| g.call_snapshots_list(s, ctx).await)
            .await
    }

    pub async fn snapshots_remove(&mut self, ctx: &CallContext, key: &str) -> CallResult<()> {
        self.guarded(async |g, s| g.call_snapshots_remove(s, ctx, key).await)
            .await
    }

    pub async fn webhooks_add(
        &mut self,
        ctx: &CallContext,
        webhook: &WebhookCreate,
    ) -> CallResult<Webhook> {
        self.guarded(async |g, s| g.call_webhooks_add(s, ctx, webhook).await)
            .await
    }

    pub async fn webhooks_list(&mut self, ctx: &CallContext) -> CallResult<Vec<Webhook>> {
        self.guarded(async |g, s| g.call_webhooks_list(s, ctx).await)
            .await
    }

    pub async fn webhooks_remove(&mut self, ctx: &CallContext, id: &str) -> CallResult<()> {
        self.guarded(async |g, s| g.call_webhooks_remove(s, ctx, id).await)
            .await
    }

    pub async fn webhooks_rotate(&mut self, ctx: &CallContext, id: &str) -> CallResult<Webhook> {
        self.guarded(async |g, s| g.call_webhooks_rotate(s, ctx, id).await)
            .await
    }

    pub async fn webhooks_deliveries(
        &mut self,
        ctx: &CallContext,
        webhook: Option<&str>,
        job: Option<&str>,
        limit: u32,
    ) -> CallResult<Vec<WebhookDelivery>> {
        self.guarded(async |g, s| {
            g.call_webhooks_deliveries(s, ctx, webhook, job, limit)
                .await
        })
        .await
    }

    pub async fn webhooks_redeliver(
        &mut self,
        ctx: &CallContext,
        id: &str,
    ) -> CallResult<WebhookDelivery> {
        self.guarded(async |g, s| g.call_webhooks_redeliver(s, ctx, id).await)
            .await
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
        query: LogQuery,
    ) -> CallResult<LogResponse> {
        self.guarded(async |g, s| g.call_read_logs(s, ctx, id, query).await)
            .await
    }

    pub async fn list_jobs(
        &mut self,
        ctx: &CallContext,
        status: Option<JobStatus>,
        cursor: Option<&str>,
        limit: u32,
    ) -> CallResult<JobListResponse> {
        self.guarded(async |g, s| g.call_list_jobs(s, ctx, status, cursor, limit).await)
            .await
    }

    pub async fn cancel_job(&mut self, ctx: &CallContext, id: &str) -> CallResult<Job> {
        self.guarded(async |g, s| g.call_cancel_job(s, ctx, id).await)
            .await
    }

    pub async fn dispatch_group(
        &mut self,
        ctx: &CallContext,
        request: &GroupCreate,
    ) -> CallResult<Group> {
        self.guarded(async |g, s| g.call_dispatch_group(s, ctx, request).await)
            .await
    }

    pub async fn get_group(&mut self, ctx: &CallContext, id: &str) -> CallResult<Group> {
        self.guarded(async |g, s| g.call_get_group(s, ctx, id).await)
            .await
    }

    pub async fn cancel_group(&mut self, ctx: &CallContext, id: &str) -> CallResult<Group> {
        self.guarded(async |g, s| g.call_cancel_group(s, ctx, id).await)
            .await
    }

    pub async fn fetch_diff(&mut self, ctx: &CallContext, id: &str) -> CallResult<Vec<u8>> {
        self.guarded(async |g, s| g.call_fetch_diff(s, ctx, id).await)
            .await
    }
}

/// Refuses a component that does not export the provider interface at this build's version,
/// naming the version it was built for.
fn check_world(host: &WasmHost, component: &Component) -> Result<(), PluginError> {
    let wanted = format!("{PROVIDER_INTERFACE}@{WIT_VERSION}");
    let mut found = None;
    for (name, _) in component.component_type().exports(host.engine()) {
        if name == wanted {
            return Ok(());
        }
        if name.split('@').next() == Some(PROVIDER_INTERFACE) {
            found = Some(name.to_string());
        }
    }
    Err(match found {
        Some(found) => PluginError::Incompatible { found },
        None => PluginError::NotAProvider,
    })
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
            repository: None,
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
        let mut provider = Provider::load(
            CHAKRAVARTI_PLUGIN,
            &Access::api("http://127.0.0.1:1"),
            cache.path(),
        )
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
        let mut provider =
            Provider::load(CHAKRAVARTI_PLUGIN, &Access::api(&other_url), cache.path())
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
        let mut provider = Provider::load(CHAKRAVARTI_PLUGIN, &Access::api(&url), cache.path())
            .await
            .unwrap();
        let ctx = context(&url);
        let job = provider.get_job(&ctx, "3f8a9b2c").await.unwrap().unwrap();
        assert_eq!(job.state, None);
        assert_eq!(job.result_summary.as_deref(), Some("1 file changed"));

        let read = async |provider: &mut Provider, after: u64, limit: u32| {
            provider
                .read_logs(
                    &ctx,
                    "3f8a9b2c",
                    LogQuery {
                        after,
                        limit,
                        tail: None,
                        wait_ms: 0,
                    },
                )
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
        Provider::load(
            CHAKRAVARTI_PLUGIN,
            &Access::api("http://127.0.0.1:1"),
            cache.path(),
        )
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
        let mut provider = Provider::load(
            CHAKRAVARTI_PLUGIN,
            &Access::api("http://127.0.0.1:1"),
            cache.path(),
        )
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
        Provider::load(
            CHAKRAVARTI_PLUGIN,
            &Access::api("http://127.0.0.1:1"),
            cache.path(),
        )
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
            None,
            &Access::api(url),
            cache.path(),
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        // `whoami` spins without yielding; only the epoch deadline can stop it.
        let error = provider.whoami(&context(url)).await.unwrap_err();
        assert!(
            matches!(error, PluginError::Host(HostError::Timeout(_))),
            "{error}"
        );
        assert!(error.to_string().contains("was stopped"), "{error}");
        // `get-job` grows its memory until the limit (a trapped instance is not entered again,
        // so this is a fresh one).
        let mut provider = Provider::load_with_deadline(
            HOSTILE_PLUGIN,
            None,
            &Access::api(url),
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
            matches!(error, PluginError::Host(HostError::Memory(_)))
                && error.to_string()
                    == "the provider plugin was stopped at its memory limit of 256 MiB",
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn the_built_in_plugin_describes_itself() {
        let cache = tempfile::tempdir().unwrap();
        let mut provider = Provider::load(
            CHAKRAVARTI_PLUGIN,
            &Access::api("http://127.0.0.1:1"),
            cache.path(),
        )
        .await
        .unwrap();
        let info = provider.describe().await.unwrap();
        assert_eq!(info.name, "chakravarti");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            info.default_api_url.as_deref(),
            Some(ckrv_wit::protocol::DEFAULT_API_URL)
        );
        assert!(info.origins.is_empty(), "{:?}", info.origins);
    }

    /// The built-in plugin with its provider export renamed to another version: the same bytes
    /// a plugin built against that WIT release would carry in its export name.
    fn built_for(version: &str) -> Vec<u8> {
        renamed(&format!("{PROVIDER_INTERFACE}@{version}"))
    }

    /// The built-in plugin with its provider export renamed to `theirs`.
    fn renamed(theirs: &str) -> Vec<u8> {
        let ours = format!("{PROVIDER_INTERFACE}@{WIT_VERSION}");
        assert_eq!(
            ours.len(),
            theirs.len(),
            "same length keeps the binary valid"
        );
        let mut bytes = CHAKRAVARTI_PLUGIN.to_vec();
        let mut replaced = 0;
        let mut at = 0;
        while let Some(i) = bytes[at..]
            .windows(ours.len())
            .position(|w| w == ours.as_bytes())
        {
            bytes[at + i..at + i + ours.len()].copy_from_slice(theirs.as_bytes());
            at += i + ours.len();
            replaced += 1;
        }
        assert!(replaced > 0, "the export name is in the binary");
        bytes
    }

    #[tokio::test]
    async fn a_plugin_built_for_another_wit_version_is_refused_by_name() {
        let cache = tempfile::tempdir().unwrap();
        let access = Access::api("http://127.0.0.1:1");
        let error = Provider::load(&built_for("9.9.0"), &access, cache.path())
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, PluginError::Incompatible { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("built for ckrv:cloud/provider@9.9.0")
                && message.contains(&format!("ckrv:cloud/provider@{WIT_VERSION}")),
            "{message}"
        );

        // A component exporting something else.
        let error = Provider::load(&renamed("ckrv:cloud/provides@0.5.0"), &access, cache.path())
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, PluginError::NotAProvider), "{error}");

        // Bytes that are no component.
        let error = Provider::load(HOSTILE_STEP_LIKE, &access, cache.path())
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(error, PluginError::Host(HostError::Load(_))),
            "{error}"
        );
        assert!(error.to_string().contains("could not be loaded"), "{error}");
    }

    /// A core module (not a component), as a mistaken build would give.
    const HOSTILE_STEP_LIKE: &[u8] = b"\0asm\x01\0\0\0";
}
