//! Builds the built-in step components so the binary carries them, and the hostile step the
//! containment tests run.
fn main() {
    for step in [
        "ckrv-step-clone",
        "ckrv-step-diff",
        "ckrv-step-upload",
        "ckrv-step-publish",
        "ckrv-step-hostile",
    ] {
        ckrv_guest_build::build(step);
    }
}
