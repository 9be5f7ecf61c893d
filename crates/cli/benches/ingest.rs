//! The wasm tax on the pixel hot path: the same `POST /pixel/events` handling (core's
//! `pixel::api::handle`) against the same SQLite store, once natively and once through
//! tiktok-edge's `App` (routing, a fresh pixel-collector instance, WASI), without TCP.
//! `cargo bench -p tiktok-edge --bench ingest`
//!
//! `ingest serve ADDR DIR` instead serves the same handler natively over HTTP (hyper,
//! the host's SQLite store and group commit, no wasm), so `bench/pixel.sh` can measure
//! the wasm tax under the same load as the host.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tiktok_edge_core::ApiError;
use tiktok_edge_core::platform::env::{Config, Env};
use tiktok_edge_core::platform::http::Request;
use tiktok_edge_core::platform::outbound::{
    IncomingResponse, OutgoingRequest, Transport, TransportError,
};
use tiktok_edge_kv::{KeyValueBackend, Write, Written};
use tiktok_edge_kv_sqlite::SqliteBackend;
use tiktok_edge_runtime::{App, AppOptions};

/// The tiktok-edge CLI's allocator, so both sides compare code, not allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin";
const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Core's store over the host's SQLite backend. Called from a thread of a Tokio runtime
/// (the native server), writes go through the host's group commit as a guest's do;
/// otherwise (the one-at-a-time loop) each write commits alone.
struct Native {
    kv: Arc<SqliteBackend>,
    grouped: Option<tokio::runtime::Handle>,
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::Storage(e.to_string())
}

impl Native {
    fn alone(kv: SqliteBackend) -> Self {
        Native {
            kv: Arc::new(kv),
            grouped: None,
        }
    }

    fn write(&self, op: Write) -> Result<Written, ApiError> {
        let answer = match &self.grouped {
            Some(runtime) => runtime.block_on(self.kv.write("default", op)),
            None => tiktok_edge_kv::apply_sync(&*self.kv, "default", op),
        };
        answer.map_err(storage)
    }
}

impl tiktok_edge_core::platform::kv::KeyValue for Native {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        self.kv.get("default", key).map_err(storage)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.write(Write::Set {
            key: key.into(),
            value: value.into(),
        })
        .map(drop)
    }
    fn delete(&self, key: &str) -> Result<(), ApiError> {
        self.write(Write::Delete { key: key.into() }).map(drop)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, ApiError> {
        match self.write(Write::Increment {
            key: key.into(),
            delta,
        })? {
            Written::Counter(n) => Ok(n),
            other => Err(storage(other.unexpected())),
        }
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, ApiError> {
        match self.write(Write::CompareAndSwap {
            key: key.into(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.into(),
        })? {
            Written::Swapped(swapped) => Ok(swapped),
            other => Err(storage(other.unexpected())),
        }
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, ApiError> {
        Ok(self
            .kv
            .get_many("default", keys)
            .map_err(storage)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), ApiError> {
        self.write(Write::SetMany(entries.to_vec())).map(drop)
    }
    fn delete_many(&self, keys: &[String]) -> Result<(), ApiError> {
        self.write(Write::DeleteMany(keys.to_vec())).map(drop)
    }
}

struct Vars;
impl Config for Vars {
    fn get(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(match name {
            "admin_token" => Some(ADMIN.into()),
            "token_encryption_keys" => Some(KEYS.into()),
            "tiktok_api_base_url" => Some("http://127.0.0.1:9".into()),
            _ => None,
        })
    }
}

struct NoTikTok;
impl Transport for NoTikTok {
    fn send(&self, _: &OutgoingRequest) -> Result<IncomingResponse, TransportError> {
        Err(TransportError("ingestion never calls TikTok".into()))
    }
    fn sleep(&self, _: Duration) {}
}

fn body(batch: usize, round: usize) -> String {
    let events: Vec<_> = (0..batch)
        .map(|i| json!({"event": "AddToCart", "event_id": format!("r{round}-{i}"),
            "user": {"email": format!("Shopper{i}@Example.com"), "phone": "+1 213 373 4253"},
            "page": {"url": "https://shop.example/p?ttclid=abc"}, "properties": {"value": 9.5, "currency": "USD"}}))
        .collect();
    json!({ "events": events }).to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn native(dir: &Path, batch: usize, rounds: usize) -> Duration {
    let kv =
        Native::alone(SqliteBackend::open(&dir.join(format!("native-{batch}.sqlite"))).unwrap());
    let env = Env {
        kv: &kv,
        config: &Vars,
        transport: &NoTikTok,
        now: now(),
    };
    let admin = |method: &str, path: &str, body: &str| {
        let req = Request::new(method, path)
            .with_header("authorization", &format!("Bearer {ADMIN}"))
            .with_body(body);
        tiktok_edge_core::oauth::api::handle(&env, &req).unwrap()
    };
    admin("POST", "/v1/orgs", r#"{"id":"bench"}"#);
    let req = Request::new("POST", "/v1/orgs/bench/pixels")
        .with_header("authorization", &format!("Bearer {ADMIN}"))
        .with_body(r#"{"pixel_code":"BENCH","access_token":"t"}"#);
    let created = tiktok_edge_core::pixel::api::handle(&env, &req, "").unwrap();
    let pixel: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    let path = format!("/pixel/events?pixel={}", pixel["id"].as_str().unwrap());
    let start = Instant::now();
    for round in 0..rounds {
        let req = Request::new("POST", &path)
            .with_body(body(batch, round))
            .with_header("spin-client-addr", "127.0.0.1:1");
        let r = tiktok_edge_core::pixel::api::handle(&env, &req, "").unwrap();
        assert_eq!(r.status, 200);
    }
    start.elapsed()
}

async fn send(app: &App, method: &str, path: &str, body: String) -> (u16, Bytes) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let r = app.handle(req, "127.0.0.1:1".parse().unwrap()).await;
    let status = r.status().as_u16();
    (status, r.into_body().collect().await.unwrap().to_bytes())
}

async fn wasm(dir: &Path, batch: usize, rounds: usize) -> Duration {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let manifest = std::fs::read_to_string(workspace.join("spin.toml"))
        .unwrap()
        .replace(
            "source = \"target/components/wasm32-wasip2/component/",
            &format!("source = \"{}/", tiktok_edge_components::DIR),
        );
    let manifest_path = dir.join(format!("spin-{batch}.toml"));
    std::fs::write(&manifest_path, manifest).unwrap();
    let mut options = AppOptions::new(&manifest_path, dir.join(format!("data-{batch}")));
    for (k, v) in [
        ("admin_token", ADMIN),
        ("token_encryption_keys", KEYS),
        ("tiktok_api_base_url", "http://127.0.0.1:9"),
    ] {
        options.variables.insert(k.into(), v.into());
    }
    let app = App::load(options).unwrap();
    send(&app, "POST", "/v1/orgs", r#"{"id":"bench"}"#.into()).await;
    let (_, created) = send(
        &app,
        "POST",
        "/v1/orgs/bench/pixels",
        r#"{"pixel_code":"BENCH","access_token":"t"}"#.into(),
    )
    .await;
    let pixel: serde_json::Value = serde_json::from_slice(&created).unwrap();
    let path = format!("/pixel/events?pixel={}", pixel["id"].as_str().unwrap());
    let start = Instant::now();
    for round in 0..rounds {
        let (status, _) = send(&app, "POST", &path, body(batch, round)).await;
        assert_eq!(status, 200);
    }
    let elapsed = start.elapsed();
    if batch == 1 {
        // The fixed cost of a request through the host: the same component's smallest
        // route (one variable, one counter increment).
        let start = Instant::now();
        for _ in 0..rounds {
            let (status, _) = send(&app, "GET", "/info/pixel-collector", String::new()).await;
            assert_eq!(status, 200);
        }
        println!(
            "  fixed cost of one request through tiktok-edge (GET /info/pixel-collector): {:.1} µs",
            start.elapsed().as_secs_f64() * 1e6 / rounds as f64
        );
    }
    elapsed
}

/// The native server: core's handlers behind hyper, each request on a blocking thread
/// (core is synchronous), writes group-committed by the host's store.
fn serve(listen: &str, dir: &Path) {
    use hyper::service::service_fn;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kv = Arc::new(Native {
        kv: Arc::new(SqliteBackend::open(&dir.join("native.sqlite")).unwrap()),
        grouped: Some(runtime.handle().clone()),
    });
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let kv = kv.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let kv = kv.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = http_body_util::Limited::new(body, 2 << 20)
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut core = Request::new(
                            parts.method.as_str(),
                            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                        )
                        .with_body(body.to_vec())
                        .with_header("spin-client-addr", &peer.to_string());
                        for (name, value) in &parts.headers {
                            if let Ok(value) = value.to_str() {
                                core = core.with_header(name.as_str(), value);
                            }
                        }
                        let r = tokio::task::spawn_blocking(move || {
                            let env = Env {
                                kv: &*kv,
                                config: &Vars,
                                transport: &NoTikTok,
                                now: now(),
                            };
                            let handled = match core.path.as_str() {
                                p if p.starts_with("/info/") => {
                                    Ok(tiktok_edge_core::platform::http::Response::json(
                                        200,
                                        &json!({}),
                                    ))
                                }
                                "/v1/orgs" => tiktok_edge_core::oauth::api::handle(&env, &core),
                                _ => tiktok_edge_core::pixel::api::handle(&env, &core, ""),
                            };
                            handled.unwrap_or_else(|e| {
                                tiktok_edge_core::platform::http::Response::error(&e)
                            })
                        })
                        .await
                        .unwrap();
                        let mut out = http::Response::builder().status(r.status);
                        for (name, value) in &r.headers {
                            out = out.header(name, value);
                        }
                        Ok::<_, std::convert::Infallible>(
                            out.body(Full::new(Bytes::from(r.body))).unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, listen, dir, ..] = args.as_slice()
        && mode == "serve"
    {
        return serve(listen, Path::new(dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Latency, not capacity: a lone request waits for each of its commits alone, where
    // under load commits are shared (bench/pixel.sh measures the wasm tax under load).
    println!("one request at a time (latency), same handler, same SQLite store (WAL):");
    for (batch, rounds) in [(1usize, 3000usize), (50, 200)] {
        let n = native(dir.path(), batch, rounds);
        if std::env::var_os("INGEST_NATIVE_ONLY").is_some() {
            // For profiling the core logic alone (`perf record`).
            println!(
                "  batch {batch:>2}: native {:>7.1} µs/event",
                n.as_secs_f64() * 1e6 / (batch * rounds) as f64
            );
            continue;
        }
        let w = runtime.block_on(wasm(dir.path(), batch, rounds));
        let per = |d: Duration| d.as_secs_f64() * 1e6 / (batch * rounds) as f64;
        println!(
            "  batch {batch:>2}: native {:>7.1} µs/event ({:>7.0} events/s)  wasm {:>7.1} µs/event ({:>7.0} events/s)  wasm/native {:.2}",
            per(n),
            1e6 / per(n),
            per(w),
            1e6 / per(w),
            per(n) / per(w)
        );
    }
}
