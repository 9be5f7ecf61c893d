//! tiktok-edge: runs tiktok-edge's WebAssembly components, and Spin apps, on wasmtime.
//!
//! A library first, so other programs can embed the runtime; the `tiktok-edge` binary
//! is a thin CLI over [`App`] and [`server::serve`].
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let app = tiktok_edge::App::load(tiktok_edge::AppOptions::new("spin.toml", ".tiktok-edge"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! tiktok_edge::server::serve(std::sync::Arc::new(app), listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod admin_client;
pub mod app;
pub mod bindings;
pub mod component;
pub mod engine;
pub mod error;
pub mod kv;
pub mod local_secrets;
pub mod manifest;
pub mod outbound;
pub mod routes;
pub mod runtime_config;
pub mod sandbox;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod variables;

pub use app::{App, AppOptions};
pub use error::{RequestError, StartError};
