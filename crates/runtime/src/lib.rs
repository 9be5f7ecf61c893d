//! A Spin-compatible WebAssembly HTTP runtime on wasmtime: it loads a Spin manifest
//! (version 2), routes requests to its components with Spin's semantics, and gives them
//! key-value, variables and outbound HTTP as Spin does, with per-request limits and a
//! scheduler for routes called on a timer. It knows nothing of the app it runs.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use tiktok_edge_runtime::{App, AppOptions, server};
//! let app = App::load(AppOptions::new("spin.toml", ".tiktok-edge"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! server::serve(std::sync::Arc::new(app), listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! The request path: [`server`] accepts, [`App`] routes ([`routes`]) and applies the
//! limits, [`component`] makes or reuses an instance ([`engine`]) whose store
//! ([`state`]) carries the component's grants: [`key_value`], [`variables`] and the
//! [`outbound`] allow-list.

pub mod app;
pub mod component;
pub mod engine;
pub mod error;
pub mod key_value;
pub mod manifest;
pub mod outbound;
pub mod routes;
pub mod runtime_config;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod variables;

pub use app::{App, AppOptions};
pub use error::{RequestError, StartError};
