//! Guest-side glue shared by the tiktok-edge components.
//!
//! Bindings for the imports of `tiktok:edge/platform` are generated once here; each
//! component's own `generate!` maps those interfaces onto this crate (see
//! [`component_bindings!`]) so a request, a key-value bucket or a variable is the same
//! type in every component and the helpers below work for all of them.

wit_bindgen::generate!({
    world: "tiktok:edge/platform",
    path: "../../wit",
    generate_all,
});

pub mod config;
pub mod env;
pub mod http;
pub mod info;
pub mod kv;
pub mod transport;

pub use tiktok_edge_core::ApiError;

/// Generates a component's bindings for its world in `wit/`, reusing this crate's
/// bindings for every imported interface.
#[macro_export]
macro_rules! component_bindings {
    ($world:literal) => {
        wit_bindgen::generate!({
            world: $world,
            path: "../../wit",
            with: {
                "wasi:http/types@0.2.0": tiktok_edge_guest::wasi::http::types,
                "wasi:http/outgoing-handler@0.2.0": tiktok_edge_guest::wasi::http::outgoing_handler,
                "wasi:io/error@0.2.0": tiktok_edge_guest::wasi::io::error,
                "wasi:io/poll@0.2.0": tiktok_edge_guest::wasi::io::poll,
                "wasi:io/streams@0.2.0": tiktok_edge_guest::wasi::io::streams,
                "wasi:clocks/monotonic-clock@0.2.0": tiktok_edge_guest::wasi::clocks::monotonic_clock,
                "wasi:keyvalue/store@0.2.0-draft2": tiktok_edge_guest::wasi::keyvalue::store,
                "wasi:keyvalue/atomics@0.2.0-draft2": tiktok_edge_guest::wasi::keyvalue::atomics,
                "wasi:keyvalue/batch@0.2.0-draft2": tiktok_edge_guest::wasi::keyvalue::batch,
                "wasi:config/store@0.2.0-draft-2024-09-27": tiktok_edge_guest::wasi::config::store,
                "tiktok:edge/types@0.1.0": tiktok_edge_guest::tiktok::edge::types,
            },
        });
    };
}

/// Converts the native error into the WIT `error` variant, so typed calls fail the same
/// way HTTP calls do.
impl From<ApiError> for tiktok::edge::types::Error {
    fn from(e: ApiError) -> Self {
        use tiktok::edge::types as t;
        match e {
            ApiError::InvalidInput(f) => t::Error::InvalidInput(t::FieldError {
                field: f.field,
                reason: f.reason,
            }),
            ApiError::PayloadTooLarge(limit) => t::Error::InvalidInput(t::FieldError {
                field: "body".into(),
                reason: format!("larger than {limit} bytes"),
            }),
            ApiError::Unauthorized(m) => t::Error::Unauthorized(m),
            ApiError::Forbidden(m) => t::Error::Forbidden(m),
            ApiError::NotFound(m) => t::Error::NotFound(m),
            ApiError::Conflict(m) => t::Error::Conflict(m),
            ApiError::RateLimited(s) => t::Error::RateLimited(s),
            ApiError::Upstream(u) => t::Error::Upstream(t::UpstreamError {
                code: u.code,
                message: u.message,
                request_id: u.request_id,
            }),
            ApiError::Storage(m) => t::Error::Storage(m),
            ApiError::Internal(m) => t::Error::Internal(m),
        }
    }
}
