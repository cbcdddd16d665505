//! The one way a host generates its bindings for a world of `wit/`.

/// A host's bindings for `world`: async imports and exports, with the contract's shared types
/// and wasmtime's WASI bindings mapped in, so the plugin host and the step host cannot map them
/// differently. `path` is the WIT directory relative to the host crate's manifest; further
/// `"interface" => module` pairs map what only this world imports. The crate needs `wasmtime`,
/// `wasmtime-wasi`, `wasmtime-wasi-http` and `ckrv-wit` as dependencies.
#[macro_export]
macro_rules! host_bindings {
    ($path:literal, $world:literal $(, $interface:literal => $module:path)* $(,)?) => {
        wasmtime::component::bindgen!({
            path: $path,
            world: $world,
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "ckrv:cloud/types": ckrv_wit::types,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                $($interface: $module,)*
            },
        });
    };
}
