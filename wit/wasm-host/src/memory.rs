//! The memory bound a guest's store holds: growth past it traps, and the store remembers that
//! it did, so the call's error can say so rather than show an anonymous trap.

use wasmtime::ResourceLimiter;

/// Table elements a guest may hold: far above what real components use.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Refuses growth past the limit, remembering that it did.
#[derive(Debug, Default)]
pub(crate) struct MemoryBound {
    pub(crate) limit: usize,
    pub(crate) reached: bool,
}

impl ResourceLimiter for MemoryBound {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.reached = true;
            // Trap rather than answer "no": a guest's allocator aborts either way, and a trap
            // ends it at once with the cause known.
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
