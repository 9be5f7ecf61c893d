//! TikTok's return codes (tiktok-api.md §1.2): what each asks of the caller, and how a
//! refusal reaches our own clients ([`ApiError::Upstream`] with its status class).

use crate::ApiError;
use crate::platform::error::{UpstreamClass, UpstreamError};

/// What a TikTok return code asks of the caller (tiktok-api.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// 0 and 20001 (partial success).
    Ok,
    /// Throttling (40016, 40100, 40132, 40133): slow down and retry.
    RateLimited,
    /// Transient trouble on TikTok's side: retry with backoff.
    Retry,
    /// The token is expired, invalid or revoked: the advertiser must authorize again.
    Reauthorize,
    /// No permission for the object or operation.
    Permission,
    /// The object or advertiser does not exist.
    NotFound,
    /// The request itself is wrong; retrying it cannot help.
    InvalidInput,
    /// Anything else TikTok refused.
    Other,
}

/// Codes for failures that never produced a TikTok envelope.
pub mod transport_codes {
    /// No response at all (connection refused, timeout, outbound host not allowed).
    pub const UNREACHABLE: i64 = -1;
    /// A response that is not a TikTok envelope (HTTP 5xx page, junk).
    pub const BAD_RESPONSE: i64 = -2;
}

/// Classifies a TikTok `code`.
pub fn classify(code: i64) -> CodeClass {
    match code {
        0 | 20001 => CodeClass::Ok,
        40016 | 40100 | 40132 | 40133 => CodeClass::RateLimited,
        40200 | 40201 | 40202 | 40700 | 40901 | 50000 | 50002 | 51305 | 60001 => CodeClass::Retry,
        transport_codes::UNREACHABLE | transport_codes::BAD_RESPONSE => CodeClass::Retry,
        40102..=40107 => CodeClass::Reauthorize,
        40001 | 40113 | 40118 | 40119 | 40125 | 41000 => CodeClass::Permission,
        40007 | 40300 | 40301 => CodeClass::NotFound,
        40000
        | 40002
        | 40006
        | 40010
        | 40011
        | 40050
        | 40051
        | 40067
        | 40101
        | 40110
        | 40502
        | 40900..=40915 => CodeClass::InvalidInput,
        _ => CodeClass::Other,
    }
}

/// A TikTok refusal, with what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TikTokError {
    pub code: i64,
    pub message: String,
    pub request_id: String,
}

impl TikTokError {
    pub fn class(&self) -> CodeClass {
        classify(self.code)
    }

    pub(crate) fn unreachable(message: String) -> Self {
        TikTokError {
            code: transport_codes::UNREACHABLE,
            message,
            request_id: String::new(),
        }
    }
}

impl From<CodeClass> for UpstreamClass {
    fn from(class: CodeClass) -> Self {
        match class {
            CodeClass::InvalidInput => UpstreamClass::InvalidInput,
            CodeClass::Permission => UpstreamClass::Permission,
            CodeClass::NotFound => UpstreamClass::NotFound,
            CodeClass::RateLimited => UpstreamClass::RateLimited,
            CodeClass::Reauthorize => UpstreamClass::Reauthorize,
            CodeClass::Ok | CodeClass::Retry | CodeClass::Other => UpstreamClass::Failed,
        }
    }
}

impl From<TikTokError> for ApiError {
    fn from(e: TikTokError) -> Self {
        ApiError::Upstream(UpstreamError {
            class: e.class().into(),
            code: e.code,
            message: e.message,
            request_id: e.request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiktok_refusals_map_to_our_status_codes() {
        let upstream = |code| {
            ApiError::from(TikTokError {
                code,
                message: "m".into(),
                request_id: "r".into(),
            })
        };
        for (code, status, name) in [
            (40002, 422, "tiktok_invalid_input"),
            (40001, 403, "tiktok_permission_denied"),
            (40100, 429, "tiktok_rate_limited"),
            (40105, 409, "reauthorization_required"),
            (50000, 502, "upstream_error"),
            (-1, 502, "upstream_error"),
        ] {
            let e = upstream(code);
            assert_eq!((e.status(), e.code()), (status, name), "code {code}");
        }
        assert_eq!(
            upstream(40100).headers(),
            vec![("retry-after", "1".to_string())]
        );
    }
}
