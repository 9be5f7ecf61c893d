//! The mock against tiktok-api.md: conventions, OAuth, faults and limits, over HTTP.

use serde_json::{Value, json};
use tiktok_mock::{MockConfig, MockServer};

const APP_ID: &str = "7300000000000000001";
const SECRET: &str = "sandbox-app-secret";

async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn api_get(m: &MockServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client().get(format!("{}{path}", m.url()));
    if let Some(t) = token {
        req = req.header("Access-Token", t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn api_post(m: &MockServer, path: &str, body: Value) -> Value {
    let r = client()
        .post(format!("{}{path}", m.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "API errors are HTTP 200");
    r.json().await.unwrap()
}

/// Runs the advertiser authorization page with auto-approve; returns (auth_code, state).
async fn authorize(m: &MockServer) -> (String, String) {
    let r = client()
        .get(format!("{}/portal/auth", m.url()))
        .query(&[
            ("app_id", APP_ID),
            ("state", "st-1"),
            ("redirect_uri", "https://app.example/cb?x=1"),
            ("auto_approve", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.host_str(), Some("app.example"));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["x"], "1", "the redirect_uri's own query is kept");
    (q["auth_code"].clone(), q["state"].clone())
}

async fn token(m: &MockServer) -> String {
    let (code, _) = authorize(m).await;
    let v = api_post(
        m,
        "/open_api/v1.3/oauth2/access_token/",
        json!({"app_id": APP_ID, "secret": SECRET, "auth_code": code}),
    )
    .await;
    v["data"]["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn paths_need_the_version_prefix_and_a_trailing_slash() {
    let m = mock().await;
    let t = token(&m).await;
    assert_eq!(
        api_get(&m, "/open_api/v1.3/oauth2/advertiser/get", Some(&t))
            .await
            .0,
        404
    );
    assert_eq!(
        api_get(&m, "/open_api/v1.2/oauth2/advertiser/get/", Some(&t))
            .await
            .0,
        404
    );
    let (status, v) = api_get(&m, "/open_api/v1.3/no/such/endpoint/", Some(&t)).await;
    assert_eq!((status, v["code"].as_i64()), (200, Some(40008)));
}

#[tokio::test]
async fn access_token_missing_or_unknown_is_40104_or_40105_in_the_envelope() {
    let m = mock().await;
    let (status, v) = api_get(&m, "/open_api/v1.3/advertiser/info/", None).await;
    assert_eq!(status, 200);
    // The message TikTok sends, word for word (vectors/tiktok-official-doc-examples.json).
    assert_eq!(v["code"], 40104);
    assert_eq!(
        v["message"],
        "Access token is null, you should set it in http header with key Access-Token."
    );
    assert_eq!(v["data"], json!({}));
    assert!(v["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let (_, v) = api_get(&m, "/open_api/v1.3/advertiser/info/", Some("nope")).await;
    assert_eq!(v["code"], 40105);
}

#[tokio::test]
async fn oauth_codes_are_single_use_and_tokens_reach_advertiser_info() {
    let m = mock().await;
    let (code, state) = authorize(&m).await;
    assert_eq!(state, "st-1");
    let v = api_post(
        &m,
        "/open_api/v1.3/oauth2/access_token/",
        json!({"app_id": APP_ID, "secret": SECRET, "auth_code": code}),
    )
    .await;
    assert_eq!(v["code"], 0);
    let token = v["data"]["access_token"].as_str().unwrap().to_string();
    let ids = v["data"]["advertiser_ids"].as_array().unwrap();
    assert!(
        ids.iter().all(Value::is_string),
        "v1.3 ids are strings: {ids:?}"
    );
    assert_eq!(v["data"]["scope"], json!([4]));
    let advertiser = ids[0].as_str().unwrap().to_string();

    let again = api_post(
        &m,
        "/open_api/v1.3/oauth2/access_token/",
        json!({"app_id": APP_ID, "secret": SECRET, "auth_code": code}),
    )
    .await;
    assert_eq!(again["code"], 40110);

    let (_, v) = api_get(
        &m,
        &format!("/open_api/v1.3/oauth2/advertiser/get/?app_id={APP_ID}&secret={SECRET}"),
        Some(&token),
    )
    .await;
    assert_eq!(v["data"]["list"][0]["advertiser_id"], advertiser);
    assert_eq!(v["data"]["list"][0]["advertiser_name"], "Demo Advertiser");

    let q = format!("/open_api/v1.3/advertiser/info/?advertiser_ids=%5B%22{advertiser}%22%5D");
    let (_, v) = api_get(&m, &q, Some(&token)).await;
    assert_eq!(v["code"], 0, "{v}");
    let info = &v["data"]["list"][0];
    assert_eq!(
        (
            info["name"].as_str(),
            info["currency"].as_str(),
            info["timezone"].as_str()
        ),
        (
            Some("Demo Advertiser"),
            Some("USD"),
            Some("America/Los_Angeles")
        )
    );

    let (_, v) = api_get(
        &m,
        "/open_api/v1.3/advertiser/info/?advertiser_ids=%5B%22123%22%5D",
        Some(&token),
    )
    .await;
    assert_eq!(v["code"], 40001, "an advertiser the token does not cover");
    let (_, v) = api_get(
        &m,
        "/open_api/v1.3/advertiser/info/?advertiser_ids=not-json",
        Some(&token),
    )
    .await;
    assert_eq!(v["code"], 40002);
}

#[tokio::test]
async fn codes_expire_after_an_hour_and_bad_secrets_are_40101() {
    let m = mock().await;
    let (code, _) = authorize(&m).await;
    let bad = api_post(
        &m,
        "/open_api/v1.3/oauth2/access_token/",
        json!({"app_id": APP_ID, "secret": "wrong", "auth_code": code}),
    )
    .await;
    assert_eq!(bad["code"], 40101);
    client()
        .post(format!("{}/_mock/clock", m.url()))
        .json(&json!({"advance_seconds": 3601}))
        .send()
        .await
        .unwrap();
    let late = api_post(
        &m,
        "/open_api/v1.3/oauth2/access_token/",
        json!({"app_id": APP_ID, "secret": SECRET, "auth_code": code}),
    )
    .await;
    assert_eq!(late["code"], 40110);
    let missing = api_post(
        &m,
        "/open_api/v1.3/oauth2/access_token/",
        json!({"app_id": APP_ID, "secret": SECRET}),
    )
    .await;
    assert_eq!(missing["code"], 40002);
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .starts_with("auth_code")
    );
}

#[tokio::test]
async fn denied_consent_redirects_without_a_code() {
    let m = mock().await;
    let r = client()
        .get(format!("{}/portal/auth", m.url()))
        .query(&[
            ("app_id", APP_ID),
            ("state", "s"),
            ("redirect_uri", "https://app.example/cb"),
            ("auto_deny", "1"),
        ])
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains("state=s")
            && location.contains("error=access_denied")
            && !location.contains("auth_code"),
        "{location}"
    );
    // Without a decision flag, a page with approve/deny links.
    let page = client()
        .get(format!("{}/portal/auth", m.url()))
        .query(&[
            ("app_id", APP_ID),
            ("state", "s"),
            ("redirect_uri", "https://app.example/cb"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"approve\"") && page.contains("Demo Advertiser"),
        "{page}"
    );
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let m = mock().await;
    let t = token(&m).await;
    let v = api_post(
        &m,
        "/open_api/v1.3/oauth2/revoke_token/",
        json!({"app_id": APP_ID, "secret": SECRET, "access_token": t}),
    )
    .await;
    assert_eq!(v["code"], 0);
    let (_, v) = api_get(
        &m,
        &format!("/open_api/v1.3/oauth2/advertiser/get/?app_id={APP_ID}&secret={SECRET}"),
        Some(&t),
    )
    .await;
    assert_eq!(v["code"], 40105);
}

/// A creator's authorization code from the mock's consent page.
async fn creator_code(m: &MockServer) -> String {
    let r = client()
        .get(format!("{}/portal/creator/auth", m.url()))
        .query(&[
            ("app_id", APP_ID),
            ("state", "c"),
            ("redirect_uri", "https://app.example/creator"),
            ("auto_approve", "1"),
        ])
        .send()
        .await
        .unwrap();
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn creator_tokens_last_a_day_and_refresh() {
    let m = mock().await;
    let code = creator_code(&m).await;
    let body = json!({"client_id": APP_ID, "client_secret": SECRET, "grant_type": "authorization_code", "auth_code": code, "redirect_uri": "https://app.example/creator"});
    let v = api_post(&m, "/open_api/v1.3/tt_user/oauth2/token/", body).await;
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["expires_in"], 86400);
    assert!(v["data"]["open_id"].as_str().unwrap().starts_with("act."));
    let refresh = v["data"]["refresh_token"].as_str().unwrap().to_string();
    let body = json!({"client_id": APP_ID, "client_secret": SECRET, "grant_type": "refresh_token", "refresh_token": refresh});
    let v2 = api_post(
        &m,
        "/open_api/v1.3/tt_user/oauth2/refresh_token/",
        body.clone(),
    )
    .await;
    assert_eq!(v2["code"], 0);
    assert_ne!(v2["data"]["access_token"], v["data"]["access_token"]);
    assert_eq!(
        api_post(&m, "/open_api/v1.3/tt_user/oauth2/refresh_token/", body).await["code"],
        40107,
        "a refresh token is single use"
    );
    let newer = v2["data"]["refresh_token"].as_str().unwrap();
    let revoke = json!({"client_id": APP_ID, "client_secret": SECRET, "access_token": v2["data"]["access_token"]});
    assert_eq!(
        api_post(&m, "/open_api/v1.3/tt_user/oauth2/revoke/", revoke.clone()).await["code"],
        0
    );
    assert_eq!(
        api_post(&m, "/open_api/v1.3/tt_user/oauth2/revoke/", revoke).await["code"],
        40105,
        "a revoked creator token is gone"
    );
    let body = json!({"client_id": APP_ID, "client_secret": SECRET, "grant_type": "refresh_token", "refresh_token": newer});
    assert_eq!(
        api_post(&m, "/open_api/v1.3/tt_user/oauth2/refresh_token/", body).await["code"],
        40107,
        "revoking ends the refresh token too"
    );
}

#[tokio::test]
async fn creator_refresh_tokens_expire_after_a_year() {
    let m = mock().await;
    let code = creator_code(&m).await;
    let body = json!({"client_id": APP_ID, "client_secret": SECRET, "grant_type": "authorization_code", "auth_code": code});
    let v = api_post(&m, "/open_api/v1.3/tt_user/oauth2/token/", body).await;
    let newer = v["data"]["refresh_token"].as_str().unwrap();
    client()
        .post(format!("{}/_mock/clock", m.url()))
        .json(&json!({"advance_seconds": 366 * 24 * 3600}))
        .send()
        .await
        .unwrap();
    let body = json!({"client_id": APP_ID, "client_secret": SECRET, "grant_type": "refresh_token", "refresh_token": newer});
    assert_eq!(
        api_post(&m, "/open_api/v1.3/tt_user/oauth2/refresh_token/", body).await["code"],
        40103
    );
}

#[tokio::test]
async fn injected_faults_come_in_order_then_normal_service_resumes() {
    let m = mock().await;
    let t = token(&m).await;
    let admin = |body: Value| {
        client()
            .post(format!("{}/_mock/inject", m.url()))
            .json(&body)
            .send()
    };
    assert_eq!(
        admin(json!({"count": 2, "code": 50000, "message": "System error."}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        admin(json!({"http_status": 502})).await.unwrap().status(),
        200
    );
    let path = format!("/open_api/v1.3/oauth2/advertiser/get/?app_id={APP_ID}&secret={SECRET}");
    for _ in 0..2 {
        let (status, v) = api_get(&m, &path, Some(&t)).await;
        assert_eq!(
            (status, v["code"].as_i64(), v["message"].as_str()),
            (200, Some(50000), Some("System error."))
        );
    }
    let r = client()
        .get(format!("{}{path}", m.url()))
        .header("Access-Token", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("<html>"));
    assert_eq!(api_get(&m, &path, Some(&t)).await.1["code"], 0);

    let started = std::time::Instant::now();
    admin(json!({"delay_ms": 300})).await.unwrap();
    assert_eq!(api_get(&m, &path, Some(&t)).await.1["code"], 0);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        admin(json!({"code": 1, "http_status": 500}))
            .await
            .unwrap()
            .status(),
        400
    );

    let log: Value = client()
        .get(format!("{}/_mock/requests", m.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes: Vec<i64> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_i64().unwrap())
        .collect();
    assert!(codes.ends_with(&[50000, 50000, -502, 0, 0]), "{codes:?}");
}

#[tokio::test]
async fn the_rate_limit_answers_40100_beyond_the_budget() {
    let m = MockServer::start(MockConfig {
        qps_per_endpoint: Some(5.0),
        ..MockConfig::default()
    })
    .await;
    let m = m.unwrap();
    let t = token(&m).await;
    let path = format!("/open_api/v1.3/oauth2/advertiser/get/?app_id={APP_ID}&secret={SECRET}");
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(
            api_get(&m, &path, Some(&t)).await.1["code"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 5, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 40100).count(),
        3,
        "{codes:?}"
    );
}

#[tokio::test]
async fn reset_forgets_tokens_and_the_same_seed_gives_the_same_ids() {
    let a = mock().await;
    let b = mock().await;
    assert_eq!(a.mock.demo_advertiser(), b.mock.demo_advertiser());
    let t = token(&a).await;
    client()
        .post(format!("{}/_mock/reset", a.url()))
        .send()
        .await
        .unwrap();
    let (_, v) = api_get(&a, "/open_api/v1.3/advertiser/info/", Some(&t)).await;
    assert_eq!(v["code"], 40105);
}

#[tokio::test]
async fn the_per_advertiser_limit_answers_40133() {
    let m = MockServer::start(MockConfig {
        qps_per_endpoint: None,
        qps_per_advertiser: Some(3.0),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let t = token(&m).await;
    let advertiser = m.mock.demo_advertiser().id;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let (_, v) = api_get(
            &m,
            &format!("/open_api/v1.3/pixel/list/?advertiser_id={advertiser}"),
            Some(&t),
        )
        .await;
        codes.push(v["code"].as_i64().unwrap());
    }
    assert_eq!(codes, [0, 0, 0, 40133, 40133]);
}
