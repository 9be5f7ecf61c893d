//! The `tiktok-edge` binary end to end, one test binary: `up` and the admin commands
//! ([`cli`]), and crash safety under `kill -9` ([`crash`]).

mod cli;
mod crash;

use std::path::Path;

/// The binary under test, built by cargo for this test target.
const BIN: &str = env!("CARGO_BIN_EXE_tiktok-edge");

/// The repository root, where `spin.toml` and `runtime-config.toml` are.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/cli is inside the workspace")
}
