//! Why a guest did not answer. Messages read after the guest's name: "step secret-scan was
//! stopped at its time limit of 2s".

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("could not be loaded: {0:#}")]
    Load(wasmtime::Error),
    #[error("crashed: {0:#}")]
    Trap(wasmtime::Error),
    #[error("was stopped at its time limit of {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("was stopped at its memory limit of {} MiB", .0 / (1024 * 1024))]
    Memory(usize),
}
