//! What the CLI's plugin host and the worker's step host share, so the two cannot drift: an
//! engine whose guests are stopped by wall-clock deadlines (epoch interruption) and bounded
//! memory, one outbound HTTP policy (origins, and the one origin that gets a credential), one
//! store state with the WASI views, one error type, and one compile cache (on disk for the
//! CLI, which starts often; in memory for the worker, which runs the same steps all day).
//!
//! Each host adds only its own imports to the [`Linker`](wasmtime::component::Linker) that
//! [`WasmHost::linker`] returns, keyed on its own data in [`HostState::data`].

mod bindings;
mod cache;
mod error;
mod limits;
mod memory;
mod policy;
mod state;

pub use cache::CompileCache;
pub use ckrv_wit::origin::{Origin, OriginError};
pub use error::HostError;
pub use limits::{Limits, WasmHost, run_limited};
pub use policy::OriginPolicy;
pub use state::HostState;
