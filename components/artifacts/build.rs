//! Builds the tiktok-edge components for wasm32-wasip2 whenever this crate is built (the
//! `tiktok-edge` binary and the tests depend on it), so `cargo run -p tiktok-edge -- up`
//! and `cargo test` always serve current `.wasm` files.
//! They land in `target/components/wasm32-wasip2/component/`, where `spin.toml` points
//! (and where `spin build` puts them too). Set TIKTOK_EDGE_SKIP_COMPONENT_BUILD=1 to skip.

use std::path::Path;

const COMPONENTS: &[&str] = &[
    "accounts",
    "pixel-collector",
    "webhook-receiver",
    "campaign-ops",
    "metrics-fetch",
];

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("components/artifacts is inside the workspace");
    let target_dir = workspace.join("target/components");
    println!(
        "cargo:rustc-env=TIKTOK_EDGE_COMPONENTS_DIR={}",
        target_dir
            .join(tiktok_edge_wasm_build::TARGET)
            .join("component")
            .display()
    );
    println!("cargo:rerun-if-env-changed=TIKTOK_EDGE_SKIP_COMPONENT_BUILD");
    if std::env::var_os("TIKTOK_EDGE_SKIP_COMPONENT_BUILD").is_some() {
        return;
    }
    tiktok_edge_wasm_build::rerun_if_changed(&[
        &workspace.join("components"),
        &workspace.join("wit"),
        &workspace.join("Cargo.lock"),
    ]);
    tiktok_edge_wasm_build::build(
        workspace,
        COMPONENTS,
        tiktok_edge_wasm_build::TARGET,
        "component",
        &target_dir,
    );
}
