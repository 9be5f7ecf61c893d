//! Variables through `wasi:config/store@0.2.0-draft-2024-09-27` (Spin's variables on Spin).

use crate::ApiError;
use crate::wasi::config::store;

/// The value of variable `name`, or `None` when it is not set.
pub fn get(name: &str) -> Result<Option<String>, ApiError> {
    store::get(name).map_err(|e| match e {
        store::Error::Upstream(m) => ApiError::Internal(format!("variables provider failed: {m}")),
        store::Error::Io(m) => ApiError::Internal(format!("reading variable {name} failed: {m}")),
    })
}

/// The value of variable `name`; a missing one is a configuration error (500) naming it.
pub fn require(name: &str) -> Result<String, ApiError> {
    get(name)?.ok_or_else(|| ApiError::Internal(format!("variable {name} is not set")))
}

/// `wasi:config` as core's [`tiktok_edge_core::platform::env::Config`].
pub struct WasiConfig;

impl tiktok_edge_core::platform::env::Config for WasiConfig {
    fn get(&self, name: &str) -> Result<Option<String>, ApiError> {
        get(name)
    }
}
