//! Outbound HTTP as the host provides it: `wasi:http` in components, a fake in tests.
//! Core's only client is TikTok's ([`crate::tiktok::client`]).

use std::time::Duration;

/// An outgoing HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The response to an [`OutgoingRequest`].
#[derive(Debug, Clone)]
pub struct IncomingResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The request could not be completed (connection refused, timeout, host not allowed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// A request body produced piece by piece, for uploads larger than memory.
pub trait BodySource {
    /// The next piece; `Ok(None)` at the end. An error aborts the request, so the
    /// receiver never sees a complete body.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String>;
}

/// Outbound HTTP and waiting, as the host provides them.
pub trait Transport {
    fn send(&self, request: &OutgoingRequest) -> Result<IncomingResponse, TransportError>;

    /// Sends `request` with its body taken from `body` (`request.body` is ignored).
    /// Transports that cannot stream collect the body first.
    fn send_streaming(
        &self,
        request: &OutgoingRequest,
        body: &mut dyn BodySource,
    ) -> Result<IncomingResponse, TransportError> {
        let mut whole = Vec::new();
        while let Some(chunk) = body.next_chunk().map_err(TransportError)? {
            whole.extend_from_slice(&chunk);
        }
        self.send(&OutgoingRequest {
            body: whole,
            ..request.clone()
        })
    }
    /// Waits before a retry.
    fn sleep(&self, duration: Duration);
}
