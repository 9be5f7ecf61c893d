//! The one wasmtime `Engine`, compiling (with a `.cwasm` cache) and linking components.

use crate::state::HostState;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::Result;
use wasmtime::component::{Component, Linker};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; a busy guest yields this often so timeouts can fire.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine: component model (sync and async), pooling allocator with
/// copy-on-write memory images, epoch interruption for timeouts, no fuel.
pub fn new_engine(max_instances: u32, max_memory_bytes: usize) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    // `TIKTOK_EDGE_PERFMAP=1` writes /tmp/perf-<pid>.map so `perf` names guest functions.
    if std::env::var_os("TIKTOK_EDGE_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances);
    // A component built with the preview1 adapter has two core instances and memories.
    pool.total_core_instances(max_instances * 4);
    pool.total_memories(max_instances * 2);
    pool.total_tables(max_instances * 4);
    pool.total_stacks(max_instances);
    pool.max_memory_size(max_memory_bytes);
    // Reset a freed instance's memory and tables with memset instead of madvise (whose
    // TLB flushes interrupt every core), and only the pages it dirtied: PAGEMAP_SCAN
    // (Linux 6.7+; `Auto` falls back elsewhere) finds those. A request touches little
    // memory, so this is cheap, and the next instance finds its pages already mapped.
    pool.linear_memory_keep_resident(2 << 20);
    pool.table_keep_resident(64 << 10);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).context("creating the wasmtime engine")
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("tiktok-edge-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Loads a component from `source`, compiling it or reusing a cached `.cwasm` in `cache_dir`.
///
/// A core module (`wasm32-wasip1`) is turned into a component with the preview1 adapter.
pub fn load_component(
    engine: &Engine,
    source: &Path,
    cache_dir: Option<&Path>,
) -> Result<Component> {
    let bytes =
        std::fs::read(source).with_context(|| format!("reading component {}", source.display()))?;
    let bytes = if wasmparser::Parser::is_core_wasm(&bytes) {
        componentize_preview1(&bytes)
            .with_context(|| format!("adapting wasip1 module {}", source.display()))?
    } else {
        bytes
    };
    let Some(cache_dir) = cache_dir else {
        return Component::new(engine, &bytes)
            .with_context(|| format!("compiling {}", source.display()));
    };
    let cached = cache_path(engine, cache_dir, &bytes);
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // settings (the compatibility hash is part of its name), in our own data directory.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(file = %cached.display(), error = %e, "ignoring unusable compiled cache entry")
            }
        }
    }
    let component = Component::new(engine, &bytes)
        .with_context(|| format!("compiling {}", source.display()))?;
    if let Err(e) = write_cache(&cached, &component) {
        tracing::warn!(file = %cached.display(), error = %e, "could not cache compiled component");
    }
    Ok(component)
}

fn cache_path(engine: &Engine, dir: &Path, wasm: &[u8]) -> PathBuf {
    let mut h = Sha256::new();
    h.update(wasm);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut h),
    );
    dir.join(format!("{}.cwasm", hex::encode(&h.finalize()[..16])))
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn write_cache(path: &Path, component: &Component) -> Result<()> {
    let dir = path
        .parent()
        .expect("cache paths are inside the cache directory");
    std::fs::create_dir_all(dir)?;
    // Unique per writer, so apps of one process compiling the same component at once
    // (tests sharing a cache) never write into each other's file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn componentize_preview1(module: &[u8]) -> Result<Vec<u8>> {
    let encode = || -> anyhow::Result<Vec<u8>> {
        wit_component::ComponentEncoder::default()
            .module(module)?
            .adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )?
            .validate(true)
            .encode()
    };
    encode().map_err(wasmtime::Error::from_anyhow)
}

/// The linker every component is instantiated with: WASI 0.2 and 0.3, `wasi:http` 0.2
/// and 0.3, key-value and variables in every supported version.
pub fn new_linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    crate::key_value::add_to_linker(&mut linker, HostState::kv_view)?;
    crate::variables::add_to_linker(&mut linker, HostState::vars_view)?;
    Ok(linker)
}
