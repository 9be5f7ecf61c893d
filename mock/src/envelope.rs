//! TikTok's response envelope: `{code, message, request_id, data}`, HTTP 200 even for
//! API errors (tiktok-api.md §1.1). Transport faults (HTML 5xx) are the only non-200s
//! besides unknown paths.
//!
//! A leaf: reading `page`/`page_size` from a request is `request::paging`, so this
//! module needs nothing else from the crate.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

pub type Response = http::Response<Full<Bytes>>;

/// An API outcome: `code` 0 with data, or an error code with its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: i64,
    pub message: String,
    pub data: Value,
}

impl Reply {
    pub fn ok(data: Value) -> Self {
        Reply {
            code: 0,
            message: "OK".into(),
            data,
        }
    }

    pub fn error(code: i64, message: impl Into<String>) -> Self {
        Reply {
            code,
            message: message.into(),
            data: json!({}),
        }
    }

    /// 40002 with the offending parameter named, as TikTok does.
    pub fn param(message: impl Into<String>) -> Self {
        Reply::error(40002, message)
    }

    pub fn into_response(self, request_id: &str) -> Response {
        json_response(
            200,
            &json!({"code": self.code, "message": self.message, "request_id": request_id, "data": self.data}),
        )
    }
}

pub fn json_response(status: u16, body: &Value) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).expect("JSON serializes"),
        )))
        .expect("valid response")
}

pub fn text_response(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

/// `data.page_info` for a list of `total` items.
pub fn page_info(page: u64, page_size: u64, total: usize) -> Value {
    let total_page = (total as u64)
        .div_ceil(page_size.max(1))
        .max(if total == 0 { 0 } else { 1 });
    json!({"page": page, "page_size": page_size, "total_number": total, "total_page": total_page})
}

/// The slice of `items` for a page, and its page_info.
pub fn paginate<T: Clone>(items: &[T], page: u64, page_size: u64) -> (Vec<T>, Value) {
    let start = ((page - 1) * page_size) as usize;
    let slice = items
        .iter()
        .skip(start)
        .take(page_size as usize)
        .cloned()
        .collect();
    (slice, page_info(page, page_size, items.len()))
}
