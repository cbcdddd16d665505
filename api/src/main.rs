//! `ckrv-api`: the control plane. The HTTP service is the next step of issue #2.

fn main() -> std::process::ExitCode {
    eprintln!("error: ckrv-api serve is not available in this build yet");
    std::process::ExitCode::from(2)
}
