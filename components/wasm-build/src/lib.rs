//! Builds WebAssembly components from a build script, the way wasmtime's test programs
//! are built: a nested `cargo build --target wasm32-wasip2` into its own target
//! directory (a shared one would deadlock on cargo's lock), with the outer build's
//! environment removed so its flags and target do not leak in.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target our components are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Makes sure the `wasm32-wasip2` standard library is installed, installing it with
/// rustup when possible; otherwise panics with the command to run.
pub fn ensure_target(target: &str) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(target).exists() {
        return;
    }
    let installed = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !installed || !sysroot.join("lib/rustlib").join(target).exists() {
        panic!(
            "the {target} target is not installed for {}; run: rustup target add {target}",
            sysroot.display()
        );
    }
}

/// Runs `cargo build --target <target>` for `packages` of the workspace at `workspace`
/// with `profile`, into `target_dir`; returns the directory holding the `.wasm` files.
pub fn build(
    workspace: &Path,
    packages: &[&str],
    target: &str,
    profile: &str,
    target_dir: &Path,
) -> PathBuf {
    ensure_target(target);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--target",
            target,
            "--profile",
            profile,
            "--target-dir",
        ])
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
            || key == "RUSTDOCFLAGS"
            || key == "CARGO_ENCODED_RUSTFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("running cargo for the wasm components");
    assert!(
        status.success(),
        "building {packages:?} for {target} failed (see the output above)"
    );
    let profile_dir = if profile == "dev" { "debug" } else { profile };
    target_dir.join(target).join(profile_dir)
}

/// Tells cargo to rerun the build script when anything under `paths` changes.
pub fn rerun_if_changed(paths: &[&Path]) {
    for p in paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
