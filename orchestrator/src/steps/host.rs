//! The host side of a step: its WASI state, the `git` and `log` imports, and the outbound HTTP
//! policy.

use super::bindings::ckrv::cloud::{git, log};
use crate::host_git::HostGit;
use crate::logs::JobLog;
use ckrv_wit::types::LogLevel;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// The one origin steps may call, and the credential the host adds for it.
#[derive(Clone)]
pub struct ApiAccess {
    origin: Option<(String, String, u16)>,
    token: String,
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl ApiAccess {
    pub fn new(api_url: &str, token: &str) -> Self {
        Self {
            origin: origin_of(api_url),
            token: token.to_string(),
        }
    }

    fn allows(&self, url: &str) -> bool {
        self.origin.is_some() && origin_of(url) == self.origin
    }
}

/// (scheme, host, port with the scheme's default filled in).
fn origin_of(url: &str) -> Option<(String, String, u16)> {
    let url = Url::parse(url).ok()?;
    Some((
        url.scheme().to_string(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// Denies requests outside the API's origin and authenticates those to it.
pub struct ApiHooks {
    api: ApiAccess,
}

impl ApiHooks {
    pub fn new(api: ApiAccess) -> Self {
        Self { api }
    }
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

impl WasiHttpHooks for ApiHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let url = request.uri().to_string();
        if !self.api.allows(&url) {
            tracing::warn!(url, "denied a step's request outside the allowlist");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        match HeaderValue::from_str(&format!("Bearer {}", self.api.token)) {
            Ok(mut value) => {
                value.set_sensitive(true);
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            Err(_) => return Box::new(async { Err(HttpError::HttpRequestDenied) }),
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

/// Everything a step's store holds.
pub struct StepState {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    pub(super) hooks: ApiHooks,
    pub(super) git: HostGit,
    pub(super) step: String,
    pub(super) log: JobLog,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StepState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl ckrv_wit::types::Host for StepState {}

impl git::Host for StepState {
    async fn clone_repo(
        &mut self,
        url: String,
        branch: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.git.clone_repo(&url, &branch).await)
    }

    async fn create_branch(&mut self, name: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.git.create_branch(&name).await)
    }

    async fn diff(&mut self, base: String) -> wasmtime::Result<Result<String, String>> {
        Ok(self.git.diff(&base).await)
    }
}

impl log::Host for StepState {
    async fn write(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.log.write(level, &self.step, message);
        Ok(())
    }
}
