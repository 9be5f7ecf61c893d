//! Builds the guest apps under `tests/apps` (their own workspace) for the end-to-end
//! tests: for wasm32-wasip2, and the plain wasi:http app also for wasm32-wasip1, so the
//! host's componentizing of core modules is tested too.

use std::path::Path;
use tiktok_edge_wasm_build::{TARGET, build, rerun_if_changed};

fn main() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    let apps = tests.join("apps");
    let workspace = tests.parent().expect("tests/ is inside the workspace");
    rerun_if_changed(&[
        &apps,
        &workspace.join("wit"),
        &workspace.join("crates/runtime/wit"),
    ]);
    let target_dir = workspace.join("target/test-apps");
    let p2 = build(
        &apps,
        &["spin-sdk-app", "wasi-http-app", "hello-p2", "hello-p3"],
        TARGET,
        "release",
        &target_dir,
    );
    let p1 = build(
        &apps,
        &["wasi-http-app"],
        "wasm32-wasip1",
        "release",
        &target_dir,
    );
    println!("cargo:rustc-env=TEST_APPS_P2={}", p2.display());
    println!("cargo:rustc-env=TEST_APPS_P1={}", p1.display());
}
