//! The webhook receiver end to end: deliveries signed the way TikTok signs them (and sent
//! by tiktok-mock's webhook sender) through the repository's spin.toml on tiktok-edge.

use crate::common::world::{ADMIN, World, world};
use serde_json::{Value, json};
use tiktok_mock::MockConfig;
use tiktok_mock::webhooks::{delivery_body, signature_header};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn app() -> String {
    MockConfig::default().app_id
}

/// Posts `body` to the deployment app's webhook URL with the given signature header.
async fn post(w: &World, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut r = w
        .http
        .post(w.edge.url(&format!("/webhooks/tiktok/{}", app())))
        .body(body.to_vec());
    if let Some(s) = signature {
        r = r.header("TikTok-Signature", s);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

fn signed(body: &[u8], t: i64) -> Option<String> {
    Some(signature_header(&MockConfig::default().app_secret, t, body))
}

async fn process(w: &World) -> Value {
    let (s, v) = w.call("POST", "/webhooks/process", ADMIN, None).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn stats(w: &World) -> Value {
    let (s, v) = w
        .call(
            "GET",
            &format!("/webhooks/apps/{}/stats", app()),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["counters"].clone()
}

#[tokio::test]
async fn the_mocks_authorization_removed_webhook_revokes_the_creator_connection() {
    let w = world().await;
    let key = w.org("acme").await;
    let r = w
        .authorize("acme", &key, json!({"kind": "creator"}), "auto_approve")
        .await;
    assert_eq!(r.status(), 200);
    let (_, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    let connection = v["connections"][0].clone();
    let open_id = connection["open_id"].as_str().unwrap().to_string();

    let sent: Value = w
        .http
        .post(format!("{}/_mock/webhooks/send", w.mock.url()))
        .json(&json!({
            "url": w.edge.url(&format!("/webhooks/tiktok/{}", app())),
            "event": "authorization.removed", "user_openid": open_id, "content": {"reason": 1}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["delivered"], true, "{sent}");
    assert_eq!(sent["attempts"].as_array().unwrap().len(), 1, "{sent}");

    let report = process(&w).await;
    assert_eq!(report["processed"], 1, "{report}");
    let (_, c) = w
        .call(
            "GET",
            &format!(
                "/v1/orgs/acme/connections/{}",
                connection["id"].as_str().unwrap()
            ),
            &key,
            None,
        )
        .await;
    assert_eq!(c["status"], "revoked", "{c}");
    assert!(
        c["last_error"]
            .as_str()
            .unwrap()
            .contains("authorization.removed"),
        "{c}"
    );

    // The organization sees the delivery, with what it did; another org does not.
    let (_, list) = w
        .call(
            "GET",
            "/v1/orgs/acme/webhooks/deliveries?event=authorization.removed",
            &key,
            None,
        )
        .await;
    let d = &list["deliveries"][0];
    assert_eq!(d["status"], "processed", "{list}");
    assert_eq!(
        d["content"]["reason"], 1,
        "content parsed from its JSON string"
    );
    assert_eq!(
        d["outcome"]["connections"][0]["connection"],
        connection["id"]
    );
    let other = w.org("other").await;
    let (s, _) = w
        .call(
            "GET",
            &format!(
                "/v1/orgs/other/webhooks/deliveries/{}",
                d["id"].as_str().unwrap()
            ),
            &other,
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = w
        .call("GET", "/v1/orgs/acme/webhooks/deliveries", &other, None)
        .await;
    assert_eq!(s, 403, "another org's key");
}

#[tokio::test]
async fn forged_stale_and_oversized_deliveries_are_refused_and_nothing_is_stored() {
    let w = world().await;
    let body = delivery_body(&app(), "tiktok.ping", now(), "act.x", &json!({}));
    let wrong = Some(signature_header("not-the-secret", now(), &body));
    // (case, signature header, body, status, what the error names)
    type Case<'a> = (&'a str, Option<String>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no header", None, body.clone(), 401, "missing"),
        (
            "junk header",
            Some("sha256=abc".into()),
            body.clone(),
            401,
            "malformed",
        ),
        ("wrong secret", wrong, body.clone(), 401, "does not match"),
        (
            "stale",
            signed(&body, now() - 301),
            body.clone(),
            401,
            "outside",
        ),
        (
            "future",
            signed(&body, now() + 301),
            body.clone(),
            401,
            "outside",
        ),
        (
            "oversized",
            signed(&vec![b' '; 70_000], now()),
            vec![b' '; 70_000],
            413,
            "larger",
        ),
    ];
    for (name, signature, body, status, says) in cases {
        let (s, v) = post(&w, &body, signature).await;
        assert_eq!(s, status, "{name}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{name}: {v}"
        );
    }
    // A header far over the host's limit is refused before any component runs.
    let r = w
        .http
        .post(w.edge.url(&format!("/webhooks/tiktok/{}", app())))
        .header(
            "TikTok-Signature",
            "t=1,s=".to_string() + &"a".repeat(100_000),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let (s, _) = post(&w, &body, signed(&body, now())).await;
    assert_eq!(s, 200, "the genuine delivery still goes through");
    let (s, v) = w
        .http
        .post(w.edge.url("/webhooks/tiktok/unknown-app"))
        .body(body.clone())
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 404, "{:?}", v.text().await);

    let counters = stats(&w).await;
    assert_eq!(counters["received"], 1, "{counters}");
    for (name, n) in [
        ("missing_signature", 1),
        ("malformed_signature", 1),
        ("signature_mismatch", 1),
        ("timestamp_outside_tolerance", 2),
        ("too_large", 1),
    ] {
        assert_eq!(counters[name], n, "{name}: {counters}");
    }
    let (_, list) = w
        .call(
            "GET",
            &format!("/webhooks/apps/{}/deliveries", app()),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 1, "{list}");
}

async fn get(w: &World, id: &Value) -> Value {
    let path = format!(
        "/webhooks/apps/{}/deliveries/{}",
        app(),
        id.as_str().unwrap()
    );
    w.call("GET", &path, ADMIN, None).await.1
}

#[tokio::test]
async fn retries_are_duplicates_and_odd_bodies_are_kept_or_dead_lettered() {
    let w = world().await;
    let t = now();
    let body = delivery_body(
        &app(),
        "video.publish.completed",
        t,
        "act.x",
        &json!({"share_id": "v.1"}),
    );
    let (s, first) = post(&w, &body, signed(&body, t)).await;
    assert_eq!((s, &first["duplicate"]), (200, &json!(false)), "{first}");
    // TikTok's retry is signed again at a later time: still the same delivery.
    let (s, again) = post(&w, &body, signed(&body, t + 5)).await;
    assert_eq!(
        (s, &again["duplicate"], &again["id"]),
        (200, &json!(true), &first["id"])
    );

    let not_utf8: &[u8] = b"{\"event\":\"x\xff\xfe\"}";
    let (s, junk) = post(&w, not_utf8, signed(not_utf8, t)).await;
    assert_eq!(
        s, 200,
        "a verified body is stored whatever it holds: {junk}"
    );
    let odd = br#"{"event":"ads.new_thing","user_openid":"act.y","content":"{not json"}"#;
    let (s, odd_r) = post(&w, odd, signed(odd, t)).await;
    assert_eq!(s, 200);

    let report = process(&w).await;
    assert_eq!(
        (report["processed"].as_i64(), report["dead"].as_i64()),
        (Some(2), Some(1)),
        "{report}"
    );
    let d = get(&w, &first["id"]).await;
    assert_eq!(
        (d["attempts"].as_i64(), d["duplicates"].as_i64()),
        (Some(1), Some(1)),
        "{d}"
    );
    let d = get(&w, &odd_r["id"]).await;
    assert_eq!(d["outcome"]["action"], "kept", "{d}");
    assert!(
        d["parse_error"]
            .as_str()
            .unwrap()
            .contains("content is not JSON")
    );
    assert_eq!(
        d["raw_body"].as_str().unwrap().as_bytes(),
        odd,
        "kept byte for byte"
    );
    let d = get(&w, &junk["id"]).await;
    assert_eq!(d["status"], "dead", "{d}");
    assert!(d["raw_body_base64"].is_string());

    // Dead letters are listed and replayable; bad filters and replays are named.
    let (_, dead) = w
        .call(
            "GET",
            &format!("/webhooks/apps/{}/deliveries?status=dead", app()),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(dead["deliveries"].as_array().unwrap().len(), 1, "{dead}");
    let (s, v) = w
        .call(
            "POST",
            &format!("/webhooks/apps/{}/dead-letters/replay", app()),
            ADMIN,
            Some(json!({"ids": [first["id"]]})),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("ids")), "{v}");
    let (s, v) = w
        .call(
            "POST",
            &format!("/webhooks/apps/{}/dead-letters/replay", app()),
            ADMIN,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, v["replayed"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
    let (s, v) = w
        .call(
            "GET",
            &format!("/webhooks/apps/{}/deliveries?limit=0", app()),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("limit")),
        "{v}"
    );
    let (s, _) = w.call("POST", "/webhooks/process", "tte_nope", None).await;
    assert_eq!(s, 401, "processing is for the admin token only");
}
