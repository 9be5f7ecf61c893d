//! Starting tiktok-edge in-process on a loopback port, with a manifest made for the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tiktok_edge_runtime::{App, AppOptions, StartError};
use tokio::sync::oneshot;

/// The guest apps of `tests/apps`, built for wasm32-wasip2 by build.rs.
pub const APPS_P2: &str = env!("TEST_APPS_P2");
/// The same wasi:http app built for wasm32-wasip1 (a core module).
pub const APPS_P1: &str = env!("TEST_APPS_P1");
/// Our own components, built by `tiktok-edge-components`'s build script.
pub const COMPONENTS: &str = tiktok_edge_components::DIR;

/// The five tiktok-edge components: (component id, WIT interface).
pub const OUR_COMPONENTS: [(&str, &str); 5] = tiktok_edge_components::COMPONENTS;

/// Fills `{P2}`, `{P1}` and `{COMPONENTS}` in a manifest template.
pub fn manifest(template: &str) -> String {
    template
        .replace("{P2}", APPS_P2)
        .replace("{P1}", APPS_P1)
        .replace("{COMPONENTS}", COMPONENTS)
}

pub struct Running {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Asks for a graceful shutdown and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("server task")
            .expect("server result");
    }
}

/// Writes `manifest_text` into `dir/spin.toml`, loads it with data in `dir/data`, serves it.
pub async fn start(
    dir: &Path,
    manifest_text: &str,
    configure: impl FnOnce(&mut AppOptions),
) -> Result<Running, StartError> {
    let manifest_path = dir.join("spin.toml");
    std::fs::write(&manifest_path, manifest(manifest_text)).unwrap();
    let mut options = AppOptions::new(&manifest_path, data_dir(dir));
    options.compiled_cache = Some(compiled_cache().to_path_buf());
    // Tests run many apps at once: keep each one's pooling reservation small.
    options.runtime_config.limits.max_concurrent_requests = 32;
    configure(&mut options);
    let app = Arc::new(
        tokio::task::spawn_blocking(move || App::load(options))
            .await
            .unwrap()?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(tiktok_edge_runtime::server::serve(
        app.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Running {
        addr,
        app,
        stop: Some(stop),
        task,
    })
}

/// One compiled-component cache for every app this test process starts, so each
/// component is compiled once rather than once per test. Emptied when the process first
/// uses it, so entries of components built before do not pile up under `target/`.
pub fn compiled_cache() -> &'static Path {
    static CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-components");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the compiled-component cache");
        dir
    })
}

pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

pub async fn get(url: impl AsRef<str>) -> (u16, String) {
    let r = reqwest::get(url.as_ref()).await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap())
}

pub async fn put(url: &str, body: &'static [u8]) -> (u16, String) {
    let r = reqwest::Client::new()
        .put(url)
        .body(body)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.unwrap())
}
pub mod world;
