//! Business logic shared by every tiktok-edge component, one folder per capability.
//!
//! Plain Rust with no wasm-only dependencies, so all of it is unit-tested natively
//! (`cargo test -p tiktok-edge-core`). Component crates are thin bindings over this: they
//! fill a [`platform::env::Env`] from WASI and hand plain [`platform::http::Request`]s to
//! the capabilities' `api` modules.
//!
//! Layers, each importing only those before it:
//! - [`platform`]: errors, HTTP values, the key-value trait, variables, crypto, JSON, leases;
//! - [`tiktok`]: the Business API client, its return codes, and PII hashing as TikTok takes it;
//! - [`tenancy`]: organizations, API keys, TikTok connections and their sealed tokens;
//! - the capabilities, each with its routes in `api.rs` and its storage layout in `mod.rs`:
//!   [`oauth`], [`pixel`], [`webhooks`], [`ads`], [`metrics`].

pub mod platform;
pub mod tenancy;
pub mod tiktok;

pub mod ads;
pub mod metrics;
pub mod oauth;
pub mod pixel;
pub mod webhooks;

#[cfg(test)]
mod testing;

pub use platform::error::{ApiError, FieldError, UpstreamError};
pub use tenancy::org_id::OrgId;

/// The key-value store every component opens (granted in `spin.toml`).
pub const DEFAULT_STORE: &str = "default";

/// The variable naming the TikTok Business API base URL (the mock in sandbox mode).
pub const API_BASE_URL_VARIABLE: &str = "tiktok_api_base_url";
