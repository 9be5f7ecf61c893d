//! Core's [`Transport`] over `wasi:http/outgoing-handler`: how components call TikTok.
//!
//! Every call has connect, first-byte and between-bytes timeouts (where the host honours
//! them) and a cap on the response body, so a slow or hostile upstream cannot hold a
//! request or its memory for long.

use crate::wasi::clocks::monotonic_clock;
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, Method, OutgoingBody,
    OutgoingRequest as WasiRequest, RequestOptions, Scheme,
};
use crate::wasi::io::streams::StreamError;
use std::borrow::Cow;
use std::time::Duration;
use tiktok_edge_core::platform::outbound::{
    BodySource, IncomingResponse, OutgoingRequest, Transport, TransportError,
};
use tiktok_edge_core::tiktok::client::MAX_RESPONSE_BYTES;

/// Outbound HTTP through the host.
pub struct WasiTransport {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub between_bytes_timeout: Duration,
}

impl Default for WasiTransport {
    fn default() -> Self {
        WasiTransport {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(20),
            between_bytes_timeout: Duration::from_secs(10),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn describe(e: &ErrorCode) -> String {
    match e {
        ErrorCode::HttpRequestDenied => {
            "the host does not allow this outbound host (allowed_outbound_hosts)".into()
        }
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connect timed out".into(),
        ErrorCode::ConnectionReadTimeout => "response timed out".into(),
        ErrorCode::DnsTimeout => "DNS lookup timed out".into(),
        other => format!("{other:?}"),
    }
}

impl WasiTransport {
    /// Starts `request`; its body is written to the returned stream afterwards.
    fn start(
        &self,
        request: &OutgoingRequest,
    ) -> Result<(OutgoingBody, FutureIncomingResponse), TransportError> {
        let url = url::Url::parse(&request.url)
            .map_err(|e| TransportError(format!("bad URL {}: {e}", request.url)))?;
        let headers = Fields::new();
        for (name, value) in &request.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| TransportError(format!("header {name}: {e:?}")))?;
        }
        let outgoing = WasiRequest::new(headers);
        let method = match request.method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        let _ = outgoing.set_method(&method);
        let _ = outgoing.set_scheme(Some(&match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => Scheme::Other(other.to_string()),
        }));
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let _ = outgoing.set_authority(Some(&authority));
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let _ = outgoing.set_path_with_query(Some(&path));

        let body = outgoing
            .body()
            .map_err(|()| TransportError("request body unavailable".into()))?;
        let options = RequestOptions::new();
        let _ = options.set_connect_timeout(Some(nanos(self.connect_timeout)));
        let _ = options.set_first_byte_timeout(Some(nanos(self.first_byte_timeout)));
        let _ = options.set_between_bytes_timeout(Some(nanos(self.between_bytes_timeout)));
        let pending = outgoing_handler::handle(outgoing, Some(options))
            .map_err(|e| TransportError(describe(&e)))?;
        Ok((body, pending))
    }

    /// Writes the body from `next` piece by piece; an error from `next` drops the body
    /// unfinished, which aborts the request.
    fn write_body<'a>(
        body: OutgoingBody,
        pieces: impl Iterator<Item = Result<Cow<'a, [u8]>, String>>,
    ) -> Result<(), TransportError> {
        {
            let stream = body
                .write()
                .map_err(|()| TransportError("request body stream unavailable".into()))?;
            for piece in pieces {
                let piece = piece.map_err(TransportError)?;
                for chunk in piece.chunks(4096) {
                    stream
                        .blocking_write_and_flush(chunk)
                        .map_err(|e| TransportError(format!("sending the body failed: {e:?}")))?;
                }
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| TransportError(describe(&e)))
    }

    fn response(pending: FutureIncomingResponse) -> Result<IncomingResponse, TransportError> {
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(e))) => return Err(TransportError(describe(&e))),
            Some(Err(())) | None => return Err(TransportError("no response".into())),
        };
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|()| TransportError("response body unavailable".into()))?;
        let stream = incoming
            .stream()
            .map_err(|()| TransportError("response body stream unavailable".into()))?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(TransportError(format!(
                            "response larger than {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(TransportError(format!(
                        "reading the response failed: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
        Ok(IncomingResponse {
            status,
            body: bytes,
        })
    }
}

impl Transport for WasiTransport {
    fn send(&self, request: &OutgoingRequest) -> Result<IncomingResponse, TransportError> {
        let (body, pending) = self.start(request)?;
        Self::write_body(body, std::iter::once(Ok(Cow::Borrowed(&request.body[..]))))?;
        Self::response(pending)
    }

    fn send_streaming(
        &self,
        request: &OutgoingRequest,
        source: &mut dyn BodySource,
    ) -> Result<IncomingResponse, TransportError> {
        let (body, pending) = self.start(request)?;
        let pieces = std::iter::from_fn(|| source.next_chunk().transpose());
        Self::write_body(body, pieces.map(|p| p.map(Cow::Owned)))?;
        Self::response(pending)
    }

    fn sleep(&self, duration: Duration) {
        monotonic_clock::subscribe_duration(nanos(duration)).block();
    }
}
