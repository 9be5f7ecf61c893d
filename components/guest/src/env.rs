//! Core's [`Env`] filled from WASI: the default key-value store, `wasi:config` variables,
//! `wasi:http` outbound calls and the wall clock.

use crate::ApiError;
use crate::config::WasiConfig;
use crate::kv::Store;
use crate::transport::WasiTransport;
use tiktok_edge_core::DEFAULT_STORE;
use tiktok_edge_core::platform::env::Env;

/// Runs `f` with this request's [`Env`].
pub fn with_env<R>(f: impl FnOnce(&Env) -> Result<R, ApiError>) -> Result<R, ApiError> {
    let store = Store::open(DEFAULT_STORE)?;
    let transport = WasiTransport::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let env = Env {
        kv: &store,
        config: &WasiConfig,
        transport: &transport,
        now,
    };
    f(&env)
}
