//! Host errors: why the host would not start, and why a request got no guest response.
//! Each request error maps to its status and JSON body here, in one place.

use crate::manifest::ManifestError;
use crate::runtime_config::RuntimeConfigError;
use crate::variables::VariableError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tiktok_edge_kv::KvError;
use wasmtime_wasi_http::WasiBody;

/// Why the host refused to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    RuntimeConfig(#[from] RuntimeConfigError),
    #[error(transparent)]
    Variable(#[from] VariableError),
    #[error("{file}: `component.{id}.allowed_outbound_hosts[{index}]`: {message}")]
    OutboundHost {
        file: String,
        id: String,
        index: usize,
        message: String,
    },
    #[error("component `{id}` ({source_path}): {error:#}")]
    Component {
        id: String,
        source_path: String,
        error: wasmtime::Error,
    },
    #[error("key-value store: {0}")]
    Storage(#[from] KvError),
    #[error("{0:#}")]
    Engine(wasmtime::Error),
    #[error("data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
}

/// Why a request was answered by the host instead of a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    NoRoute { path: String },
    BodyTooLarge { limit: usize },
    HeadersTooLarge { limit: usize },
    BadBody(String),
    BodyTimeout,
    BadRequest(String),
    Timeout,
    GuestFailed,
    Unavailable(String),
}

impl RequestError {
    pub fn status(&self) -> u16 {
        match self {
            RequestError::NoRoute { .. } => 404,
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::HeadersTooLarge { .. } => 431,
            RequestError::BadBody(_) | RequestError::BadRequest(_) => 400,
            RequestError::Timeout => 504,
            RequestError::BodyTimeout => 408,
            RequestError::GuestFailed => 500,
            RequestError::Unavailable(_) => 503,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RequestError::NoRoute { .. } => "not_found",
            RequestError::BodyTooLarge { .. } => "payload_too_large",
            RequestError::HeadersTooLarge { .. } => "headers_too_large",
            RequestError::BadBody(_) | RequestError::BadRequest(_) => "bad_request",
            RequestError::Timeout => "timeout",
            RequestError::BodyTimeout => "request_timeout",
            RequestError::GuestFailed => "internal_error",
            RequestError::Unavailable(_) => "unavailable",
        }
    }

    fn message(&self) -> String {
        match self {
            RequestError::NoRoute { path } => format!("no route matches {path}"),
            RequestError::BodyTooLarge { limit } => {
                format!("request body larger than {limit} bytes")
            }
            RequestError::HeadersTooLarge { limit } => {
                format!("request headers larger than {limit} bytes in all")
            }
            RequestError::BadBody(m) => format!("request body could not be read: {m}"),
            RequestError::BadRequest(m) => m.clone(),
            RequestError::Timeout => "the component did not answer in time".into(),
            RequestError::BodyTimeout => "the request body did not arrive in time".into(),
            RequestError::GuestFailed => "the component failed while handling the request".into(),
            RequestError::Unavailable(m) => m.clone(),
        }
    }

    /// The JSON response: `{"error": {"code", "message", "request_id"}}`.
    pub fn into_response(self, request_id: &str) -> http::Response<WasiBody> {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.message(), "request_id": request_id }
        });
        json_response(self.status(), &body)
    }
}

/// A JSON response with our body type.
pub fn json_response(status: u16, body: &serde_json::Value) -> http::Response<WasiBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON values serialize"));
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}
