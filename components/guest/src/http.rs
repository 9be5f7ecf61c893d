//! `wasi:http` 0.2 incoming requests as plain values, and responses written back.
//!
//! Components route on plain [`Request`]s and answer with [`Response`]s or an
//! [`ApiError`], which becomes the JSON error body of design.md §5 here, in one place.

use crate::ApiError;
use crate::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::wasi::io::streams::StreamError;
use serde::Serialize;

/// Largest request body a component reads by default; hosts usually cap lower.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// An incoming request with its body read.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string, without `?` (empty when absent).
    pub query: String,
    /// Header names lowercased; values that are not UTF-8 are skipped.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads method, path, headers and up to `max_body` bytes of body (413 beyond).
    pub fn read(request: IncomingRequest, max_body: usize) -> Result<Self, ApiError> {
        let method = match request.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(m) => m,
        };
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_with_query, String::new()),
        };
        let headers = request
            .headers()
            .entries()
            .into_iter()
            .filter_map(|(n, v)| {
                String::from_utf8(v)
                    .ok()
                    .map(|v| (n.to_ascii_lowercase(), v))
            })
            .collect();
        let body = read_body(&request, max_body)?;
        Ok(Request {
            method,
            path,
            query,
            headers,
            body,
        })
    }
}

fn read_body(request: &IncomingRequest, max_body: usize) -> Result<Vec<u8>, ApiError> {
    let incoming = request
        .consume()
        .map_err(|()| ApiError::Internal("request body already taken".into()))?;
    let stream = incoming
        .stream()
        .map_err(|()| ApiError::Internal("request body stream unavailable".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if body.len() + chunk.len() > max_body {
                    return Err(ApiError::PayloadTooLarge(max_body as u64));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(ApiError::invalid(
                    "body",
                    format!("could not be read: {}", e.to_debug_string()),
                ));
            }
        }
    }
    drop(stream);
    IncomingBody::finish(incoming);
    Ok(body)
}

/// A response to write back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response with `status`.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("response values always serialize");
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// The JSON error body and status for `error`.
    pub fn error(error: &ApiError) -> Self {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(error.headers().into_iter().map(|(n, v)| (n.to_string(), v)));
        Response {
            status: error.status(),
            headers,
            body: error.to_json(),
        }
    }

    /// 405 naming the allowed methods.
    pub fn method_not_allowed(allowed: &str) -> Self {
        let mut r = Response::error(&ApiError::InvalidInput(tiktok_edge_core::FieldError {
            field: "method".into(),
            reason: format!("not allowed here; use {allowed}"),
        }));
        r.status = 405;
        r.headers.push(("allow".into(), allowed.into()));
        r
    }

    /// Writes the response to the host.
    pub fn send(self, out: ResponseOutparam) {
        let headers = Fields::new();
        for (name, value) in &self.headers {
            // Names and values here are ours, never the caller's, so they are valid.
            let _ = headers.append(name, value.as_bytes());
        }
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(self.status);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a new body has a stream");
        for chunk in self.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away; nothing more can be sent.
                return;
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

/// Reads the request, runs `handler`, and writes its response or its error as JSON.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(&Request) -> Result<Response, ApiError>,
) {
    let response = match Request::read(request, DEFAULT_MAX_BODY) {
        Ok(req) => handler(&req).unwrap_or_else(|e| Response::error(&e)),
        Err(e) => Response::error(&e),
    };
    response.send(out);
}
