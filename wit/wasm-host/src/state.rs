//! Everything a guest's store holds: WASI (with only what the host preopened), HTTP under the
//! origin policy, the memory bound, and the host's own data for its own imports.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::memory::MemoryBound;
use crate::policy::{OriginPolicy, PolicyHooks};

/// The store state of one guest instance; `data` is the host's own.
pub struct HostState<T> {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) memory: MemoryBound,
    pub(crate) hooks: PolicyHooks,
    pub data: T,
}

impl<T> HostState<T> {
    /// A guest's state: `wasi` holds what it may see (preopens; no environment, no stdio
    /// unless given), `policy` where it may connect.
    pub fn new(wasi: WasiCtx, policy: OriginPolicy, data: T) -> Self {
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            memory: MemoryBound::default(),
            hooks: PolicyHooks {
                policy,
                denied: Vec::new(),
            },
            data,
        }
    }

    /// The origins the guest tried to reach and was refused, in order.
    pub fn denied_origins(&self) -> &[String] {
        &self.hooks.denied
    }
}

impl<T: Send + 'static> WasiView for HostState<T> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl<T: Send + 'static> WasiHttpView for HostState<T> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl<T> ckrv_wit::types::Host for HostState<T> {}
