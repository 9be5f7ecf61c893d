//! Sandbox mode: with no TikTok app credentials configured, the host starts the built-in
//! TikTok mock and points the app at it, so `tiktok-edge up` works without an ad account.

use tiktok_edge_runtime::AppOptions;
use tiktok_edge_runtime::variables::env_name;
use tiktok_mock::{MockConfig, MockServer};

/// The variables that hold the TikTok app credentials and the API base URL.
pub const APP_ID: &str = "tiktok_app_id";
pub const APP_SECRET: &str = "tiktok_app_secret";
pub const API_BASE_URL: &str = "tiktok_api_base_url";

/// What the host decided about TikTok.
pub enum Mode {
    /// Credentials are configured: the real API (or the base URL the user set).
    Live,
    /// No credentials and no base URL: the built-in mock serves TikTok's API.
    Sandbox(MockServer),
    /// No credentials but a base URL the user chose (e.g. a standalone tiktok-mock).
    CustomApi(String),
}

fn configured(options: &AppOptions, name: &str) -> Option<String> {
    options
        .variables
        .get(name)
        .cloned()
        .or_else(|| std::env::var(env_name(name)).ok())
        .filter(|v| !v.is_empty())
}

/// Chooses the mode and, for sandbox mode, starts the mock and sets the variables.
pub async fn prepare(options: &mut AppOptions) -> std::io::Result<Mode> {
    if configured(options, APP_ID).is_some() || configured(options, APP_SECRET).is_some() {
        return Ok(Mode::Live);
    }
    if let Some(url) = configured(options, API_BASE_URL) {
        return Ok(Mode::CustomApi(url));
    }
    let config = MockConfig::default();
    let mock = MockServer::start(config.clone()).await?;
    options.variables.insert(API_BASE_URL.into(), mock.url());
    options.variables.insert(APP_ID.into(), config.app_id);
    options
        .variables
        .insert(APP_SECRET.into(), config.app_secret);
    Ok(Mode::Sandbox(mock))
}
