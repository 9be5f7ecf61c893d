//! The mock's webhook sender: signed as TikTok signs, retried until the receiver answers 200.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use tiktok_mock::{MockConfig, MockServer};

/// A receiver that fails the first `failures` deliveries, recording what it got.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<(String, Vec<u8>)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers and the Content-Length body.
            let (header_end, length) = loop {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    break (end + 4, len);
                }
            };
            while buf.len() < header_end + length {
                let n = stream.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
            let signature = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("tiktok-signature: ")
                        .map(|_| l["tiktok-signature: ".len()..].to_string())
                })
                .unwrap_or_default();
            let count = {
                let mut g = seen.lock().unwrap();
                g.push((signature, buf[header_end..header_end + length].to_vec()));
                g.len()
            };
            let status = if count <= failures {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = stream
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, got)
}

#[tokio::test]
async fn deliveries_are_signed_and_retried_until_accepted() {
    let m = MockServer::start(MockConfig::default()).await.unwrap();
    let (url, got) = receiver(2).await;
    let r: Value = reqwest::Client::new()
        .post(format!("{}/_mock/webhooks/send", m.url()))
        .json(&json!({"url": url, "event": "authorization.removed", "content": {"reason": 1}, "backoff_ms": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["delivered"], true, "{r}");
    let statuses: Vec<u64> = r["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 503, 200]);

    let deliveries = got.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 3);
    for (header, body) in &deliveries {
        let (t, s) = header.split_once(",s=").unwrap();
        let t = t.strip_prefix("t=").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"sandbox-app-secret").unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s, expected, "HMAC-SHA256(secret, t + '.' + body)");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["event"], "authorization.removed");
        let content: Value = serde_json::from_str(v["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            content,
            json!({"reason": 1}),
            "content is JSON inside a string"
        );
    }
}

#[tokio::test]
async fn an_unreachable_receiver_is_reported_not_delivered() {
    let m = MockServer::start(MockConfig::default()).await.unwrap();
    let r: Value = reqwest::Client::new()
        .post(format!("{}/_mock/webhooks/send", m.url()))
        .json(&json!({"url": "http://127.0.0.1:9/hook", "event": "x", "max_attempts": 2, "backoff_ms": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["delivered"], false);
    assert_eq!(r["attempts"].as_array().unwrap().len(), 2);
    let bad = reqwest::Client::new()
        .post(format!("{}/_mock/webhooks/send", m.url()))
        .json(&json!({"url": "https://x", "event": "e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
