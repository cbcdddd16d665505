//! The engine every guest runs in, and the bounds each call runs under: a wall-clock deadline
//! that stops even a guest spinning without a host call (epoch interruption; async host calls
//! such as a clone are cut by the same deadline), and a memory bound whose breach is reported
//! as such rather than as an anonymous trap.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, Trap, UpdateDeadline};

use crate::cache::CompileCache;
use crate::error::HostError;
use crate::state::HostState;

/// How often the engine's epoch advances: the granularity of deadlines, and how often a busy
/// guest yields to other tasks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The bounds of one guest call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: usize,
    /// Wall-clock time, host calls included.
    pub timeout: Duration,
}

/// An engine with deadlines, and the components compiled for it.
pub struct WasmHost {
    engine: Engine,
    cache: CompileCache,
}

impl WasmHost {
    pub fn new(cache: CompileCache) -> Result<Self, HostError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(HostError::Load)?;
        spawn_epoch_ticker(&engine);
        Ok(Self { engine, cache })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled component of `bytes`, from the cache when it holds it.
    pub fn component(&self, bytes: &[u8]) -> Result<Component, HostError> {
        self.cache.component(&self.engine, bytes, None)
    }

    /// As [`WasmHost::component`] for bytes the caller has checked against `sha256` already
    /// (a plugin's recorded digest), so they are not hashed again.
    pub fn verified_component(
        &self,
        bytes: &[u8],
        sha256: [u8; 32],
    ) -> Result<Component, HostError> {
        self.cache.component(&self.engine, bytes, Some(sha256))
    }

    /// A linker with WASI and outbound HTTP (under each store's policy); the host adds its own
    /// interfaces.
    pub fn linker<T: Send + 'static>(&self) -> Result<Linker<HostState<T>>, HostError> {
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(HostError::Load)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(HostError::Load)?;
        Ok(linker)
    }

    /// A store for one guest, under `limits.memory_bytes`.
    pub fn store<T: Send + 'static>(
        &self,
        mut state: HostState<T>,
        limits: Limits,
    ) -> Store<HostState<T>> {
        state.memory.limit = limits.memory_bytes;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        // Until a call sets its own deadline, a guest that runs is stopped at the next tick.
        store.set_epoch_deadline(1);
        store
    }
}

/// Runs `call` (instantiation, or a call into the guest) under `limits`: stopped at the
/// deadline whether it spins in WASM or waits on the host, its traps sorted by cause.
pub async fn run_limited<T: Send + 'static, R>(
    store: &mut Store<HostState<T>>,
    limits: Limits,
    call: impl AsyncFnOnce(&mut Store<HostState<T>>) -> wasmtime::Result<R>,
) -> Result<R, HostError> {
    let deadline = Instant::now() + limits.timeout;
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            // Yield every tick, so a busy guest never starves the runtime's other tasks.
            UpdateDeadline::Yield(1)
        })
    });
    store.set_epoch_deadline(1);
    let outcome = tokio::time::timeout(limits.timeout, call(store)).await;
    let reached_memory = std::mem::take(&mut store.data_mut().memory.reached);
    match outcome {
        Err(_) => Err(HostError::Timeout(limits.timeout)),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) if reached_memory => Err(HostError::Memory(limits.memory_bytes)),
        Ok(Err(trap)) if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
            Err(HostError::Timeout(limits.timeout))
        }
        Ok(Err(trap)) => Err(HostError::Trap(trap)),
    }
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
