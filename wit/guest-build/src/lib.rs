//! Builds a guest crate of this workspace for `wasm32-wasip2` from a host crate's build script,
//! so `cargo build` / `cargo install --path host-cli` need no manual step.
//!
//! The nested cargo runs with its own target directory (no lock contention with the outer
//! build), without the host's RUSTFLAGS (they are for the host target), and builds only guest
//! packages (so no features are unified with the host's dependency graph).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every guest is built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// Builds `package` and copies its component to `$OUT_DIR/<file_stem>.wasm`; returns that path.
///
/// # Panics
/// Panics with the nested cargo's error when the guest does not build: a build script has no
/// better way to fail.
pub fn build(package: &str) -> PathBuf {
    let root = workspace_root();
    let out_dir =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    let target_dir = guest_target_dir(&out_dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    for watched in ["wit", "plugins", "orchestrator/steps", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    ensure_target_installed(&root);
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            GUEST_TARGET,
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build guest `{package}`: {e}"));
    assert!(
        status.success(),
        "building guest `{package}` for {GUEST_TARGET} failed (is the target installed? `rustup target add {GUEST_TARGET}`)"
    );

    let file = format!("{}.wasm", package.replace('-', "_"));
    let built = target_dir.join(GUEST_TARGET).join("release").join(&file);
    let dest = out_dir.join(&file);
    std::fs::copy(&built, &dest)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), dest.display()));
    dest
}

/// rust-toolchain.toml declares the guest target, but rustup adds declared targets only when
/// it installs the toolchain; an existing toolchain may lack it. Add it rather than fail.
fn ensure_target_installed(root: &Path) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if libdir.is_some_and(|dir| dir.exists()) {
        return;
    }
    println!(
        "cargo:warning=installing the {GUEST_TARGET} target with rustup (declared in rust-toolchain.toml)"
    );
    let added = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", GUEST_TARGET])
        .status();
    if !added.is_ok_and(|status| status.success()) {
        println!(
            "cargo:warning=could not add {GUEST_TARGET}; run `rustup target add {GUEST_TARGET}`"
        );
    }
}

fn workspace_root() -> PathBuf {
    // This crate lives at <root>/wit/guest-build.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("wit/guest-build has two ancestors")
        .to_path_buf()
}

/// `<profile dir>/wasm-guests`, beside the outer build's `build/` directory, so every host crate
/// of one build shares the guests' compiled dependencies.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .map(|profile| profile.join("wasm-guests"))
        .unwrap_or_else(|| out_dir.join("wasm-guests"))
}
