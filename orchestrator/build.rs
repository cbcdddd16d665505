//! Builds the built-in step components so the binary carries them.
fn main() {
    for step in ["ckrv-step-clone", "ckrv-step-diff", "ckrv-step-upload"] {
        ckrv_guest_build::build(step);
    }
}
