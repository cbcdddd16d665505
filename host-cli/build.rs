use sha2::{Digest as _, Sha256};

fn main() {
    let plugin = ckrv_guest_build::build("ckrv-plugin-chakravarti");
    // The built-in plugin's digest, computed once here rather than at every command.
    let bytes = std::fs::read(&plugin).expect("the built plugin is readable");
    println!(
        "cargo:rustc-env=CKRV_CHAKRAVARTI_SHA256={}",
        hex::encode(Sha256::digest(&bytes))
    );
    // Only `ckrv`'s tests embed this one (its bytes are included under `cfg(test)`).
    ckrv_guest_build::build("ckrv-plugin-hostile");
}
