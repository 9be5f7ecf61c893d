//! Pixels and the Events API 2.0 in the mock (tiktok-api.md §3 and §6).

use serde_json::{Value, json};
use tiktok_mock::{MockConfig, MockServer};

async fn setup() -> (MockServer, String, String, String) {
    let m = MockServer::start(MockConfig::default()).await.unwrap();
    let advertiser = m.mock.demo_advertiser().id;
    let pixel = m.mock.demo_pixel().code;
    let token = m.mock.token_for(std::slice::from_ref(&advertiser));
    (m, advertiser, pixel, token)
}

async fn post(m: &MockServer, token: &str, path: &str, body: &Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/open_api/v1.3{path}", m.url()))
        .header("Access-Token", token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn stored(m: &MockServer) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{}/_mock/events", m.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["events"].as_array().unwrap().clone()
}

/// TikTok's own web example from the Events API reference, pointed at our pixel.
fn doc_example(pixel: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/tiktok-doc-examples.json"
    );
    let examples: Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("testdata/ is in the repository"),
    )
    .unwrap();
    let mut body = examples["event_track"]["web_request"]["json"].clone();
    body["event_source_id"] = json!(pixel);
    body
}

fn event(name: &str, id: &str) -> Value {
    json!({"event": name, "event_time": 1_700_000_000u64, "event_id": id, "user": {"email": "a".repeat(64)}})
}

#[tokio::test]
async fn tiktoks_own_example_is_accepted_and_kept() {
    let (m, _, pixel, token) = setup().await;
    let v = post(&m, &token, "/event/track/", &doc_example(&pixel)).await;
    assert_eq!(
        (v["code"].as_i64(), &v["data"]),
        (Some(0), &json!({})),
        "{v}"
    );
    let events = stored(&m).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "Purchase");
    assert_eq!(
        events[0]["data"]["properties"]["contents"][0]["content_id"],
        "12345"
    );
}

#[tokio::test]
async fn the_same_event_id_within_48_hours_is_a_duplicate() {
    let (m, _, pixel, token) = setup().await;
    let body = json!({"event_source": "web", "event_source_id": pixel, "data": [event("AddToCart", "e1")]});
    assert_eq!(post(&m, &token, "/event/track/", &body).await["code"], 0);
    assert_eq!(
        post(&m, &token, "/event/track/", &body).await["code"],
        0,
        "a duplicate is not an error"
    );
    let other =
        json!({"event_source": "web", "event_source_id": pixel, "data": [event("Purchase", "e1")]});
    post(&m, &token, "/event/track/", &other).await;
    reqwest::Client::new()
        .post(format!("{}/_mock/clock", m.url()))
        .json(&json!({"advance_seconds": 48 * 3600 + 1}))
        .send()
        .await
        .unwrap();
    post(&m, &token, "/event/track/", &body).await;
    let flags: Vec<bool> = stored(&m)
        .await
        .iter()
        .map(|e| e["duplicate"].as_bool().unwrap())
        .collect();
    assert_eq!(
        flags,
        [false, true, false, false],
        "dedup key is (pixel, event, event_id) for 48 h"
    );
}

#[tokio::test]
async fn one_bad_event_or_too_many_fail_the_whole_request() {
    let (m, _, pixel, token) = setup().await;
    let mut bad = event("Purchase", "e2");
    bad["user"]["email"] = json!("alice@example.com");
    let v = post(&m, &token, "/event/track/", &json!({"event_source": "web", "event_source_id": pixel, "data": [event("Purchase", "e1"), bad]})).await;
    assert_eq!(v["code"], 40002);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Batch.1.user.email:"),
        "{v}"
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| event("ViewContent", &i.to_string()))
        .collect();
    let v = post(
        &m,
        &token,
        "/event/track/",
        &json!({"event_source": "web", "event_source_id": pixel, "data": many}),
    )
    .await;
    assert_eq!(v["code"], 40002);
    assert!(
        stored(&m).await.is_empty(),
        "nothing of a refused request is kept"
    );

    let cases = [
        (
            json!({"event_source": "web", "event_source_id": pixel, "data": [{"event": "X", "event_time": "yesterday"}]}),
            40002,
            "Batch.0.event_time",
        ),
        (
            json!({"event_source": "email", "event_source_id": pixel, "data": [event("X", "1")]}),
            40002,
            "event_source",
        ),
        (
            json!({"event_source": "web", "event_source_id": "NOTOURPIXEL", "data": [event("X", "1")]}),
            40001,
            "No permission to operate pixel code: NOTOURPIXEL",
        ),
        (
            json!({"event_source": "offline", "event_source_id": "123", "data": [event("MyCustom", "1")]}),
            40002,
            "Batch.0.event",
        ),
        (
            json!({"event_source": "crm", "event_source_id": "123", "data": [event("Lead", "1")]}),
            40002,
            "Batch.0.lead.lead_id",
        ),
        (
            json!({"event_source": "web", "event_source_id": pixel, "data": [{"event": "X", "event_time": 1, "properties": {"currency": "dollars"}}]}),
            40002,
            "Batch.0.properties.currency",
        ),
    ];
    for (body, code, message) in cases {
        let v = post(&m, &token, "/event/track/", &body).await;
        assert_eq!(v["code"], code, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().starts_with(message), "{v}");
    }
}

#[tokio::test]
async fn pixels_are_listed_and_created_once_per_request_id() {
    let (m, advertiser, pixel, token) = setup().await;
    let list: Value = reqwest::Client::new()
        .get(format!(
            "{}/open_api/v1.3/pixel/list/?advertiser_id={advertiser}",
            m.url()
        ))
        .header("Access-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"]["pixels"][0]["pixel_code"], pixel);
    assert_eq!(list["data"]["page_info"]["total_number"], 1);
    let body = json!({"advertiser_id": advertiser, "pixel_name": "Shop", "request_id": "r-1"});
    let created = post(&m, &token, "/pixel/create/", &body).await;
    assert_eq!(created["code"], 0);
    let code = created["data"]["pixel_code"].as_str().unwrap();
    assert!(
        code.len() == 20
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "{code}"
    );
    assert_eq!(
        post(&m, &token, "/pixel/create/", &body).await["code"],
        40050
    );
    let other = json!({"advertiser_id": "1", "pixel_name": "Shop"});
    assert_eq!(
        post(&m, &token, "/pixel/create/", &other).await["code"],
        40001
    );
    // Events to the new pixel are accepted.
    let v = post(
        &m,
        &token,
        "/event/track/",
        &json!({"event_source": "web", "event_source_id": code, "data": [event("Pageview", "p")]}),
    )
    .await;
    assert_eq!(v["code"], 0);
}
