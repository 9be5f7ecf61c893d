//! Where the built tiktok-edge components are: `target/components/wasm32-wasip2/component/`,
//! the paths `spin.toml` names (and where `spin build` puts them too). The build script
//! builds them; depending on this crate is how a binary or a test makes sure they are
//! current. Set `TIKTOK_EDGE_SKIP_COMPONENT_BUILD=1` to skip the build.

/// The directory holding `{name}.wasm` for every component (names with `_`).
pub const DIR: &str = env!("TIKTOK_EDGE_COMPONENTS_DIR");

/// The components: (id in `spin.toml`, the `tiktok:edge` interface it exports).
pub const COMPONENTS: [(&str, &str); 5] = [
    ("accounts", "oauth"),
    ("pixel-collector", "pixel"),
    ("webhook-receiver", "webhooks"),
    ("campaign-ops", "campaigns"),
    ("metrics-fetch", "metrics"),
];

/// The path of one component's `.wasm` file.
pub fn wasm(id: &str) -> std::path::PathBuf {
    std::path::Path::new(DIR).join(format!("{}.wasm", id.replace('-', "_")))
}
