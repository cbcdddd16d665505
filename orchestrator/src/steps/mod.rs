//! Runs step components in a sandbox: the workspace preopened as `/workspace` and nothing
//! else of the filesystem, no environment or stdio, outbound HTTP only to the API (with the
//! worker token added by the host), and bounded memory and CPU.

mod host;

use crate::host_git::HostGit;
use crate::logs::JobLog;
use crate::pipeline::BuiltinStep;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

pub use host::{ApiAccess, StepState};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ckrv:cloud/worker-step",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "ckrv:cloud/types": ckrv_wit::types,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
        },
    });
}

pub use bindings::exports::ckrv::cloud::step::{StepContext, StepOutput};

/// The built-in components, built for wasm32-wasip2 by this crate's build script.
pub fn builtin_component(step: BuiltinStep) -> &'static [u8] {
    match step {
        BuiltinStep::Clone => include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_clone.wasm")),
        BuiltinStep::Diff => include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_diff.wasm")),
        BuiltinStep::Upload => include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_upload.wasm")),
    }
}

/// Resource bounds of one step.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    /// Wasm instructions (roughly) a step may execute.
    pub fuel: u64,
    /// Wall-clock bound, which also covers time spent in host calls such as `git clone`.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 * 1024 * 1024,
            fuel: 50_000_000_000,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Why a step did not produce its output.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step ran and reported a failure.
    #[error("{0}")]
    Failed(String),
    #[error("the step did not finish within {0:?}")]
    Timeout(Duration),
    #[error("loading the step component: {0:#}")]
    Load(wasmtime::Error),
    /// A trap, exhausted fuel or memory, or a host failure.
    #[error("the step crashed: {0:#}")]
    Trap(wasmtime::Error),
}

/// Compiles and runs step components; one per job (or test).
pub struct StepRunner {
    engine: Engine,
    linker: Linker<StepState>,
    limits: Limits,
    compiled: Mutex<HashMap<String, Component>>,
}

impl StepRunner {
    pub fn new(limits: Limits) -> Result<Self, StepError> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(StepError::Load)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(StepError::Load)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(StepError::Load)?;
        // wasi:* come from wasmtime-wasi above; only our own interfaces are linked here.
        type Own = wasmtime::component::HasSelf<StepState>;
        bindings::ckrv::cloud::git::add_to_linker::<_, Own>(&mut linker, |s| s)
            .map_err(StepError::Load)?;
        bindings::ckrv::cloud::log::add_to_linker::<_, Own>(&mut linker, |s| s)
            .map_err(StepError::Load)?;
        Ok(Self {
            engine,
            linker,
            limits,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// Compiles `bytes` once per `key`.
    fn component(&self, key: &str, bytes: &[u8]) -> Result<Component, StepError> {
        let mut cache = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cache.get(key) {
            return Ok(c.clone());
        }
        let component = Component::new(&self.engine, bytes).map_err(StepError::Load)?;
        cache.insert(key.to_string(), component.clone());
        Ok(component)
    }

    pub async fn run_builtin(
        &self,
        step: BuiltinStep,
        ctx: StepContext,
        env: StepEnv<'_>,
    ) -> Result<StepOutput, StepError> {
        let component = self.component(step.name(), builtin_component(step))?;
        self.run(&component, ctx, env).await
    }

    pub async fn run_file(
        &self,
        path: &Path,
        ctx: StepContext,
        env: StepEnv<'_>,
    ) -> Result<StepOutput, StepError> {
        let bytes = std::fs::read(path).map_err(|e| {
            StepError::Load(wasmtime::Error::msg(format!(
                "reading {}: {e}",
                path.display()
            )))
        })?;
        let component = self.component(&path.display().to_string(), &bytes)?;
        self.run(&component, ctx, env).await
    }

    async fn run(
        &self,
        component: &Component,
        ctx: StepContext,
        env: StepEnv<'_>,
    ) -> Result<StepOutput, StepError> {
        let wasi = WasiCtxBuilder::new()
            .preopened_dir(env.git.workspace(), "/workspace", FsPerms::ReadWrite)
            .map_err(StepError::Load)?
            .build();
        let state = StepState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .build(),
            hooks: host::ApiHooks::new(env.api.clone()),
            git: env.git.clone(),
            step: env.name.to_string(),
            log: env.log.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_fuel(self.limits.fuel).map_err(StepError::Load)?;
        store
            .fuel_async_yield_interval(Some(1_000_000))
            .map_err(StepError::Load)?;
        let run = async {
            let instance =
                bindings::WorkerStep::instantiate_async(&mut store, component, &self.linker)
                    .await
                    .map_err(StepError::Load)?;
            instance
                .ckrv_cloud_step()
                .call_run(&mut store, &ctx)
                .await
                .map_err(StepError::Trap)
        };
        match tokio::time::timeout(self.limits.timeout, run).await {
            Err(_) => Err(StepError::Timeout(self.limits.timeout)),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Err(message))) => Err(StepError::Failed(message)),
            Ok(Ok(Ok(output))) => Ok(output),
        }
    }
}

/// What a step runs against.
pub struct StepEnv<'a> {
    /// Names the step in the job log.
    pub name: &'a str,
    /// The job's workspace and the host's git for it.
    pub git: &'a HostGit,
    pub log: &'a JobLog,
    pub api: &'a ApiAccess,
}
