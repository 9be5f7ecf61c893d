//! The pixel collector end to end: events posted the way pixel.js and servers post them,
//! stored before the answer, forwarded by the host's scheduler to tiktok-mock's Events API.

use crate::common::world::{World, world};
use serde_json::{Value, json};
use tiktok_edge_runtime::scheduler::{self, Schedule};

const SHOP: &str = "https://shop.example";

/// An org whose demo advertiser is connected, and a pixel for the mock's demo pixel that
/// sends with that connection's token.
async fn pixel(w: &World, extra: Value) -> (String, String) {
    let key = w.org("acme").await;
    w.authorize("acme", &key, json!({}), "auto_approve").await;
    let demo = w.mock.mock.demo_pixel();
    let mut body = json!({
        "pixel_code": demo.code, "advertiser_id": demo.advertiser_id,
        "allowed_origins": [SHOP], "default_country": "US",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, v) = w
        .call("POST", "/v1/orgs/acme/pixels", &key, Some(body))
        .await;
    assert_eq!(s, 201, "{v}");
    (key, v["id"].as_str().unwrap().to_string())
}

/// What pixel.js sends: text/plain, from the shop's origin.
async fn post_events(w: &World, pixel: &str, origin: &str, body: Value) -> reqwest::Response {
    w.http
        .post(w.edge.url(&format!("/pixel/events?pixel={pixel}")))
        .header("origin", origin)
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", "Mozilla/5.0 (test)")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// One scheduled flush, as the host's scheduler makes it.
async fn flush(w: &World) -> Value {
    let schedule = Schedule {
        name: "flush".into(),
        path: "/pixel/flush".into(),
        method: "POST".into(),
        every_secs: 1,
        headers: [(
            "authorization".to_string(),
            "Bearer {{ admin_token }}".to_string(),
        )]
        .into(),
    };
    let (status, body) = scheduler::run_once(&w.edge.app, &schedule).await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn mock_events(w: &World) -> Vec<Value> {
    w.mock
        .mock
        .with_state(|s| s.events.iter().map(|e| e.body.clone()).collect())
}

#[tokio::test]
async fn browser_events_reach_tiktok_hashed_with_their_ids_and_click_id() {
    let w = world().await;
    let (key, px) = pixel(&w, json!({})).await;
    let r = post_events(
        &w,
        &px,
        SHOP,
        json!({"events": [
            {"event": "PageView", "event_id": "pv-1", "page": {"url": "https://shop.example/p?ttclid=E.C.P.click1"}},
            {"event": "AddToCart", "event_id": "atc-1", "user": {"email": " Shopper@Example.COM ", "phone": "(213) 373-4253"},
             "properties": {"value": 19.5, "currency": "USD", "contents": [{"content_id": "sku-1", "quantity": 1}]}},
            {"event": "AddToCart", "event_time": "later"}
        ]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], SHOP);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["accepted"].as_i64(), v["rejected"][0]["field"].as_str()),
        (Some(2), Some("event_time"))
    );
    assert!(mock_events(&w).is_empty(), "stored, not yet sent");

    let report = flush(&w).await;
    assert_eq!(report["delivered"], 2, "{report}");
    let sent = mock_events(&w);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["event_id"], "pv-1");
    assert_eq!(sent[0]["user"]["ttclid"], "E.C.P.click1");
    assert_eq!(sent[1]["user"]["email"], sha256("shopper@example.com"));
    assert_eq!(sent[1]["user"]["phone"], sha256("+12133734253"));
    assert_eq!(sent[1]["user"]["user_agent"], "Mozilla/5.0 (test)");
    assert_eq!(sent[1]["user"]["ip"], "127.0.0.1");
    let all = serde_json::to_string(&sent).unwrap().to_lowercase();
    assert!(
        !all.contains("shopper") && !all.contains("373-4253"),
        "no raw PII at TikTok: {all}"
    );

    // A resend of the same event ids is acknowledged as a duplicate and never forwarded.
    let r = post_events(
        &w,
        &px,
        SHOP,
        json!([{"event": "PageView", "event_id": "pv-1"}]),
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["deduplicated"], 1);
    flush(&w).await;
    assert_eq!(mock_events(&w).len(), 2);
    let (_, stats) = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/pixels/{px}/stats"),
            &key,
            None,
        )
        .await;
    assert_eq!(
        (
            stats["received"].as_i64(),
            stats["rejected"].as_i64(),
            stats["deduplicated"].as_i64(),
            stats["delivered"].as_i64()
        ),
        (Some(4), Some(1), Some(1), Some(2)),
        "{stats}"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_answers() {
    let w = world().await;
    let (key, px) = pixel(&w, json!({})).await;
    let r = post_events(
        &w,
        &px,
        "https://evil.example",
        json!({"event": "PageView"}),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = post_events(
        &w,
        "px_0000000000000000",
        SHOP,
        json!({"event": "PageView"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = w
        .http
        .post(w.edge.url(&format!("/pixel/events?pixel={px}")))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "body");
    let preflight = w
        .http
        .request(
            reqwest::Method::OPTIONS,
            w.edge.url(&format!("/pixel/events?pixel={px}")),
        )
        .header("origin", SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], SHOP);
    // The Events API token is write-only.
    let (s, v) = w
        .call(
            "PATCH",
            &format!("/v1/orgs/acme/pixels/{px}"),
            &key,
            Some(json!({"access_token": "secret-events-token"})),
        )
        .await;
    assert_eq!((s, v["has_access_token"].as_bool()), (200, Some(true)));
    assert!(!v.to_string().contains("secret-events-token"));
    let (s, v) = w
        .call(
            "PATCH",
            &format!("/v1/orgs/acme/pixels/{px}"),
            &key,
            Some(json!({"allowed_origins": ["https://shop.example/path"]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("allowed_origins[0]"))
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_then_delivered() {
    let w = world().await;
    let (key, first) = pixel(&w, json!({})).await;
    let demo = w.mock.mock.demo_pixel();
    let (_, second) = w
        .call("POST", "/v1/orgs/acme/pixels", &key, Some(json!({"pixel_code": demo.code, "advertiser_id": demo.advertiser_id, "allowed_origins": [SHOP]})))
        .await;
    let second = second["id"].as_str().unwrap().to_string();
    for (px, id) in [(&first, "a-1"), (&second, "b-1")] {
        post_events(&w, px, SHOP, json!({"event": "Lead", "event_id": id})).await;
    }
    w.inject(json!({"path": "/event/track/", "code": 40100}))
        .await;
    w.inject(json!({"path": "/event/track/", "http_status": 503}))
        .await;
    let report = flush(&w).await;
    assert_eq!(
        (
            report["requests"].as_i64(),
            report["retrying"].as_i64(),
            report["delivered"].as_i64()
        ),
        (Some(2), Some(2), Some(0)),
        "{report}"
    );
    // Backoff after a first failure is 2-3 s.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let report = flush(&w).await;
    assert_eq!(report["delivered"], 2, "{report}");
    let ids: Vec<Value> = mock_events(&w)
        .iter()
        .map(|e| e["event_id"].clone())
        .collect();
    assert_eq!(ids.len(), 2, "each delivered once: {ids:?}");
}

#[tokio::test]
async fn a_refused_event_is_dead_lettered_and_replayed() {
    let w = world().await;
    let (key, px) = pixel(&w, json!({})).await;
    post_events(
        &w,
        &px,
        SHOP,
        json!([{"event": "Lead", "event_id": "d-1"}, {"event": "Lead", "event_id": "d-2"}]),
    )
    .await;
    w.inject(json!({"path": "/event/track/", "code": 40002, "message": "Batch.1.event_id: Not a valid string"})).await;
    let report = flush(&w).await;
    assert_eq!(
        (report["dead"].as_i64(), report["delivered"].as_i64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let (_, v) = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/pixels/{px}/dead-letters"),
            &key,
            None,
        )
        .await;
    let dead = &v["dead_letters"][0];
    assert_eq!(
        (
            dead["code"].as_i64(),
            dead["event"]["data"]["event_id"].as_str()
        ),
        (Some(40002), Some("d-2")),
        "{v}"
    );
    assert!(!dead["request_id"].as_str().unwrap().is_empty());
    let (s, v) = w
        .call(
            "POST",
            &format!("/v1/orgs/acme/pixels/{px}/dead-letters/replay"),
            &key,
            Some(json!({})),
        )
        .await;
    assert_eq!((s, v["replayed"].as_i64()), (200, Some(1)));
    assert_eq!(flush(&w).await["delivered"], 1);
    let ids: Vec<String> = mock_events(&w)
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["d-1", "d-2"]);
}

#[tokio::test]
async fn pixel_js_is_served_small_cacheable_and_configured() {
    let w = world().await;
    let (_, px) = pixel(&w, json!({"consent_mode": "opt_in"})).await;
    let r = w
        .http
        .get(w.edge.url(&format!("/pixel.js?pixel={px}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript")
    );
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let script = r.text().await.unwrap();
    assert!(
        script.contains(&format!("\"id\":\"{px}\"")) && script.contains("\"consent\":\"opt_in\"")
    );
    assert!(script.contains("sendBeacon") && script.contains("keepalive"));
    let again = w
        .http
        .get(w.edge.url(&format!("/pixel.js?pixel={px}")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let plain = w
        .http
        .get(w.edge.url("/pixel.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::best());
        enc.write_all(plain.as_bytes()).unwrap();
        enc.finish().unwrap();
    }
    assert!(
        gz.len() < 3 * 1024,
        "pixel.js is {} bytes gzipped",
        gz.len()
    );
}

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}
