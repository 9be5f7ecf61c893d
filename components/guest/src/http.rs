//! `wasi:http` 0.2 incoming requests as core's plain [`Request`]s, and core's
//! [`Response`]s written back.
//!
//! Components route on plain requests and answer with responses or an [`ApiError`],
//! which becomes the JSON error body of design.md §5 in one place (core's `Response::error`).

use crate::ApiError;
use crate::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use crate::wasi::io::streams::StreamError;
pub use tiktok_edge_core::platform::http::{Request, Response};

/// Largest request body a component reads by default; hosts usually cap lower.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// Reads method, path, headers and up to `max_body` bytes of body (413 beyond).
pub fn read_request(request: IncomingRequest, max_body: usize) -> Result<Request, ApiError> {
    let mut req = read_head(&request);
    req.body = read_body(&request, max_body)?;
    Ok(req)
}

/// Reads method, path and headers; the body is left for [`read_body`] or [`BodyReader`].
pub fn read_head(request: &IncomingRequest) -> Request {
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
    let headers: Vec<(String, String)> = request
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(n, v)| {
            String::from_utf8(v)
                .ok()
                .map(|v| (n.to_ascii_lowercase(), v))
        })
        .collect();
    let scheme = match request.scheme() {
        Some(Scheme::Https) => "https".to_string(),
        Some(Scheme::Other(s)) => s,
        Some(Scheme::Http) | None => "http".to_string(),
    };
    let origin = request
        .authority()
        .or_else(|| {
            headers
                .iter()
                .find(|(n, _)| n == "host")
                .map(|(_, v)| v.clone())
        })
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
        .map(|authority| format!("{scheme}://{authority}"));
    Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
        origin,
    }
}

/// Reads the whole body, up to `max_body` bytes (413 beyond).
pub fn read_body(request: &IncomingRequest, max_body: usize) -> Result<Vec<u8>, ApiError> {
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

/// Writes `response` to the host.
pub fn send(response: Response, out: ResponseOutparam) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        // Names and values here are ours, never the caller's, so they are valid.
        let _ = headers.append(name, value.as_bytes());
    }
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(response.status);
    let body = outgoing.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(outgoing));
    let stream = body.write().expect("a new body has a stream");
    for chunk in response.body.chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            // The client went away; nothing more can be sent.
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}

/// Reads the request, runs `handler`, and writes its response or its error as JSON.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(&Request) -> Result<Response, ApiError>,
) {
    let response = match read_request(request, DEFAULT_MAX_BODY) {
        Ok(req) => handler(&req).unwrap_or_else(|e| Response::error(&e)),
        Err(e) => Response::error(&e),
    };
    send(response, out);
}

/// The request body as a [`std::io::Read`], for bodies streamed through rather than held
/// (video uploads).
pub struct BodyReader {
    // Dropped before the body it belongs to.
    stream: Option<crate::wasi::io::streams::InputStream>,
    body: Option<IncomingBody>,
    pending: Vec<u8>,
    at: usize,
}

impl BodyReader {
    pub fn new(request: &IncomingRequest) -> Result<Self, ApiError> {
        let body = request
            .consume()
            .map_err(|()| ApiError::Internal("request body already taken".into()))?;
        let stream = body
            .stream()
            .map_err(|()| ApiError::Internal("request body stream unavailable".into()))?;
        Ok(BodyReader {
            stream: Some(stream),
            body: Some(body),
            pending: Vec::new(),
            at: 0,
        })
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // An empty read is not the end: only `Closed` is.
        while self.at == self.pending.len() {
            let Some(stream) = &self.stream else {
                return Ok(0);
            };
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    self.pending = chunk;
                    self.at = 0;
                }
                Err(StreamError::Closed) => {
                    self.stream = None;
                    if let Some(body) = self.body.take() {
                        IncomingBody::finish(body);
                    }
                    return Ok(0);
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(std::io::Error::other(e.to_debug_string()));
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        self.stream = None;
    }
}
