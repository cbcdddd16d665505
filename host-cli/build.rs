fn main() {
    ckrv_guest_build::build("ckrv-plugin-chakravarti");
    // Only `ckrv`'s tests embed this one (its bytes are included under `cfg(test)`).
    ckrv_guest_build::build("ckrv-plugin-hostile");
}
