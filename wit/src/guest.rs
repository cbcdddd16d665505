//! What every guest component shares: the wasi:http bindings, generated once, and a small
//! blocking HTTP client over them. Guests map `wasi:*` in their own `generate!` onto these
//! modules so that all of them speak through one set of types.

wit_bindgen::generate!({
    path: ".",
    world: "ckrv:cloud/http-client",
    generate_all,
});

pub mod http;

/// The value named `name` among a step's params or inputs.
pub fn named<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A guest's own bindings for `world`, with the shared types and this module's wasi bindings
/// mapped in, so no guest repeats the map. `path` is the WIT directory relative to the guest's
/// manifest; further `generate!` options (e.g. `generate_all`) follow it.
#[macro_export]
macro_rules! guest_bindings {
    ($path:literal, $world:literal $(, $option:ident)* $(,)?) => {
        wit_bindgen::generate!({
            path: $path,
            world: $world,
            with: {
                "ckrv:cloud/types@0.5.0": ckrv_wit::types,
                "wasi:http/types@0.2.12": ckrv_wit::guest::wasi::http::types,
                "wasi:http/outgoing-handler@0.2.12": ckrv_wit::guest::wasi::http::outgoing_handler,
                "wasi:io/poll@0.2.12": ckrv_wit::guest::wasi::io::poll,
                "wasi:io/error@0.2.12": ckrv_wit::guest::wasi::io::error,
                "wasi:io/streams@0.2.12": ckrv_wit::guest::wasi::io::streams,
                "wasi:clocks/monotonic-clock@0.2.12": ckrv_wit::guest::wasi::clocks::monotonic_clock,
            },
            $($option,)*
        });
    };
}
