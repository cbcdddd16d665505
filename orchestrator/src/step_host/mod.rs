//! The host side of steps (the guest crates are `orchestrator/steps/*`): runs step components
//! in a sandbox, the workspace preopened as `/workspace` and nothing else of the filesystem,
//! no environment or stdio, outbound HTTP only to the API (with the worker token added by the
//! host) and the stage's allowed hosts, and bounded memory and wall-clock time (the shared
//! host's limits).

mod host;

use crate::host_git::HostGit;
use crate::logs::JobLog;
use ckrv_wasm_host::{
    CompileCache, HostError, HostState, Limits, OriginPolicy, WasmHost, run_limited,
};
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub use host::{StepData, StepState};

mod bindings {
    ckrv_wasm_host::host_bindings!(
        "../wit",
        "ckrv:cloud/worker-step",
        "wasi:filesystem" => wasmtime_wasi::p2::bindings::filesystem,
    );
}

pub use bindings::exports::ckrv::cloud::step::{StepContext, StepOutput};

/// The built-in component called `name` (see `ckrv_pipeline::BUILTIN_STEPS`), built for
/// wasm32-wasip2 by this crate's build script.
pub fn builtin_component(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        ckrv_pipeline::CLONE => include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_clone.wasm")),
        ckrv_pipeline::DIFF => include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_diff.wasm")),
        ckrv_pipeline::UPLOAD => include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_upload.wasm")),
        ckrv_pipeline::PUBLISH => {
            include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_step_publish.wasm"))
        }
        _ => return None,
    })
}

/// A step's bounds when its stage sets none.
pub const DEFAULT_LIMITS: Limits = Limits {
    memory_bytes: 512 * 1024 * 1024,
    timeout: Duration::from_secs(30 * 60),
};

/// Why a step did not produce its output.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step ran and reported a failure.
    #[error("{0}")]
    Failed(String),
    /// The host stopped it, or could not run it.
    #[error("{0}")]
    Host(#[from] HostError),
}

impl StepError {
    /// The job's error message for this failure of step `name`, saying which of its requests
    /// were refused, since that is often why a step gives up.
    pub fn describe(&self, name: &str, denied: &[String]) -> String {
        let mut message = match self {
            Self::Failed(message) => format!("{name} failed: {message}"),
            Self::Host(error) => format!("step {name} {error}"),
        };
        if !denied.is_empty() {
            message.push_str(&format!(
                " (the host denied its requests to {}: not the API and not in the stage's allowed_hosts)",
                denied.join(", ")
            ));
        }
        message
    }
}

/// What a step run produced, and what its requests were refused.
pub struct StepRun {
    pub result: Result<StepOutput, StepError>,
    pub denied: Vec<String>,
}

impl StepRun {
    /// The output, or the job's error message naming the step.
    pub fn into_result(self, name: &str) -> Result<StepOutput, String> {
        self.result.map_err(|e| e.describe(name, &self.denied))
    }
}

/// Compiles and runs step components; one per worker, so each component is compiled once.
pub struct StepRunner {
    host: WasmHost,
    linker: Linker<StepState>,
}

impl StepRunner {
    /// Compiled components are kept in memory: for a worker that runs many jobs.
    pub fn new() -> Result<Self, StepError> {
        Self::with_cache(CompileCache::memory())
    }

    /// Compiled components are kept in `cache`: on disk for workers started once per job.
    pub fn with_cache(cache: CompileCache) -> Result<Self, StepError> {
        let host = WasmHost::new(cache)?;
        let mut linker = host.linker::<StepData>()?;
        // wasi:* come from the shared host; only the step host's own interfaces are added here.
        type Own = wasmtime::component::HasSelf<StepState>;
        bindings::ckrv::cloud::git::add_to_linker::<_, Own>(&mut linker, |s| s)
            .map_err(HostError::Load)?;
        bindings::ckrv::cloud::log::add_to_linker::<_, Own>(&mut linker, |s| s)
            .map_err(HostError::Load)?;
        Ok(Self { host, linker })
    }

    /// Runs the component `bytes` as the step `env.name`.
    pub async fn run(&self, bytes: &[u8], ctx: StepContext, env: StepEnv<'_>) -> StepRun {
        let mut denied = Vec::new();
        let result = self.run_inner(bytes, ctx, env, &mut denied).await;
        StepRun { result, denied }
    }

    async fn run_inner(
        &self,
        bytes: &[u8],
        ctx: StepContext,
        env: StepEnv<'_>,
        denied: &mut Vec<String>,
    ) -> Result<StepOutput, StepError> {
        let component = self.host.component(bytes)?;
        let wasi = WasiCtxBuilder::new()
            .preopened_dir(env.git.workspace(), "/workspace", FsPerms::ReadWrite)
            .map_err(HostError::Load)?
            .build();
        let data = StepData {
            git: env.git.clone(),
            step: env.name.to_string(),
            log: env.log.clone(),
        };
        let mut store = self
            .host
            .store(HostState::new(wasi, env.policy, data), env.limits);
        let linker = &self.linker;
        let outcome = run_limited(&mut store, env.limits, async |store| {
            let instance =
                bindings::WorkerStep::instantiate_async(&mut *store, &component, linker).await?;
            instance.ckrv_cloud_step().call_run(store, &ctx).await
        })
        .await;
        denied.extend_from_slice(store.data().denied_origins());
        match outcome? {
            Ok(output) => Ok(output),
            Err(message) => Err(StepError::Failed(message)),
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
    /// Where its HTTP may go, and the credential the host adds for the API.
    pub policy: OriginPolicy,
    pub limits: Limits,
}
