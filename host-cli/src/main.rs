mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "ckrv:cloud/provider-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "ckrv:cloud/types": ckrv_wit::types,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}
fn main() {
    let _ = include_bytes!(concat!(env!("OUT_DIR"), "/ckrv_plugin_chakravarti.wasm"));
}
