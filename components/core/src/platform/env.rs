//! What request handling in core gets from its host: the key-value store, variables,
//! outbound HTTP and the time. Components fill it from WASI; tests fill it with fakes.

use crate::ApiError;
use crate::platform::kv::KeyValue;
use crate::platform::outbound::Transport;

/// Variables (`wasi:config/store`; Spin variables on Spin).
pub trait Config {
    /// The value of `name`, or `None` when it is not set.
    fn get(&self, name: &str) -> Result<Option<String>, ApiError>;
}

/// Variable names every component reads.
pub mod vars {
    pub const API_BASE_URL: &str = crate::API_BASE_URL_VARIABLE;
    pub const APP_ID: &str = "tiktok_app_id";
    pub const APP_SECRET: &str = "tiktok_app_secret";
    /// Bearer token for the admin API (creating organizations and keys).
    pub const ADMIN_TOKEN: &str = "admin_token";
    /// Where browsers reach this deployment, e.g. `https://edge.example.com`; used for
    /// the OAuth `redirect_uri`. When empty, the request's own origin is used.
    pub const PUBLIC_URL: &str = "public_url";
    /// The advertiser authorization page; default `{tiktok_api_base_url}/portal/auth`.
    pub const AUTH_URL: &str = "tiktok_auth_url";
    /// The TikTok account (creator) authorization page; default
    /// `{tiktok_api_base_url}/portal/creator/auth`.
    pub const CREATOR_AUTH_URL: &str = "tiktok_creator_auth_url";
}

/// The host services for one request.
pub struct Env<'a> {
    pub kv: &'a dyn KeyValue,
    pub config: &'a dyn Config,
    pub transport: &'a dyn Transport,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

impl Env<'_> {
    /// A variable that is set and not empty.
    pub fn var(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self
            .config
            .get(name)?
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty()))
    }

    /// A whole-number variable within `range`, `default` when unset; anything else is a
    /// deployment error (500) naming the variable and the range.
    pub fn int_var(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, ApiError> {
        match self.var(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "variable {name} must be a whole number from {} to {}, not {v:?}",
                        range.start(),
                        range.end()
                    ))
                }),
        }
    }

    /// A number variable (amounts such as minimum budgets) within `range`, `default` when
    /// unset; anything else is a deployment error (500) naming the variable.
    pub fn number_var(
        &self,
        name: &str,
        default: f64,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<f64, ApiError> {
        match self.var(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "variable {name} must be a number from {} to {}, not {v:?}",
                        range.start(),
                        range.end()
                    ))
                }),
        }
    }

    /// A variable that must be set; missing is a deployment error (500) naming it.
    pub fn require(&self, name: &str) -> Result<String, ApiError> {
        self.var(name)?
            .ok_or_else(|| ApiError::Internal(format!("variable {name} is not set")))
    }
}
