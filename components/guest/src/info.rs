//! The small surface every component exports from the start: who it is and whether its
//! key-value store and variables work.

use crate::tiktok::edge::types::ComponentInfo;
use crate::{ApiError, config, kv};
use tiktok_edge_core::{API_BASE_URL_VARIABLE, DEFAULT_STORE};

/// Counts the call in the default store and reads the TikTok API base URL variable.
pub fn component_info(name: &str, version: &str) -> Result<ComponentInfo, ApiError> {
    let store = kv::Store::open(DEFAULT_STORE)?;
    let info_calls = store.increment(&format!("component/{name}/info-calls"), 1)?;
    let api_base_url = config::require(API_BASE_URL_VARIABLE)?;
    Ok(ComponentInfo {
        name: name.to_string(),
        version: version.to_string(),
        api_base_url,
        info_calls,
    })
}

/// The JSON form of [`ComponentInfo`], as the `/info/<component>` route returns it.
pub fn to_json(info: &ComponentInfo) -> serde_json::Value {
    serde_json::json!({
        "name": info.name,
        "version": info.version,
        "api_base_url": info.api_base_url,
        "info_calls": info.info_calls,
    })
}
