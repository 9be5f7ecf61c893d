//! The one error type of the HTTP surface, mapped to status codes in one place.
//!
//! It mirrors the `error` variant of `tiktok:edge/types` so a typed WIT call and an
//! HTTP call fail the same way. Body shape (design.md §5):
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.

use serde::Serialize;

/// Which input was wrong and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// What TikTok answered when it refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub code: i64,
    pub message: String,
    pub request_id: String,
    /// What the refusal asks of our caller, from TikTok's code (`tiktok::codes`).
    pub class: UpstreamClass,
}

/// What an upstream refusal means for the client of our API; decides its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamClass {
    /// The request was wrong for TikTok (422).
    InvalidInput,
    /// No permission for the object or operation (403).
    Permission,
    /// The object does not exist at TikTok (404).
    NotFound,
    /// TikTok throttled us (429).
    RateLimited,
    /// The token was refused: authorize again (409).
    Reauthorize,
    /// TikTok failed or is unreachable (502).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {}: {}", .0.field, .0.reason)]
    InvalidInput(FieldError),
    /// The body is over the size limit (HTTP 413).
    #[error("body larger than {0} bytes")]
    PayloadTooLarge(u64),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("rate limited; retry after {0} s")]
    RateLimited(u32),
    #[error("TikTok error {}: {} (request_id {})", .0.code, .0.message, .0.request_id)]
    Upstream(UpstreamError),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Shorthand for the most common error: a named input is wrong.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::InvalidInput(FieldError {
            field: field.into(),
            reason: reason.into(),
        })
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidInput(_) => 400,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::RateLimited(_) => 429,
            ApiError::Upstream(u) => match u.class {
                UpstreamClass::InvalidInput => 422,
                UpstreamClass::Permission => 403,
                UpstreamClass::NotFound => 404,
                UpstreamClass::RateLimited => 429,
                UpstreamClass::Reauthorize => 409,
                UpstreamClass::Failed => 502,
            },
            ApiError::Storage(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// A stable, machine-readable code for the `error.code` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidInput(_) => "invalid_input",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Upstream(u) => match u.class {
                UpstreamClass::InvalidInput => "tiktok_invalid_input",
                UpstreamClass::Permission => "tiktok_permission_denied",
                UpstreamClass::NotFound => "tiktok_not_found",
                UpstreamClass::RateLimited => "tiktok_rate_limited",
                UpstreamClass::Reauthorize => "reauthorization_required",
                UpstreamClass::Failed => "upstream_error",
            },
            ApiError::Storage(_) => "storage_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// Extra response headers the status needs (`Retry-After` for 429).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            ApiError::RateLimited(secs) => vec![("retry-after", secs.to_string())],
            // TikTok sends no Retry-After; its QPS windows are one second (§1.3).
            ApiError::Upstream(u) if u.class == UpstreamClass::RateLimited => {
                vec![("retry-after", "1".to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// The JSON body, as design.md §5 specifies.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tiktok_code: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tiktok_request_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            retry_after: Option<u32>,
        }
        let (field, message) = match self {
            ApiError::InvalidInput(f) => (Some(f.field.as_str()), f.reason.clone()),
            ApiError::PayloadTooLarge(limit) => {
                (Some("body"), format!("larger than {limit} bytes"))
            }
            ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::Storage(m)
            | ApiError::Internal(m) => (None, m.clone()),
            ApiError::RateLimited(s) => (None, format!("too many requests; retry after {s} s")),
            ApiError::Upstream(u) => (None, u.message.clone()),
        };
        let upstream = match self {
            ApiError::Upstream(u) => Some(u),
            _ => None,
        };
        let body = Body {
            error: Inner {
                code: self.code(),
                message,
                field,
                tiktok_code: upstream.map(|u| u.code),
                tiktok_request_id: upstream.map(|u| u.request_id.as_str()),
                retry_after: match self {
                    ApiError::RateLimited(s) => Some(*s),
                    _ => None,
                },
            },
        };
        serde_json::to_vec(&body).expect("error bodies always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn json(e: &ApiError) -> Value {
        serde_json::from_slice(&e.to_json()).unwrap()
    }

    #[test]
    fn invalid_input_is_400_and_names_the_field() {
        let e = ApiError::invalid("event_time", "must be seconds since the epoch");
        assert_eq!(e.status(), 400);
        let v = json(&e);
        assert_eq!(v["error"]["code"], "invalid_input");
        assert_eq!(v["error"]["field"], "event_time");
        assert_eq!(v["error"]["message"], "must be seconds since the epoch");
    }

    #[test]
    fn every_variant_has_its_own_status() {
        let cases = [
            (ApiError::Unauthorized("k".into()), 401),
            (ApiError::PayloadTooLarge(10), 413),
            (ApiError::Forbidden("k".into()), 403),
            (ApiError::NotFound("k".into()), 404),
            (ApiError::Conflict("k".into()), 409),
            (ApiError::RateLimited(3), 429),
            (
                ApiError::Upstream(UpstreamError {
                    code: 50000,
                    message: "m".into(),
                    request_id: "r".into(),
                    class: UpstreamClass::Failed,
                }),
                502,
            ),
            (ApiError::Storage("k".into()), 503),
            (ApiError::Internal("k".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e}");
            assert_eq!(json(&e)["error"]["code"], e.code());
        }
    }

    #[test]
    fn rate_limited_says_when_to_retry() {
        let e = ApiError::RateLimited(7);
        assert_eq!(e.headers(), vec![("retry-after", "7".to_string())]);
        assert_eq!(json(&e)["error"]["retry_after"], 7);
    }

    #[test]
    fn every_upstream_class_has_its_own_status_and_code() {
        let upstream = |class| {
            ApiError::Upstream(UpstreamError {
                code: 1,
                message: "m".into(),
                request_id: "r".into(),
                class,
            })
        };
        for (class, status, name) in [
            (UpstreamClass::InvalidInput, 422, "tiktok_invalid_input"),
            (UpstreamClass::Permission, 403, "tiktok_permission_denied"),
            (UpstreamClass::NotFound, 404, "tiktok_not_found"),
            (UpstreamClass::RateLimited, 429, "tiktok_rate_limited"),
            (UpstreamClass::Reauthorize, 409, "reauthorization_required"),
            (UpstreamClass::Failed, 502, "upstream_error"),
        ] {
            let e = upstream(class);
            assert_eq!((e.status(), e.code()), (status, name), "{class:?}");
        }
        assert_eq!(
            upstream(UpstreamClass::RateLimited).headers(),
            vec![("retry-after", "1".to_string())]
        );
    }

    #[test]
    fn upstream_error_carries_tiktoks_code_and_request_id() {
        let e = ApiError::Upstream(UpstreamError {
            code: 40105,
            message: "Access token is invalid".into(),
            request_id: "2023".into(),
            class: UpstreamClass::Reauthorize,
        });
        let v = json(&e);
        assert_eq!(v["error"]["tiktok_code"], 40105);
        assert_eq!(v["error"]["tiktok_request_id"], "2023");
    }
}
