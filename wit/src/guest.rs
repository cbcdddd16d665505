//! What every guest component shares: the wasi:http bindings, generated once, and a small
//! blocking HTTP client over them. Guests map `wasi:*` in their own `generate!` onto these
//! modules so that all of them speak through one set of types.

wit_bindgen::generate!({
    path: ".",
    world: "ckrv:cloud/http-client",
    generate_all,
});

pub mod http;
