//! Mean time to make a fresh instance of a component (store + instantiate from the
//! `InstancePre`, pooling allocator, copy-on-write memory): the cost a fresh instance per
//! request adds. `cargo bench -p tiktok-edge --bench instantiate -- <component.wasm>`

use std::time::Instant;
use tiktok_edge_runtime::{App, AppOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wasm = std::env::args()
        .skip(1)
        .find(|a| a.ends_with(".wasm"))
        .ok_or("usage: cargo bench -p tiktok-edge --bench instantiate -- <component.wasm>")?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"bench\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\n[component.c]\nsource = {:?}\n",
            std::fs::canonicalize(&wasm)?
        ),
    )?;
    let app = App::load(AppOptions::new(&manifest, dir.path().join("data")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for _ in 0..1_000 {
            drop(app.instantiate("c").await?);
        }
        let n = 20_000u32;
        let start = Instant::now();
        for _ in 0..n {
            drop(app.instantiate("c").await?);
        }
        let mean = start.elapsed() / n;
        println!(
            "instantiation: mean {:.1} µs over {n} fresh instances of {wasm}",
            mean.as_nanos() as f64 / 1000.0
        );
        Ok::<_, wasmtime::Error>(())
    })?;
    Ok(())
}
