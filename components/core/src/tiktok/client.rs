//! Calling the TikTok Business API (tiktok-api.md §1): the response envelope, what each
//! return code means for the caller (§1.2), and retries with backoff for the retryable ones.
//!
//! TikTok answers almost every error with HTTP 200 and a non-zero `code`, so the code,
//! never the HTTP status, decides. The transport is a trait: `wasi:http` in components,
//! a fake in tests.

use crate::ApiError;
use crate::platform::crypto::random_bytes;
use crate::platform::env::{Env, vars};
use crate::platform::outbound::{BodySource, OutgoingRequest, Transport};
use crate::tiktok::codes::{CodeClass, TikTokError, classify, transport_codes};
use serde_json::Value;
use std::time::Duration;

/// The API version path every call goes under.
pub const API_PREFIX: &str = "/open_api/v1.3";

/// Largest response body accepted from TikTok.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// TikTok as the deployment is configured to reach it (`tiktok_api_base_url`, the app
/// credentials), from a request's [`Env`].
impl Env<'_> {
    /// The TikTok API client for this deployment.
    pub fn tiktok(&self) -> Result<TikTok<'_>, ApiError> {
        Ok(TikTok::new(
            self.transport,
            &self.require(vars::API_BASE_URL)?,
        ))
    }

    /// The TikTok app credentials (`tiktok_app_id`, `tiktok_app_secret`).
    pub fn app_credentials(&self) -> Result<(String, String), ApiError> {
        Ok((self.require(vars::APP_ID)?, self.require(vars::APP_SECRET)?))
    }
}

/// A successful envelope: `data`, plus the code (0, or 20001 for partial success).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: i64,
    pub request_id: String,
    pub data: Value,
}

/// One API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    /// Path under `/open_api/v1.3`, with TikTok's trailing slash, e.g. `/oauth2/access_token/`.
    pub path: String,
    /// Query parameters; arrays and objects already as JSON text (§1).
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// A body that is not JSON (multipart uploads): content type and bytes.
    pub raw_body: Option<(String, Vec<u8>)>,
    pub access_token: Option<String>,
}

impl Call {
    pub fn get(path: &str) -> Self {
        Call {
            method: "GET",
            path: path.to_string(),
            query: Vec::new(),
            body: None,
            raw_body: None,
            access_token: None,
        }
    }

    pub fn post(path: &str, body: Value) -> Self {
        Call {
            method: "POST",
            path: path.to_string(),
            query: Vec::new(),
            body: Some(body),
            raw_body: None,
            access_token: None,
        }
    }

    /// A POST with a body of another type (`multipart/form-data` uploads).
    pub fn post_raw(path: &str, content_type: &str, body: Vec<u8>) -> Self {
        Call {
            raw_body: Some((content_type.to_string(), body)),
            ..Call::post(path, Value::Null)
        }
    }

    pub fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_string(), value.into()));
        self
    }

    pub fn token(mut self, access_token: &str) -> Self {
        self.access_token = Some(access_token.to_string());
        self
    }
}

/// How many times, and how patiently, retryable failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Backoff before the second attempt; doubled each time, with up to 50 % jitter added.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts within about two seconds: a request is waiting on the answer.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max_delay);
        let jitter = random_bytes::<2>()
            .map(|b| u16::from_le_bytes(b) as u32)
            .unwrap_or(0);
        exp + exp.mul_f64(jitter as f64 / u16::MAX as f64 / 2.0)
    }
}

/// The TikTok API client: one base URL, one transport.
pub struct TikTok<'a> {
    transport: &'a dyn Transport,
    base_url: String,
    pub retry: RetryPolicy,
}

impl<'a> TikTok<'a> {
    pub fn new(transport: &'a dyn Transport, base_url: &str) -> Self {
        TikTok {
            transport,
            base_url: base_url.trim_end_matches('/').to_string(),
            retry: RetryPolicy::default(),
        }
    }

    /// The base URL (for building authorization page links).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, call: &Call) -> String {
        let mut url = format!("{}{API_PREFIX}{}", self.base_url, call.path);
        if !call.query.is_empty() {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(call.query.iter())
                .finish();
            url.push('?');
            url.push_str(&query);
        }
        url
    }

    fn request(&self, call: &Call) -> OutgoingRequest {
        let mut headers = vec![("accept".to_string(), "application/json".to_string())];
        if let Some(token) = &call.access_token {
            headers.push(("access-token".to_string(), token.clone()));
        }
        let body = match (&call.raw_body, &call.body) {
            (Some((content_type, bytes)), _) => {
                headers.push(("content-type".to_string(), content_type.clone()));
                bytes.clone()
            }
            (None, Some(json)) => {
                headers.push(("content-type".to_string(), "application/json".to_string()));
                serde_json::to_vec(json).expect("JSON values serialize")
            }
            (None, None) => Vec::new(),
        };
        OutgoingRequest {
            method: call.method,
            url: self.url(call),
            headers,
            body,
        }
    }

    /// Makes the call once; no retries.
    pub fn call_once(&self, call: &Call) -> Result<Reply, TikTokError> {
        self.send(&self.request(call))
    }

    fn send(&self, request: &OutgoingRequest) -> Result<Reply, TikTokError> {
        let response = self
            .transport
            .send(request)
            .map_err(|e| TikTokError::unreachable(format!("TikTok could not be reached: {e}")))?;
        parse_envelope(response.status, &response.body)
    }

    /// Makes `call` once with its body streamed from `body` (a stream cannot be sent
    /// twice, so there is no retry); `content_type` describes the streamed body.
    pub fn call_streaming(
        &self,
        call: &Call,
        content_type: &str,
        body: &mut dyn BodySource,
    ) -> Result<Reply, TikTokError> {
        let mut request = self.request(&Call {
            body: None,
            raw_body: Some((content_type.to_string(), Vec::new())),
            ..call.clone()
        });
        request.body = Vec::new();
        let response = self
            .transport
            .send_streaming(&request, body)
            .map_err(|e| TikTokError::unreachable(format!("the upload to TikTok failed: {e}")))?;
        parse_envelope(response.status, &response.body)
    }

    /// Makes the call, retrying rate limits and transient failures with backoff.
    pub fn call(&self, call: &Call) -> Result<Reply, TikTokError> {
        // Built once: a retry sends the same bytes (an upload's body is not copied again).
        let request = self.request(call);
        let mut attempt = 1;
        loop {
            match self.send(&request) {
                Err(e)
                    if matches!(e.class(), CodeClass::Retry | CodeClass::RateLimited)
                        && attempt < self.retry.attempts =>
                {
                    self.transport.sleep(self.retry.delay(attempt));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// Reads a response: HTTP status first (4xx/5xx never reached the API logic), then the
/// envelope's `code`.
pub fn parse_envelope(status: u16, body: &[u8]) -> Result<Reply, TikTokError> {
    let bad = |why: String| TikTokError {
        code: transport_codes::BAD_RESPONSE,
        message: why,
        request_id: String::new(),
    };
    let envelope: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ if status >= 400 => return Err(bad(format!("TikTok answered HTTP {status}"))),
        _ => {
            return Err(bad(format!(
                "TikTok answered HTTP {status} with a body that is not a JSON envelope"
            )));
        }
    };
    let request_id = envelope["request_id"].as_str().unwrap_or("").to_string();
    let Some(code) = envelope["code"].as_i64() else {
        if status >= 400 {
            return Err(bad(format!("TikTok answered HTTP {status}")));
        }
        return Err(bad("TikTok's response has no numeric code".into()));
    };
    if status >= 400 && code == 0 {
        return Err(bad(format!("TikTok answered HTTP {status}")));
    }
    match classify(code) {
        CodeClass::Ok => Ok(Reply {
            code,
            request_id,
            data: envelope.get("data").cloned().unwrap_or(Value::Null),
        }),
        _ => Err(TikTokError {
            code,
            message: envelope["message"]
                .as_str()
                .unwrap_or("TikTok gave no message")
                .chars()
                .take(1000)
                .collect(),
            request_id,
        }),
    }
}

/// Reads an id TikTok may send as a string or a number (§1: v1.3 uses strings; some
/// responses still carry numbers, which must never go through f64).
pub fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted transport: answers in order, records what was sent.
    use super::*;
    use crate::platform::outbound::{IncomingResponse, TransportError};
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct FakeTransport {
        pub answers: RefCell<Vec<Result<IncomingResponse, TransportError>>>,
        pub sent: RefCell<Vec<OutgoingRequest>>,
        pub slept: RefCell<Vec<Duration>>,
        /// Answers computed from the request, used when no scripted answer is left.
        pub responder: Option<Responder>,
    }

    pub type Responder = Box<dyn Fn(&OutgoingRequest) -> Value>;

    impl FakeTransport {
        pub fn answering(answers: Vec<Value>) -> Self {
            FakeTransport {
                answers: RefCell::new(
                    answers
                        .into_iter()
                        .map(|v| {
                            Ok(IncomingResponse {
                                status: 200,
                                body: serde_json::to_vec(&v).unwrap(),
                            })
                        })
                        .collect(),
                ),
                ..Default::default()
            }
        }

        pub fn with(responder: impl Fn(&OutgoingRequest) -> Value + 'static) -> Self {
            FakeTransport {
                responder: Some(Box::new(responder)),
                ..Default::default()
            }
        }

        pub fn paths(&self) -> Vec<String> {
            self.sent
                .borrow()
                .iter()
                .map(|r| {
                    let path = r.url.split("/open_api/v1.3").nth(1).unwrap_or(&r.url);
                    path.split('?').next().unwrap().to_string()
                })
                .collect()
        }
    }

    impl Transport for FakeTransport {
        fn send(&self, request: &OutgoingRequest) -> Result<IncomingResponse, TransportError> {
            self.sent.borrow_mut().push(request.clone());
            let mut answers = self.answers.borrow_mut();
            if !answers.is_empty() {
                return answers.remove(0);
            }
            let responder = self.responder.as_ref().expect("an answer for every call");
            Ok(IncomingResponse {
                status: 200,
                body: serde_json::to_vec(&responder(request)).unwrap(),
            })
        }

        fn sleep(&self, duration: Duration) {
            self.slept.borrow_mut().push(duration);
        }
    }

    pub fn ok(data: Value) -> Value {
        serde_json::json!({"code": 0, "message": "OK", "request_id": "req-ok", "data": data})
    }

    pub fn err(code: i64, message: &str) -> Value {
        serde_json::json!({"code": code, "message": message, "request_id": "req-err", "data": {}})
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn every_code_in_the_reference_table_has_its_class() {
        let cases = [
            (0, CodeClass::Ok),
            (20001, CodeClass::Ok),
            (40000, CodeClass::InvalidInput),
            (40001, CodeClass::Permission),
            (40002, CodeClass::InvalidInput),
            (40007, CodeClass::NotFound),
            (40016, CodeClass::RateLimited),
            (40100, CodeClass::RateLimited),
            (40133, CodeClass::RateLimited),
            (40102, CodeClass::Reauthorize),
            (40105, CodeClass::Reauthorize),
            (40110, CodeClass::InvalidInput),
            (40901, CodeClass::Retry),
            (40907, CodeClass::InvalidInput),
            (50000, CodeClass::Retry),
            (50002, CodeClass::Retry),
            (60001, CodeClass::Retry),
            (41001, CodeClass::Other),
        ];
        for (code, class) in cases {
            assert_eq!(classify(code), class, "code {code}");
        }
    }

    #[test]
    fn access_token_goes_in_its_header_and_arrays_as_json_text() {
        let t = FakeTransport::answering(vec![ok(json!({"list": []}))]);
        let client = TikTok::new(&t, "http://mock/");
        client
            .call(
                &Call::get("/advertiser/info/")
                    .query("advertiser_ids", r#"["1"]"#)
                    .token("tok"),
            )
            .unwrap();
        let sent = &t.sent.borrow()[0];
        assert_eq!(
            sent.url,
            "http://mock/open_api/v1.3/advertiser/info/?advertiser_ids=%5B%221%22%5D"
        );
        assert!(
            sent.headers
                .contains(&("access-token".into(), "tok".into()))
        );
    }

    #[test]
    fn retryable_codes_are_retried_with_growing_backoff() {
        let t = FakeTransport::answering(vec![
            err(50000, "system error"),
            err(40100, "too many requests"),
            ok(json!({"x": 1})),
        ]);
        let reply = TikTok::new(&t, "http://mock")
            .call(&Call::get("/x/"))
            .unwrap();
        assert_eq!(reply.data["x"], 1);
        let slept = t.slept.borrow();
        assert_eq!(slept.len(), 2);
        assert!(slept[0] >= Duration::from_millis(250) && slept[0] <= Duration::from_millis(375));
        assert!(slept[1] >= Duration::from_millis(500) && slept[1] <= Duration::from_millis(750));
    }

    #[test]
    fn parameter_and_auth_errors_are_never_retried() {
        for code in [40002, 40001, 40105, 40110] {
            let t = FakeTransport::answering(vec![err(code, "no")]);
            let e = TikTok::new(&t, "http://mock")
                .call(&Call::get("/x/"))
                .unwrap_err();
            assert_eq!(e.code, code);
            assert_eq!(t.sent.borrow().len(), 1);
        }
    }

    #[test]
    fn retries_give_up_after_the_policy_allows() {
        let t = FakeTransport::answering(vec![err(50000, "a"), err(50000, "b"), err(50000, "c")]);
        let e = TikTok::new(&t, "http://mock")
            .call(&Call::get("/x/"))
            .unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (50000, "c"));
        assert_eq!(t.sent.borrow().len(), 3);
    }

    #[test]
    fn http_errors_and_junk_are_bad_responses() {
        let e = parse_envelope(502, b"<html>bad gateway</html>").unwrap_err();
        assert_eq!(e.code, transport_codes::BAD_RESPONSE);
        assert!(e.message.contains("502"));
        let e = parse_envelope(200, b"[1,2]").unwrap_err();
        assert_eq!(e.code, transport_codes::BAD_RESPONSE);
        let e = parse_envelope(200, br#"{"message":"no code"}"#).unwrap_err();
        assert_eq!(e.code, transport_codes::BAD_RESPONSE);
        let e = parse_envelope(404, br#"{"code":0,"data":{}}"#).unwrap_err();
        assert_eq!(e.code, transport_codes::BAD_RESPONSE);
    }

    #[test]
    fn ids_are_read_from_strings_or_integers_only() {
        assert_eq!(id_string(&json!("7123")).as_deref(), Some("7123"));
        assert_eq!(
            id_string(&json!(7300000000000000001u64)).as_deref(),
            Some("7300000000000000001")
        );
        assert_eq!(id_string(&json!(1.5)), None);
        assert_eq!(id_string(&json!("")), None);
    }
}
