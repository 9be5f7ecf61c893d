//! Webhook deliveries as TikTok sends them (tiktok-api.md §8.1): a JSON body whose
//! `content` is a JSON string, signed in `TikTok-Signature: t=…,s=…` with HMAC-SHA256
//! over `t + "." + body` under the app secret, retried with backoff until a 200.

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;

/// The `TikTok-Signature` header value for `body` sent at Unix time `t`.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},s={hex}")
}

/// The delivery body: `content` is serialized into a string, as TikTok does.
pub fn delivery_body(
    client_key: &str,
    event: &str,
    create_time: i64,
    user_openid: &str,
    content: &Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "client_key": client_key, "event": event, "create_time": create_time,
        "user_openid": user_openid, "content": content.to_string(),
    }))
    .expect("JSON serializes")
}

/// One try at delivering.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    /// The receiver's HTTP status, or 0 when it could not be reached.
    pub status: u16,
    pub error: Option<String>,
}

/// POSTs `body` to `url` (http only), re-signing each try, until a 200 or `max_attempts`.
pub async fn deliver(
    url: &str,
    secret: &str,
    body: Vec<u8>,
    max_attempts: u32,
    first_backoff: Duration,
) -> Vec<Attempt> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut attempts = Vec::new();
    let mut backoff = first_backoff;
    for attempt in 0..max_attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let request = http::Request::post(url)
            .header("content-type", "application/json")
            .header("tiktok-signature", signature_header(secret, t, &body))
            .body(Full::new(bytes::Bytes::from(body.clone())));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                attempts.push(Attempt {
                    status: 0,
                    error: Some(format!("invalid url: {e}")),
                });
                break;
            }
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
        let attempt = match outcome {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let _ = response.into_body().collect().await;
                Attempt {
                    status,
                    error: None,
                }
            }
            Ok(Err(e)) => Attempt {
                status: 0,
                error: Some(e.to_string()),
            },
            Err(_) => Attempt {
                status: 0,
                error: Some("timed out".into()),
            },
        };
        let done = attempt.status == 200;
        attempts.push(attempt);
        if done {
            break;
        }
    }
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_every_valid_shared_vector() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/webhook-signatures.json"
        );
        let vectors: Value = serde_json::from_str(
            &std::fs::read_to_string(path).expect("testdata/ is in the repository"),
        )
        .unwrap();
        let secret = vectors["client_secret"].as_str().unwrap();
        let mut checked = 0;
        for case in vectors["cases"].as_array().unwrap() {
            let (Some(header), Some(body), Some(expected)) = (
                case["header"].as_str(),
                case["raw_body"].as_str(),
                case["expected_signature"].as_str(),
            ) else {
                continue;
            };
            let Some(t) = header
                .split(',')
                .find_map(|p| p.strip_prefix("t="))
                .and_then(|t| t.parse::<i64>().ok())
            else {
                continue;
            };
            let case_secret = case["secret"].as_str().unwrap_or(secret);
            assert_eq!(
                signature_header(case_secret, t, body.as_bytes()),
                format!("t={t},s={expected}"),
                "{}",
                case["name"]
            );
            checked += 1;
        }
        assert!(
            checked > 0,
            "no vector had a header, body and expected signature"
        );
    }
}
