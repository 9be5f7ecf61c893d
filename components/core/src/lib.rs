//! Business logic shared by every tiktok-edge component.
//!
//! Plain Rust with no wasm-only dependencies, so all of it is unit-tested natively
//! (`cargo test -p tiktok-edge-core`). Component crates are thin bindings over this: they
//! fill an [`env::Env`] from WASI and hand plain [`http::Request`]s to the handlers here.

pub mod audiences;
pub mod campaign_api;
pub mod campaign_ops;
pub mod campaigns;
pub mod catalog;
pub mod collector;
pub mod connections;
pub mod crypto;
pub mod env;
pub mod error;
pub mod events;
pub mod gap;
pub mod http;
pub mod idempotency;
pub mod json;
pub mod json_out;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod metrics_api;
pub mod metrics_sync;
pub mod multipart;
pub mod oauth;
pub mod oauth_api;
pub mod oauth_state;
pub mod org;
pub mod orgs;
pub mod pii;
pub mod pixel_api;
pub mod pixel_queue;
pub mod pixels;
pub mod spark_ads;
pub mod tiktok;
pub mod vault;
pub mod video;
pub mod webhook_api;
pub mod webhooks;

#[cfg(test)]
mod testing;

pub use error::{ApiError, FieldError, UpstreamError};
pub use org::OrgId;

/// The key-value store every component opens (granted in `spin.toml`).
pub const DEFAULT_STORE: &str = "default";

/// The variable naming the TikTok Business API base URL (the mock in sandbox mode).
pub const API_BASE_URL_VARIABLE: &str = "tiktok_api_base_url";
